"""A large containerd root written straight from ctrconv's record writers: for scale benchmarks
(``benchmarks/bench_scale.py``) and the linearity tests (``tests/unit/test_scale.py``).

Per ``count`` images: every image has its own manifest, config and top layer (three blobs per
image) over two of ``base_layers`` (50) shared base layers; every 20th image is a two-platform
index (host + another architecture) instead; the first ``count // 2`` plain images are
"unpacked": a committed overlayfs snapshot per chain ID (the base chains, their two-layer chains
and one top chain per image), with the meta.db records, the snapshotter metadata.db records and
``snapshots/<id>/{fs,work}`` directories, and the config's ``gc.ref.snapshot.overlayfs`` label,
as ``ctr images import`` leaves them. Deterministic: the same arguments give the same bytes.

:func:`build_deep_root` makes deeper images of another shape (a red-team's: 5 of 200 shared base
layers and ``own_layers`` of each image's own; every 4th image a three-platform index; 3/8 of the
images unpacked): at 8-14 layers per image a 10,000-image root holds 78,000-168,000 blobs and
12,000-34,500 snapshots, where the per-blob and per-snapshot costs show.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import tarfile
from pathlib import Path

from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import encode_varint
from ctrconv.containerd.records import backend_name
from ctrconv.layers.chain import chain_ids
from ctrconv.oci import mediatypes as mt
from ctrconv.sinks.containerd_root import records as R

NAMESPACE = "default"
BASE_LAYERS = 50
SNAPSHOTTER = "overlayfs"
MT_LAYER_GZIP = mt.OCI_LAYER_GZIP


def goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def put_blob(blob_dir: Path, data: bytes) -> dict:
    """Store ``data`` under ``blob_dir/<sha256 hex>``; returns ``digest`` and ``size``."""
    hexd = hashlib.sha256(data).hexdigest()
    dest = blob_dir / hexd
    if not dest.exists():
        dest.write_bytes(data)
    return {"digest": f"sha256:{hexd}", "size": len(data)}


def tiny_layer(seed: str) -> tuple[bytes, str]:
    """A small gzip layer holding one file: (compressed bytes, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        payload = f"{seed}\n".encode() * 8
        info = tarfile.TarInfo(f"etc/{seed}.txt")
        info.size, info.mtime, info.mode = len(payload), 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(payload))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), "sha256:" + hashlib.sha256(uncompressed).hexdigest()


