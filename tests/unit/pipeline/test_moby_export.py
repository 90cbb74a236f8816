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
