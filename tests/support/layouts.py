"""Test images written as OCI layouts in memory, and the bucket-tree comparison the import
tests share: ``LayoutBuilder`` makes images, ``LayoutSource`` feeds them to the writer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from ctrconv.bolt.tree import BucketTree
from ctrconv.digest import Digest
from ctrconv.image.protocols import NamedEntry

class LayoutSource:
    """Minimal ImageSource over an OCI layout directory (index.json entries, names verbatim)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[NamedEntry]:
        index = json.loads((self.path / "index.json").read_text())
        out = []
        for desc in index["manifests"]:
            ann = desc.get("annotations") or {}
            out.append(NamedEntry(desc, ann.get("io.containerd.image.name"), dict(ann)))
        return out

    def _path(self, digest: Any) -> Path:
        d = Digest.parse(digest)
        return self.path / "blobs" / d.algorithm / d.hex

    def exists(self, digest: Any) -> bool:
        return self._path(digest).is_file()

    def size(self, digest: Any) -> int | None:
        return self._path(digest).stat().st_size if self.exists(digest) else None

    def open(self, digest: Any):
        return open(self._path(digest), "rb")

    def read_small(self, digest: Any, size: int) -> bytes:
        return self._path(digest).read_bytes()

    def close(self) -> None:
        pass


def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer tar of regular files (PAX, fixed mtime)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class LayoutBuilder:
    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.index: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        hexd = hashlib.sha256(data).hexdigest()
        (self.path / "blobs" / "sha256" / hexd).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{hexd}", "size": len(data)}

    def image(self, name: str | None, layers: list[dict[str, bytes]], *, tag: str = "x") -> dict[str, Any]:
        descs, diff_ids = [], []
        for files in layers:
            raw = layer_tar(files)
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            descs.append(self.blob(gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"))
        config = {
            "architecture": "amd64", "os": "linux", "config": {"Labels": {"tag": tag}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        cdesc = self.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cdesc, "layers": descs,
        }
        mdesc = self.blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        entry = dict(mdesc)
        if name:
            entry["annotations"] = {"io.containerd.image.name": name,
                                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
        self.index.append(entry)
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.index}))
        return {"manifest": mdesc, "config": cdesc, "layers": descs, "diff_ids": diff_ids}


def assert_superset(old: BucketTree, new: BucketTree, allowed: set[tuple[bytes, ...]],
                    path: tuple[bytes, ...] = ()) -> None:
    """Every bucket and value of ``old`` is in ``new`` byte for byte; sequences are equal except
    in ``allowed`` buckets, where they may only grow."""
    if path in allowed:
        assert new.sequence >= old.sequence
    else:
        assert new.sequence == old.sequence, f"sequence of {path} changed"
    for key, value in old.entries.items():
        assert key in new.entries, f"{path + (key,)} lost"
        if isinstance(value, BucketTree):
            assert isinstance(new.entries[key], BucketTree)
            assert_superset(value, new.entries[key], allowed, path + (key,))
        else:
            assert new.entries[key] == value, f"{path + (key,)} changed"
