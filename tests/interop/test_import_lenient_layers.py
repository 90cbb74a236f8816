"""Layers containerd unpacks although they are not what their descriptor or tar format says.

Found by comparing with ``ctr images import`` (1.6 and 2.x): containerd applies a layer of a
compressed media type through ``DecompressStream``, which follows the magic bytes (a plain tar
named ``+gzip``, a gzip blob named ``+zstd``), and Go's tar reader takes a stream that ends
inside the padding after the last file's data for the end of the archive. ctrconv refused
both; now it imports and unpacks them as containerd does, and a real containerd lists, checks
and runs the result. Compressed bytes under an uncompressed media type stay refused (containerd
fails them too). Marked interop (``fixture_set``, ``private_containerd``).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from support.registry_images import BaseImage, canonical, sha256

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REPO = "example.com/lenient"


def _tar(name: str, data: bytes, *, unpadded: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("t")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tf.addfile(info)
        info = tarfile.TarInfo(f"t/{name}")
        info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
        tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if unpadded:  # the stream ends right after the last file's data: no padding, no end blocks
        raw = raw[:raw.rindex(data) + len(data)]
    return raw


def _cases() -> dict[str, tuple[str, bytes, bytes, str]]:
    """Image tag -> (the file its layer adds, the layer's tar, its blob, its media type)."""
    plain = _tar("plain", b"plain tar named gzip\n")
    gz = _tar("gz", b"gzip named zstd\n")
    unpadded = _tar("unpadded", b"abc", unpadded=True)
    return {
        "plain-named-gzip": ("plain", plain, plain, OCI_LAYER + "+gzip"),
        "gzip-named-zstd": ("gz", gz, gzip.compress(gz, mtime=0), OCI_LAYER + "+zstd"),
        "zstd-named-gzip": ("gz", gz, zstandard.ZstdCompressor().compress(gz), OCI_LAYER + "+gzip"),
        "unpadded-last-file": ("unpadded", unpadded, gzip.compress(unpadded, mtime=0), OCI_LAYER + "+gzip"),
    }


def _layout(base: BaseImage, path: Path,
            cases: dict[str, tuple[str, bytes, bytes, str]]) -> dict[str, tuple[str, bytes]]:
    """An OCI layout of the base image plus one layer per case, each its own tag; returns image
    name -> the case's file name and its expected content."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = sha256(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    for _, data in base.layers:
        put(data)
    entries, expected = [], {}
    for tag, (name, tar, blob, media_type) in cases.items():
        config = json.loads(json.dumps(base.config))
        config["rootfs"]["diff_ids"] = [*config["rootfs"]["diff_ids"], sha256(tar)]
        config.pop("history", None)
        config_bytes = canonical(config)
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config_bytes),
                       "size": len(config_bytes)},
            "layers": [*(d for d, _ in base.layers), {"mediaType": media_type, "digest": put(blob), "size": len(blob)}],
        }
        manifest_bytes = canonical(manifest)
        entries.append({"mediaType": manifest["mediaType"], "digest": put(manifest_bytes), "size": len(manifest_bytes),
                        "annotations": {"io.containerd.image.name": f"{REPO}:{tag}",
                                        "org.opencontainers.image.ref.name": tag}})
        expected[f"{REPO}:{tag}"] = (name, _content(tar, name))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_bytes(canonical({"schemaVersion": 2, "manifests": entries}))
    return expected


def _content(tar: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar + bytes(1024))) as tf:
        member = tf.extractfile(f"t/{name}")
        assert member is not None
        return member.read()


def _archive(layout: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tf:
        for item in sorted(layout.rglob("*")):
            tf.add(item, arcname=str(item.relative_to(layout)), recursive=False)
    return out


def test_layers_containerd_unpacks_are_imported_and_run(fixture_set: Any, private_containerd: Any,
                                                        tmp_path: Path, cli: Any) -> None:
    base = BaseImage.from_oci_archive(fixture_set.inputs / "bbx-oci.tar", "oci")
    expected = _layout(base, tmp_path / "layout", _cases())
    archive = _archive(tmp_path / "layout", tmp_path / "lenient.tar")

    # the oracle: containerd's own import unpacks every one of them
    daemon = private_containerd()
    daemon.ctr("images", "import", str(archive))
    theirs = {row.ref: (row.status, row.unpacked) for row in daemon.images_check()}
    daemon.stop()
    assert set(theirs) == set(expected)
    assert all(status.startswith("complete") and unpacked for status, unpacked in theirs.values()), theirs

    root = tmp_path / "root"
    res = cli("import", "--root", str(root), "-i", str(archive), "--json", "-q")
    assert res.code == 0, res.stderr
    assert sorted(i["name"] for i in res.json["images"]) == sorted(expected)
    assert all(i["unpacked"] for i in res.json["images"])
    deep = cli("verify", "--root", str(root), "--deep", "-q")
    assert deep.code == 0, deep.stdout + deep.stderr

    daemon = private_containerd(root=root)
    rows = {row.ref: (row.status, row.unpacked) for row in daemon.images_check()}
    assert set(rows) == set(expected)
    assert all(status.startswith("complete") and unpacked for status, unpacked in rows.values()), rows
    for i, (ref, (name, content)) in enumerate(sorted(expected.items())):
        out = daemon.ctr("run", "--rm", ref, f"lenient-{i}", "/bin/busybox", "cat", f"/t/{name}")
        assert out.stdout.encode() == content, (ref, out.stdout)
    daemon.stop()


def test_compressed_bytes_under_an_uncompressed_media_type_stay_refused(fixture_set: Any, tmp_path: Path,
                                                                       cli: Any) -> None:
    """containerd feeds an uncompressed type's bytes to its tar reader, which fails on gzip;
    ctrconv refuses it with both named, and writes nothing."""
    base = BaseImage.from_oci_archive(fixture_set.inputs / "bbx-oci.tar", "oci")
    tar = _tar("x", b"x\n")
    _layout(base, tmp_path / "layout", {"gzip-named-plain": ("x", tar, gzip.compress(tar, mtime=0), OCI_LAYER)})
    root = tmp_path / "root"
    res = cli("import", "--root", str(root), "-i", str(tmp_path / "layout"))
    assert res.code != 0
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("ctrconv: error: layer sha256:"), line  # the layer is named
    assert line.endswith(f": layer media type {OCI_LAYER} means none but the content is gzip"), line
    assert not (root / "io.containerd.metadata.v1.bolt" / "meta.db").exists()