def config_json(diff_ids: list[str], arch: str, created: str) -> bytes:
    config = {"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "created": created}
    return json.dumps(config, separators=(",", ":")).encode()


class ScaleRootBuilder:
    """Blobs on disk, their meta.db records and committed overlayfs snapshots, one namespace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / K.CONTENT_PLUGIN_DIR / "blobs" / "sha256"
        self.blobs.mkdir(parents=True)
        self.tree = BucketTree()
        v1 = self.tree.bucket(K.V1, create=True)
        assert v1 is not None
        v1.put(K.VERSION, encode_varint(K.DB_VERSION_1X))
        self.ns = R.namespace_bucket(self.tree, NAMESPACE)
        self.now = 1_760_000_000 * 10**9  # fixed: the same root on every build
        self.backend = BucketTree()
        self.snap_meta = self.ns.bucket(K.SNAPSHOTS, SNAPSHOTTER.encode(), create=True)
        self.snap_dir = root / K.snapshotter_dir(SNAPSHOTTER) / "snapshots"
        self.snap_dir.mkdir(parents=True)
        self.snaps: dict[str, tuple[str, int]] = {}  # chain ID -> (backend name, id)

    def blob(self, data: bytes, media_type: str, children: list[dict] = (), labels: dict | None = None) -> dict:
        desc = {"mediaType": media_type, **put_blob(self.blobs, data)}
        R.merge_blob(self.ns, desc["digest"], desc["size"], {**R.children_labels(children), **(labels or {})}, self.now)
        return desc

    def layer(self, seed: str) -> tuple[dict, str]:
        data, diff_id = tiny_layer(seed)
        return self.blob(data, MT_LAYER_GZIP, labels={R.LABEL_UNCOMPRESSED: diff_id}), diff_id

    def manifest(self, layers: list[tuple[dict, str]], arch: str, seed: str, unpack: bool = False) -> dict:
        diff_ids = [d for _, d in layers]
        labels = {R.snapshot_label(SNAPSHOTTER): self.unpack(diff_ids)} if unpack else {}
        config = self.blob(config_json(diff_ids, arch, seed), mt.OCI_CONFIG, labels=labels)
        body = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": [l for l, _ in layers]}
        return self.blob(json.dumps(body).encode(), mt.OCI_MANIFEST, [config] + [l for l, _ in layers])

    def unpack(self, diff_ids: list[str]) -> str:
        """Committed snapshots for every chain of ``diff_ids`` not yet there; the top chain ID."""
        parent: str | None = None
        for chain in chain_ids(diff_ids):
            if chain not in self.snaps:
                self.snapshot(chain, parent)
            parent = chain
        assert parent is not None
        return parent

    def snapshot(self, chain: str, parent: str | None) -> None:
        snap_id = len(self.snaps) + 1
        self.snap_meta.sequence += 1
        name = backend_name(NAMESPACE, self.snap_meta.sequence, chain)
        R.put_backend_snapshot(self.backend, name, snapshot_id=snap_id, parent=self.snaps[parent] if parent else None,
                               inodes=2, size=4096, now_ns=self.now)
        R.put_snapshot_record(self.snap_meta, chain, name, parent, self.now)
        if parent is not None:
            R.add_child_link(self.snap_meta, parent, chain)
        self.snaps[chain] = (name, snap_id)
        d = self.snap_dir / str(snap_id)
        d.mkdir(mode=0o700)
        (d / "fs").mkdir(mode=0o755)
        (d / "fs" / "layer").write_bytes(b"")  # (the inodes recorded: the tree and this file)
        (d / "work").mkdir(mode=0o711)

    def image(self, name: str, target: dict) -> None:
        R.merge_image(self.ns, R.ImageSpec(name=name, target=target, annotations={}, labels={}), self.now)

    def write(self) -> None:
        bolt_dir = self.root / K.METADATA_PLUGIN_DIR
        bolt_dir.mkdir(mode=0o711)
        write_bolt(bolt_dir / K.META_DB, self.tree, mode=0o644)
        write_bolt(self.snap_dir.parent / "metadata.db", self.backend, mode=0o600)


def build_root(root: Path, count: int, base_layers: int = BASE_LAYERS) -> dict[str, int]:
    """A root with ``count`` images over ``base_layers`` shared layers (see the module
    docstring); returns its counts."""
    b = ScaleRootBuilder(root)
    host = goarch()
    other = "arm64" if host != "arm64" else "amd64"
    bases = [b.layer(f"base{i}") for i in range(base_layers)]
    for i in range(count):
        name = f"registry.example.com/team{i % 20}/app{i:05d}:1.{i % 7}"
        created = f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"
        if i % 20 == 19:
            manifests = []
            for arch in (host, other):
                m = b.manifest([bases[i % base_layers], b.layer(f"app{i}-{arch}")], arch, created)
                manifests.append({**m, "platform": {"architecture": arch, "os": "linux"}})
            index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
            b.image(name, b.blob(json.dumps(index).encode(), mt.OCI_INDEX, manifests))
        else:
            layers = [bases[i % base_layers], bases[(i * 7 + 3) % base_layers], b.layer(f"app{i}")]
            b.image(name, b.manifest(layers, host, created, unpack=i < count // 2))
    b.write()
    return {"images": count, "blobs": sum(1 for _ in b.blobs.iterdir()), "snapshots": len(b.snaps),
            "meta_db_bytes": (root / K.METADATA_PLUGIN_DIR / K.META_DB).stat().st_size}


def build_deep_root(root: Path, count: int, own_layers: int = 3, base_layers: int = 200) -> dict[str, int]:
    """A root with ``count`` images of ``5 + own_layers`` layers each (see the module
    docstring); returns its counts as :func:`build_root` does."""
    b = ScaleRootBuilder(root)
    host = goarch()
    arches = (host, "arm64" if host != "arm64" else "amd64", "s390x")
    bases = [b.layer(f"base{i}") for i in range(base_layers)]
    plain = 0
    for i in range(count):
        name = f"registry.example.com/org{i % 50}/svc{i:05d}:v{i % 11}"
        created = f"2024-02-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"
        shared = [bases[(i * k + k) % base_layers] for k in (1, 3, 7, 11, 13)]
        if i % 4 == 3:
            manifests = []
            for arch in arches:
                m = b.manifest(shared + [b.layer(f"s{i}-{arch}-{j}") for j in range(own_layers)], arch, created)
                manifests.append({**m, "platform": {"architecture": arch, "os": "linux"}})
            index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
            b.image(name, b.blob(json.dumps(index).encode(), mt.OCI_INDEX, manifests))
        else:
            plain += 1
            b.image(name, b.manifest(shared + [b.layer(f"s{i}-{j}") for j in range(own_layers)], host, created,
                                     unpack=plain <= count * 3 // 8))
    b.write()
    return {"images": count, "blobs": sum(1 for _ in b.blobs.iterdir()), "snapshots": len(b.snaps),
            "meta_db_bytes": (root / K.METADATA_PLUGIN_DIR / K.META_DB).stat().st_size}
