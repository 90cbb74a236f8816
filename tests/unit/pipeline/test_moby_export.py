"""Units of exporting from Docker's containerd store (namespace ``moby``) without a daemon:
a layer Docker never fetched is copied from a stored blob of the same tar (exact bytes, so the
config stays), found by digest or by ``containerd.io/uncompressed``."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ctrconv.errors import DigestMismatchError
from ctrconv.pipeline.regenerate import SnapshotIndex, copy_layer


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/hello")
        data = b"hello from a skipped layer\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Store:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def exists(self, digest) -> bool:
        return str(digest) in self.blobs

    def size(self, digest):
        return len(self.blobs[str(digest)]) if self.exists(digest) else None

    def open(self, digest):
        return io.BytesIO(self.blobs[str(digest)])


@dataclass
class Record:
    digest: str
    size: int
    labels: dict[str, str] = field(default_factory=dict)


class Meta:
    def __init__(self, records: list[Record]) -> None:
        self.records = records

    def blobs(self, namespace: str) -> list[Record]:
        assert namespace == "moby"
        return self.records


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_copy_layer_recompresses_the_same_tar_and_checks_its_diff_id(tmp_path: Path, compression: str) -> None:
    tar = _tar()
    blob = gzip.compress(tar, mtime=0)
    store = Store({_digest(blob): blob})
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        written = copy_layer(store, {"digest": _digest(blob), "size": len(blob)}, _digest(tar), fd, compression)
    finally:
        os.close(fd)
    assert written.diff_id == _digest(tar) and written.compression == compression
    assert _digest((tmp_path / "out").read_bytes()) == written.digest
    if compression == "none":
        assert written.digest == _digest(tar)
    fd = os.open(tmp_path / "bad", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(DigestMismatchError):
            copy_layer(store, {"digest": _digest(blob), "size": len(blob)}, "sha256:" + "0" * 64, fd, "none")
    finally:
        os.close(fd)


def test_same_diff_finds_the_tar_itself_or_a_blob_labelled_with_it() -> None:
    tar = _tar()
    blob = gzip.compress(tar, mtime=0)
    gone = "sha256:" + "e" * 64  # a record whose file is absent: never offered
    labelled = SnapshotIndex(None, Meta([Record(gone, 10, {"containerd.io/uncompressed": _digest(tar)}),  # type: ignore[arg-type]
                                          Record(_digest(blob), len(blob), {"containerd.io/uncompressed": _digest(tar)})]), "moby")
    assert labelled.same_diff(Store({_digest(blob): blob}), _digest(tar)) == {"digest": _digest(blob), "size": len(blob)}
    plain = SnapshotIndex(None, Meta([]), "moby")  # type: ignore[arg-type]
    assert plain.same_diff(Store({_digest(tar): tar}), _digest(tar)) == {"digest": _digest(tar), "size": len(tar)}
    assert plain.same_diff(Store({}), _digest(tar)) is None


def test_docker_archive_all_platforms_holds_every_present_platform(tmp_path: Path, cli) -> None:
    """``docker save`` writes every platform present; absent ones are left out (and said),
    where an OCI export with --all-platforms still refuses them."""
    import json

    from support.synthetic_root import host_arch, standard_root

    synth = standard_root(tmp_path / "root")
    sparse = synth.images["default"]["docker.io/library/sparse:1"][0]
    out = tmp_path / "d.tar"
    res = cli("export", "--root", str(synth.path), "--image", "sparse:1", "--all-platforms", "-o", str(out),
              "--format", "docker-archive", "--json")
    assert res.code == 0, res.stderr
    report, = res.json["images"]
    assert report["platforms"] == [f"linux/{host_arch()}"] and report["skipped_platforms"]
    with tarfile.open(out) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        names = tar.getnames()
    assert index["manifests"][0]["digest"] == sparse["digest"]
    assert "blobs/sha256/" + sparse["digest"][7:] in names
    res = cli("export", "--root", str(synth.path), "--image", "sparse:1", "--all-platforms", "-o",
              str(tmp_path / "o.tar"), "--format", "oci-tar")
    assert res.code == 1 and "content missing" in res.stderr


def test_a_never_fetched_layer_whose_own_file_is_on_disk_is_served_as_it_is(tmp_path: Path) -> None:
    """Another namespace's file of the layer's own digest is the exact bytes: ``same_layer``
    offers it first (with its path), the regenerator hashes and serves it unchanged (no spool
    file, same digest and media type); a file whose bytes do not match is not used and the
    layer falls back to its snapshot."""
    from ctrconv.containerd.content import ContentStore, NamespaceContent
    from ctrconv.pipeline.regenerate import ExtraBlobs, LayerJob, Regenerator, Spool

    tar = _tar()
    blob = gzip.compress(tar, mtime=0)
    store = ContentStore(tmp_path / "content")
    path = store.blob_path(_digest(blob))
    path.parent.mkdir(parents=True)
    path.write_bytes(blob)
    content = NamespaceContent(store, "moby", frozenset())  # the file is another namespace's
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(blob), "size": len(blob)}
    index = SnapshotIndex(None, Meta([]), "moby")  # type: ignore[arg-type]
    found = index.same_layer(content, layer, _digest(tar))
    assert found == {"digest": _digest(blob), "size": len(blob), "path": str(path)}

    tree = tmp_path / "fs"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hello").write_bytes(b"hello from a skipped layer\n")
    job = LayerJob("sha256:" + "a" * 64, 0, layer, _digest(tar), "overlayfs", "sha256:" + "b" * 64, tree, None, found)
    spool = Spool(tmp_path)
    try:
        extras = ExtraBlobs(content)
        made = Regenerator(extras, spool, None).run(job, "application/vnd.oci.image.manifest.v1+json")
        assert (made.digest, made.media_type, made.how, made.source_blob) == (
            layer["digest"], layer["mediaType"], "copied", layer["digest"])
        assert extras.open(layer["digest"]).read() == blob and not list(spool.path.iterdir())  # type: ignore[union-attr]

        path.chmod(0o644)
        path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # same size, other bytes
        extras = ExtraBlobs(content)
        made = Regenerator(extras, spool, None).run(job, "application/vnd.oci.image.manifest.v1+json")
        assert made.how == "regenerated" and made.digest != layer["digest"]
    finally:
        spool.close()
