"""Image sources built from programmatic inputs: layouts, OCI tars, docker archives, hostile tars."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import zstandard

from ctrconv.digest import Digest
from ctrconv.errors import (
    DigestMismatchError,
    FormatError,
    MissingContentError,
    NotFoundError,
    SizeMismatchError,
    UnsafePathError,
    UsageError,
)
from ctrconv.oci import mediatypes as mt
from ctrconv.sources import DockerArchiveSource, OciLayoutSource, open_source
from ctrconv.sources.archive import go_clean, go_join_dir
from ctrconv.sources.docker_archive import is_compressed, layer_media_type, parse_manifest_json
from ctrconv.streams import VerifyingReader

from support.archives import LAYOUT, layer_tar, make_tar, sha

TODAY = date(2024, 5, 6)


def desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data), **extra}


CONFIG = json.dumps(
    {"architecture": "arm", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar())]}}
).encode()
LAYER = gzip.compress(layer_tar(), mtime=0)
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(mt.OCI_CONFIG, CONFIG),
        "layers": [desc(mt.OCI_LAYER_GZIP, LAYER)],
    }
).encode()
BLOBS = [CONFIG, LAYER, MANIFEST]


def index_json(*annotation_sets: dict[str, str]) -> bytes:
    manifests = [desc(mt.OCI_MANIFEST, MANIFEST, annotations=a) if a else desc(mt.OCI_MANIFEST, MANIFEST)
                 for a in annotation_sets]
    return json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()


def write_layout(root: Path, index: bytes, *, layout: bytes = LAYOUT, blobs: list[bytes] = BLOBS) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_bytes(layout)
    (root / "index.json").write_bytes(index)
    for blob in blobs:
        (root / "blobs" / "sha256" / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    return root


def oci_tar_members(index: bytes, *, blobs: list[bytes] = BLOBS) -> list[Any]:
    return [("oci-layout", LAYOUT), ("index.json", index)] + [
        (f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b) for b in blobs
    ]


def read_verified(source: Any, descriptor: dict[str, Any]) -> bytes:
    d = Digest.parse(descriptor["digest"])
    with source.open(d) as stream:
        reader = VerifyingReader(stream, d, descriptor["size"])
        out = bytearray()
        reader.verify_to_end(out.extend)
    return bytes(out)


# -- OCI layout: directory and tar ----------------------------------------------------------


NAMED = {"io.containerd.image.name": "docker.io/library/app:1",
         "org.opencontainers.image.ref.name": "1"}


@pytest.fixture(params=["dir", "tar"])
def layout_input(request: pytest.FixtureRequest, tmp_path: Path):
    """A factory making the same layout as a directory or as a tar."""

    def make(index: bytes, **kw: Any) -> Path:
        if request.param == "dir":
            return write_layout(tmp_path / "layout", index, **kw)
        blobs = kw.get("blobs", BLOBS)
        members = [("oci-layout", kw.get("layout", LAYOUT)), ("index.json", index)] + [
            (f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b) for b in blobs
        ]
        return make_tar(tmp_path / "layout.tar", members)

    return make


def test_layout_entries_blobs_and_index_blob(layout_input) -> None:
    index = index_json(NAMED)
    with open_source(layout_input(index)) as src:
        assert isinstance(src, OciLayoutSource)
        [entry] = src.entries()
        assert entry.name == "docker.io/library/app:1"
        assert entry.annotations == NAMED
        assert entry.descriptor["digest"] == sha(MANIFEST)
        for blob in BLOBS:
            assert src.exists(sha(blob)) and src.size(sha(blob)) == len(blob)
            assert read_verified(src, {"digest": sha(blob), "size": len(blob)}) == blob
        assert src.read_small(sha(MANIFEST), len(MANIFEST)) == MANIFEST
        # index.json itself is a blob, typed as an OCI index like ctr forces it
        assert src.index_descriptor == {"mediaType": mt.OCI_INDEX, "digest": sha(index), "size": len(index)}
        assert src.read_small(sha(index), len(index)) == index


def test_layout_naming_like_ctr_import(layout_input) -> None:
    index = index_json(
        {"org.opencontainers.image.ref.name": "v2"},                  # bare tag
        {"org.opencontainers.image.ref.name": "example.com/x/y:v3"},  # full reference
        {},                                                            # unnamed
        {"io.containerd.image.name": "weird", "org.opencontainers.image.ref.name": "ignored"},
    )
    path = layout_input(index)
    with open_source(path, today=TODAY) as src:
        assert [e.name for e in src.entries()] == [
            "import-2024-05-06:v2", "example.com/x/y:v3", None, "weird"]
    with open_source(path, base_name="example.com/x/y") as src:
        assert [e.name for e in src.entries()] == [
            "example.com/x/y:v2", "example.com/x/y:v3", None, "weird"]
    with open_source(path, base_name="other.io/z") as src:  # full refs outside the prefix: dropped
        assert [e.name for e in src.entries()] == ["other.io/z:v2", None, None, "weird"]


def test_layout_missing_and_invalid_digest_lookups(layout_input) -> None:
    with open_source(layout_input(index_json(NAMED), blobs=[MANIFEST])) as src:
        assert not src.exists(sha(LAYER))
        assert src.size(sha(LAYER)) is None
        with pytest.raises(MissingContentError):
            src.open(sha(LAYER))
        for bad in ("sha256:../../etc/passwd", "sha256:" + "A" * 64, "md5:abc", "", "oci-layout"):
            assert not src.exists(bad)
            assert src.size(bad) is None


def test_layout_blob_names_are_not_trusted(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "l", index_json(NAMED))
    (root / "blobs" / "sha256" / hashlib.sha256(LAYER).hexdigest()).write_bytes(b"tampered")
    with open_source(root) as src:
        assert src.size(sha(LAYER)) == len(b"tampered")  # what is on disk, not what was claimed
        with pytest.raises(SizeMismatchError, match="truncated"):
            read_verified(src, {"digest": sha(LAYER), "size": len(LAYER)})
        with pytest.raises(DigestMismatchError):
            src.read_small(sha(LAYER), 8)


@pytest.mark.parametrize(
    "layout, message",
    [
        (b'{"imageLayoutVersion":"2.0.0"}', "imageLayoutVersion"),
        (b'{"imageLayoutVersion":1}', "imageLayoutVersion"),
        (b"not json", "invalid"),
        (b"{}", "imageLayoutVersion"),
    ],
)
def test_layout_version_checked(layout_input, layout: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        open_source(layout_input(index_json(NAMED), layout=layout))


@pytest.mark.parametrize(
    "index, message",
    [
        (b'{"schemaVersion":2,"manifests":[{"mediaType":"a/b","digest":"sha256:../../x","size":1}]}',
         "digest"),
        (b'{"schemaVersion":2}', "manifests"),
        (b'{"schemaVersion":2,"manifests":[]', "invalid JSON"),
        (b'{"schemaVersion":2,"manifests":[],"manifests":[]}', "duplicate"),
        (b"[" * 100000, "nested"),
    ],
)
def test_layout_index_validated(layout_input, index: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        open_source(layout_input(index))


def test_layout_dir_without_index(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "l", b"{}")
    (root / "index.json").unlink()
    with pytest.raises(FormatError, match="missing index.json"):
        open_source(root)


def test_layout_dir_confined_to_root(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(LAYER)
    root = write_layout(tmp_path / "l", index_json(NAMED), blobs=[CONFIG, MANIFEST])
    (root / "blobs" / "sha256" / hashlib.sha256(LAYER).hexdigest()).symlink_to(outside)
    fifo_blob = hashlib.sha256(b"fifo").hexdigest()
    os.mkfifo(root / "blobs" / "sha256" / fifo_blob)
    with open_source(root) as src:
        assert not src.exists(sha(LAYER))  # symlink out of the layout: absent
        assert not src.exists("sha256:" + fifo_blob)  # not a regular file: never opened


def test_layout_dir_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "l", index_json(NAMED), blobs=[CONFIG, MANIFEST])
    (root / "store").write_bytes(LAYER)
    (root / "blobs" / "sha256" / hashlib.sha256(LAYER).hexdigest()).symlink_to("../../store")
    with open_source(root) as src:
        assert read_verified(src, desc(mt.OCI_LAYER_GZIP, LAYER)) == LAYER


# -- input detection, stdin, compression ---------------------------------------------------


def test_unrecognized_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "text").write_bytes(b"hello, this is not a tar archive\n" * 40)
    make_tar(tmp_path / "other.tar", [("README", b"x")])
    make_tar(tmp_path / "empty.tar", [])
    for name in ("empty-dir", "text", "other.tar", "empty.tar"):
        with pytest.raises(UsageError, match="unrecognized image format") as info:
            open_source(tmp_path / name)
        assert info.value.exit_code == 2
    with pytest.raises(NotFoundError):
        open_source(tmp_path / "missing.tar")


def test_stdin_is_spooled_to_workdir(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "in.tar", oci_tar_members(index_json(NAMED)))
    workdir = tmp_path / "work"
    workdir.mkdir()
    with open_source("-", stdin=io.BytesIO(tar.read_bytes()), workdir=workdir) as src:
        assert [e.name for e in src.entries()] == ["docker.io/library/app:1"]
        assert read_verified(src, desc(mt.OCI_LAYER_GZIP, LAYER)) == LAYER
        assert list(workdir.iterdir()) == []  # anonymous temp file: nothing left behind


def test_fifo_input_is_spooled(tmp_path: Path) -> None:
    import threading

    data = make_tar(tmp_path / "in.tar", oci_tar_members(index_json(NAMED))).read_bytes()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    try:
        with open_source(fifo, workdir=tmp_path) as src:
            assert src.exists(sha(LAYER))
    finally:
        writer.join()


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_tar_input(tmp_path: Path, codec: str) -> None:
    raw = make_tar(tmp_path / "in.tar", oci_tar_members(index_json(NAMED))).read_bytes()
    packed = gzip.compress(raw) if codec == "gzip" else zstandard.ZstdCompressor().compress(raw)
    (tmp_path / "in.tar.x").write_bytes(packed)
    with open_source(tmp_path / "in.tar.x", workdir=tmp_path) as src:
        assert read_verified(src, desc(mt.OCI_MANIFEST, MANIFEST)) == MANIFEST
    (tmp_path / "bad").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(FormatError, match="corrupt compressed input"):
        open_source(tmp_path / "bad", workdir=tmp_path)


# -- tar namespace: hostile and odd entries ------------------------------------------------


def test_go_clean_and_join() -> None:
    assert go_clean("./a//b/../c/") == "a/c"
    assert go_clean("") == "."
    assert go_clean("a/../../b") == "../b"
    assert go_clean("//x") == "/x"
    assert go_join_dir("d/layer.tar", "../x.tar") == "x.tar"
    assert go_join_dir("layer.tar", "/abs/x") == "abs/x"  # Go path.Join keeps it inside


@pytest.mark.parametrize(
    "member",
    [
        ("../evil", b"x"),
        ("a/../../evil", b"x"),
        ("/abs/blob", b"x"),
        ("link", "symlink", "../../etc/passwd"),
        ("d/link", "symlink", "../../x"),
    ],
)
def test_hostile_entries_refused(tmp_path: Path, member: Any) -> None:
    tar = make_tar(tmp_path / "h.tar", oci_tar_members(index_json(NAMED)) + [member])
    with pytest.raises(UnsafePathError) as info:
        open_source(tar)
    assert info.value.exit_code == 1


def test_symlink_loop_refused(tmp_path: Path) -> None:
    members = oci_tar_members(index_json(NAMED)) + [("a", "symlink", "b"), ("b", "symlink", "a")]
    with pytest.raises(FormatError, match="symlink loop"):
        open_source(make_tar(tmp_path / "l.tar", members))


def test_ignored_entry_types_and_harmless_names(tmp_path: Path) -> None:
    members = oci_tar_members(index_json(NAMED)) + [
        ("blobs/", "dir", ""),
        ("../up-dir", "dir", ""),          # directories never matter
        ("dev/null", "chardev", ""),
        ("fifo", "fifo", ""),
        ("hard", "hardlink", "index.json"),  # hard links are ignored, like ctr
        ("./blobs/sha256/../sha256/extra", b"ok"),
    ]
    with open_source(make_tar(tmp_path / "t.tar", members)) as src:
        assert src.files.has("blobs/sha256/extra")
        assert not src.files.has("hard") and not src.files.has("dev/null")


def test_duplicate_entries_last_wins(tmp_path: Path) -> None:
    first = index_json({"io.containerd.image.name": "first"})
    last = index_json({"io.containerd.image.name": "last"})
    members = oci_tar_members(first) + [("./index.json", last)]
    with open_source(make_tar(tmp_path / "d.tar", members)) as src:
        assert [e.name for e in src.entries()] == ["last"]


def test_symlinked_blob_in_oci_tar(tmp_path: Path) -> None:
    members = oci_tar_members(index_json(NAMED), blobs=[CONFIG, MANIFEST]) + [
        ("data/layer", LAYER),
        (f"blobs/sha256/{hashlib.sha256(LAYER).hexdigest()}", "symlink", "../../data/layer"),
    ]
    with open_source(make_tar(tmp_path / "s.tar", members)) as src:
        assert read_verified(src, desc(mt.OCI_LAYER_GZIP, LAYER)) == LAYER


@pytest.mark.parametrize("kind, size", [(b"D", 1 << 60), (b"5", 1 << 40), (b"0", -1024), (b"3", -512)])
def test_a_member_whose_size_runs_past_the_file_or_is_negative_is_damage(tmp_path: Path, kind: bytes,
                                                                          size: int) -> None:
    """Any member's data is skipped by seeking past it: a directory, dumpdir or device entry
    claiming more bytes than the file holds, or a negative base-256 size, is a corrupt tar (one
    error), not a seek that fails with EINVAL (found by fuzzing an OCI tar)."""
    data = bytearray(make_tar(tmp_path / "t.tar", oci_tar_members(index_json(NAMED))).read_bytes())
    # the first header's type and size (base-256: a leading 0x80 (positive) or 0xff (negative))
    data[156:157] = kind
    data[124:136] = (size & ((1 << 88) - 1) | (0x80 << 88 if size >= 0 else 0xff << 88)).to_bytes(12, "big")
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="truncated or corrupt tar"):
        open_source(tmp_path / "bad.tar")


def test_truncated_tar(tmp_path: Path) -> None:
    data = make_tar(tmp_path / "t.tar", oci_tar_members(index_json(NAMED))).read_bytes()
    # cut inside the last blob's data, inside a header, and leave garbage where a header belongs
    layer_at = data.index(LAYER)
    for n, cut in enumerate([layer_at + 10, layer_at - 600, layer_at - 300]):
        (tmp_path / f"cut{n}.tar").write_bytes(data[:cut])
        with pytest.raises(FormatError, match="truncated|corrupt"):
            open_source(tmp_path / f"cut{n}.tar")
    end = layer_at + len(LAYER) + (-len(LAYER) % 512)
    garbage = data[:end] + b"\x01" * 512 + bytes(1024)
    (tmp_path / "garbage.tar").write_bytes(garbage)
    with pytest.raises(FormatError, match="corrupt"):
        open_source(tmp_path / "garbage.tar")
    # no end-of-archive blocks at all is accepted (Go's reader accepts it too)
    (tmp_path / "noend.tar").write_bytes(data[:end])
    with open_source(tmp_path / "noend.tar") as src:
        assert src.exists(sha(LAYER))


def test_streams_are_independent_and_outlive_close(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", oci_tar_members(index_json(NAMED)))
    src = open_source(tar)
    a, b = src.open(sha(LAYER)), src.open(sha(CONFIG))
    first = a.read(5)
    assert b.read() == CONFIG
    src.close()
    assert first + a.read() == LAYER
    a.close()
    b.close()


# -- docker-archive ------------------------------------------------------------------------


DOCKER_CONFIG = json.dumps({"architecture": "arm", "os": "linux", "variant": "v6",
                            "rootfs": {"type": "layers", "diff_ids": []}}).encode()
RAW_LAYER = layer_tar(b"raw\n")
GZ_LAYER = gzip.compress(layer_tar(b"gz\n"), mtime=0)
ZSTD_LAYER = zstandard.ZstdCompressor().compress(layer_tar(b"zstd\n"))


def docker_tar(tmp_path: Path, manifest: Any, extra: list[Any] | None = None) -> Path:
    members = [
        ("cfg.json", DOCKER_CONFIG),
        ("l1/layer.tar", RAW_LAYER),
        ("l2/layer.tar", GZ_LAYER),
        ("l3/layer.tar", ZSTD_LAYER),
        ("l4/layer.tar", "symlink", "../l1/layer.tar"),
        ("manifest.json", json.dumps(manifest).encode()),
    ]
    return make_tar(tmp_path / "docker.tar", members + (extra or []))


def expected_manifest_bytes() -> bytes:
    def d(mtype: str, data: bytes) -> str:
        return f'{{"mediaType":"{mtype}","digest":"{sha(data)}","size":{len(data)}}}'

    layers = ",".join([d(mt.DOCKER_LAYER, RAW_LAYER), d(mt.DOCKER_LAYER_GZIP, GZ_LAYER),
                       d(mt.DOCKER_LAYER_GZIP, ZSTD_LAYER), d(mt.DOCKER_LAYER, RAW_LAYER)])
    return (f'{{"schemaVersion":2,"mediaType":"{mt.DOCKER_MANIFEST}",'
            f'"config":{d(mt.DOCKER_CONFIG, DOCKER_CONFIG)},"layers":[{layers}]}}').encode()


def test_docker_archive_synthesis(tmp_path: Path) -> None:
    manifest = [{"Config": "cfg.json", "RepoTags": ["app:1", "example.com/team/app:2"],
                 "Layers": ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar", "l4/layer.tar"]}]
    with open_source(docker_tar(tmp_path, manifest)) as src:
        assert isinstance(src, DockerArchiveSource)
        raw = expected_manifest_bytes()
        platform = {"architecture": "arm", "os": "linux", "variant": "v7"}  # Normalize(os, arch)
        assert src.manifests == [desc(mt.DOCKER_MANIFEST, raw, platform=platform)]
        assert src.read_small(sha(raw), len(raw)) == raw
        entries = src.entries()
        assert [e.name for e in entries] == ["docker.io/library/app:1", "example.com/team/app:2"]
        assert entries[0].annotations == {"io.containerd.image.name": "docker.io/library/app:1",
                                          "org.opencontainers.image.ref.name": "1"}
        assert list(entries[0].descriptor) == ["mediaType", "digest", "size", "annotations", "platform"]
        for blob in (DOCKER_CONFIG, RAW_LAYER, GZ_LAYER, ZSTD_LAYER):
            assert read_verified(src, {"digest": sha(blob), "size": len(blob)}) == blob
        index = src.read_small(src.index_descriptor["digest"], src.index_descriptor["size"])
        assert json.loads(index)["manifests"] == [e.descriptor for e in entries]
        assert index.startswith(b'{"schemaVersion":2,"manifests":[{"mediaType"')


def test_docker_archive_reuse_compressed_hook(tmp_path: Path) -> None:
    """A layer the destination holds compressed is that blob, served from its file and typed
    by its first bytes; of a layer listed twice only the last entry is replaced (containerd's
    ``resolveLayers`` keeps one pointer per digest)."""
    manifest = [{"Config": "cfg.json", "RepoTags": ["app:1"], "Layers": ["l1/layer.tar", "l2/layer.tar", "l4/layer.tar"]}]
    stored = tmp_path / "stored-gz"
    stored.write_bytes(gzip.compress(RAW_LAYER, mtime=0))
    gz_form = Digest.parse(sha(stored.read_bytes()))
    seen: list[Digest] = []

    def lookup(uncompressed: Digest) -> tuple[Digest, int, str] | None:
        seen.append(uncompressed)
        return (gz_form, stored.stat().st_size, str(stored)) if str(uncompressed) == sha(RAW_LAYER) else None

    with open_source(docker_tar(tmp_path, manifest), reuse_compressed=lookup) as src:
        raw = src.read_small(src.manifests[0]["digest"], src.manifests[0]["size"])
        layers = json.loads(raw)["layers"]
        assert layers == [desc(mt.DOCKER_LAYER, RAW_LAYER), desc(mt.DOCKER_LAYER_GZIP, GZ_LAYER),
                          {"mediaType": mt.DOCKER_LAYER_GZIP, "digest": str(gz_form), "size": stored.stat().st_size}]
        assert sorted(str(d) for d in seen) == sorted([sha(RAW_LAYER), sha(GZ_LAYER)])
        assert src.exists(str(gz_form))  # served from the destination's own file
        with src.open(str(gz_form)) as blob:
            assert blob.read() == stored.read_bytes()
        assert src.exists(sha(GZ_LAYER))


def test_a_reused_blob_that_is_not_compressed_keeps_the_plain_type(tmp_path: Path) -> None:
    manifest = [{"Config": "cfg.json", "RepoTags": ["app:1"], "Layers": ["l1/layer.tar"]}]
    stored = tmp_path / "short"
    stored.write_bytes(b"\x1f\x8b\x08")  # fewer than 10 bytes: containerd reads EOF, calls it plain
    lookup = lambda d: (Digest.parse(sha(b"\x1f\x8b\x08")), 3, str(stored))  # noqa: E731
    with open_source(docker_tar(tmp_path, manifest), reuse_compressed=lookup) as src:
        raw = src.read_small(src.manifests[0]["digest"], src.manifests[0]["size"])
        assert json.loads(raw)["layers"][0]["mediaType"] == mt.DOCKER_LAYER


def test_docker_archive_untagged_and_case_insensitive_keys(tmp_path: Path) -> None:
    manifest = [{"config": "cfg.json", "layers": ["l2/layer.tar"], "Extra": 1},
                {"CONFIG": "./cfg.json", "RepoTags": None, "Layers": []}]
    with open_source(docker_tar(tmp_path, manifest)) as src:
        entries = src.entries()
        assert [e.name for e in entries] == [None, None]
        assert [e.annotations for e in entries] == [{}, {}]
        empty = src.manifests[1]
        raw = src.read_small(empty["digest"], empty["size"])
        assert raw.endswith(b'"layers":[]}')


def test_oci_wins_over_manifest_json(tmp_path: Path) -> None:
    members = oci_tar_members(index_json(NAMED)) + [("manifest.json", b"[]")]
    with open_source(make_tar(tmp_path / "combined.tar", members)) as src:
        assert isinstance(src, OciLayoutSource)


@pytest.mark.parametrize(
    "manifest, error, message",
    [
        ([{"Config": "nope.json", "RepoTags": ["a:1"], "Layers": []}], FormatError, "image config 'nope.json' not found"),
        ([{"Config": "cfg.json", "RepoTags": ["a:1"], "Layers": ["gone.tar"]}], FormatError, "layer 'gone.tar' not found"),
        ([{"Config": "cfg.json", "RepoTags": ["a:1"], "Layers": ["dangling"]}], FormatError, "not found"),
        ([{"Config": "cfg.json", "RepoTags": ["UPPER:1"], "Layers": []}], FormatError, "invalid RepoTag"),
        ([{"Config": "cfg.json", "RepoTags": "a:1", "Layers": []}], FormatError, "RepoTags"),
        ([{"Config": 5, "Layers": []}], FormatError, "Config"),
        ({"Config": "cfg.json"}, FormatError, "not a JSON array"),
        ([], FormatError, "no images"),
        (None, UsageError, "unrecognized image format"),
    ],
)
def test_docker_archive_errors(tmp_path: Path, manifest: Any, error: type, message: str) -> None:
    extra = [("dangling", "symlink", "missing/layer.tar")]
    with pytest.raises(error, match=message):
        open_source(docker_tar(tmp_path, manifest, extra))


def test_docker_archive_bad_config(tmp_path: Path) -> None:
    members = [("cfg.json", b'{"os": 5}'), ("manifest.json", b'[{"Config":"cfg.json","Layers":[]}]')]
    with pytest.raises(FormatError, match="os is not a string"):
        open_source(make_tar(tmp_path / "b.tar", members))


def test_parse_manifest_json_last_key_wins() -> None:
    [image] = parse_manifest_json(b'[{"Config":"a","config":"b","Layers":["x"]}]')
    assert image.config == "b" and image.layers == ("x",)


@pytest.mark.parametrize(
    "head, compressed",
    [
        (b"\x1f\x8b\x08\x00", True),
        (b"\x28\xb5\x2f\xfd\x00", True),
        (b"\x50\x2a\x4d\x18\x04\x00\x00\x00", True),   # zstd skippable frame
        (b"\x5f\x2a\x4d\x18\x04\x00\x00\x00", True),
        (b"\x60\x2a\x4d\x18\x04\x00\x00\x00", False),
        (b"\x1f\x8b\x07", False),
        (b"etc/hello\x00", False),
        (b"", False),
    ],
)
def test_layer_sniffing(head: bytes, compressed: bool) -> None:
    assert is_compressed(head) is compressed
    assert layer_media_type(head) == (mt.DOCKER_LAYER_GZIP if compressed else mt.DOCKER_LAYER)
