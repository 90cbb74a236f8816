"""A small synthetic containerd root for export tests (no daemon needed).

Blobs are written to ``io.containerd.content.v1.content/blobs/sha256`` and image records to a
meta.db built with ctrconv's own bolt writer, in the bucket layout containerd 1.6 uses.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd.codec import encode_varint
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.platform import host_platform


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _layer(text: str) -> tuple[bytes, str]:
    """A gzip layer with one file; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = text.encode() * 2000
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


@dataclass
class SyntheticRoot:
    """Builder: ``add_blob``, ``image_manifest``, ``index``, ``name``, then ``write()``."""

    path: Path
    blobs: dict[str, bytes] = field(default_factory=dict)
    #: namespace -> digests it holds content records of (default: every stored blob)
    records: dict[str, set[str]] = field(default_factory=dict)
    images: dict[str, dict[str, tuple[dict[str, Any], dict[str, str]]]] = field(default_factory=dict)

    def add_blob(self, data: bytes, media_type: str, *, store: bool = True) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if store:
            self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image_manifest(self, label: str, arch: str, *, store: bool = True) -> dict[str, Any]:
        """An OCI manifest with one gzip layer for ``linux/<arch>``; ``store=False`` leaves all out."""
        layer, diff_id = _layer(f"{label} {arch}\n")
        layer_desc = self.add_blob(layer, mt.OCI_LAYER_GZIP, store=store)
        config = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                  "config": {"Env": ["PATH=/bin"]}}
        config_desc = self.add_blob(_json(config), mt.OCI_CONFIG, store=store)
        manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc, "layers": [layer_desc]}
        return self.add_blob(_json(manifest), mt.OCI_MANIFEST, store=store)

    def index(self, children: list[tuple[dict[str, Any], dict[str, str] | None]]) -> dict[str, Any]:
        manifests = []
        for desc, platform in children:
            entry = dict(desc)
            if platform:
                entry["platform"] = platform
            manifests.append(entry)
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        return self.add_blob(_json(doc), mt.OCI_INDEX)

    def name(self, namespace: str, name: str, target: dict[str, Any], annotations: dict[str, str] | None = None) -> None:
        self.images.setdefault(namespace, {})[name] = (target, annotations or {})

    def write(self) -> Path:
        blob_dir = self.path / "io.containerd.content.v1.content" / "blobs" / "sha256"
        blob_dir.mkdir(parents=True, exist_ok=True)
        for digest, data in self.blobs.items():
            target = blob_dir / digest.split(":", 1)[1]
            target.write_bytes(data)
            target.chmod(0o444)
        root = BucketTree()
        v1 = root.bucket(b"v1", create=True)
        assert v1 is not None
        v1.put(b"version", encode_varint(3))
        for namespace, images in self.images.items():
            # containerd shows a namespace only content it holds records of
            blobs = v1.bucket(namespace.encode(), b"content", b"blob", create=True)
            assert blobs is not None
            owned = self.records.get(namespace)
            for digest, data in self.blobs.items():
                if owned is not None and digest not in owned:
                    continue
                record = blobs.bucket(digest.encode(), create=True)
                record.put(b"size", encode_varint(len(data)))  # type: ignore[union-attr]
            bucket = v1.bucket(namespace.encode(), b"images", create=True)
            assert bucket is not None
            for name, (target, annotations) in images.items():
                image = bucket.bucket(name.encode(), create=True)
                tb = image.bucket(b"target", create=True)  # type: ignore[union-attr]
                tb.put(b"digest", target["digest"].encode())  # type: ignore[union-attr]
                tb.put(b"mediatype", target["mediaType"].encode())  # type: ignore[union-attr]
                tb.put(b"size", encode_varint(target["size"]))  # type: ignore[union-attr]
                if annotations:
                    ab = image.bucket(b"annotations", create=True)  # type: ignore[union-attr]
                    for key, value in annotations.items():
                        ab.put(key.encode(), value.encode())  # type: ignore[union-attr]
        meta_dir = self.path / "io.containerd.metadata.v1.bolt"
        meta_dir.mkdir(parents=True, exist_ok=True)
        write_bolt(meta_dir / "meta.db", root, mode=0o644)
        return self.path


def host_arch() -> str:
    return host_platform().architecture


def other_arch() -> str:
    return "arm64" if host_arch() != "arm64" else "amd64"


def standard_root(path: Path) -> SyntheticRoot:
    """``default`` namespace: ``docker.io/library/app:1`` (single manifest),
    ``docker.io/library/multi:1`` (index, both platforms present) and
    ``docker.io/library/sparse:1`` (index, only the host platform present)."""
    r = SyntheticRoot(path)
    single = r.image_manifest("app", host_arch())
    r.name("default", "docker.io/library/app:1", single, {"org.example.note": "<kept & escaped>"})
    host_p = {"architecture": host_arch(), "os": "linux"}
    other_p = {"architecture": other_arch(), "os": "linux"}
    multi = r.index([(r.image_manifest("multi", host_arch()), host_p), (r.image_manifest("multi", other_arch()), other_p)])
    r.name("default", "docker.io/library/multi:1", multi)
    sparse = r.index([(r.image_manifest("sparse", host_arch()), host_p),
                      (r.image_manifest("sparse", other_arch(), store=False), other_p)])
    r.name("default", "docker.io/library/sparse:1", sparse)
    r.write()
    return r
