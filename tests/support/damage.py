"""A catalogue of damage done to copies of real-daemon roots, shared by verify and rebuild tests.

Each entry damages a root in place and returns a string that ``verify`` must name (a digest,
a page id or a path).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from ctrconv.bolt import BoltFile

META = ("io.containerd.metadata.v1.bolt", "meta.db")
OVERLAY = "io.containerd.snapshotter.v1.overlayfs"


def blob_path(root: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":")
    return root / "io.containerd.content.v1.content" / "blobs" / alg / hexpart


def _oci(fx) -> dict:
    return fx.image("default", "docker.io/library/bbx:oci")["manifests"][0]


def deleted_layer(root: Path, fx) -> str:
    digest = _oci(fx)["layers"][0]["digest"]
    blob_path(root, digest).unlink()
    return digest


def flipped_layer_byte(root: Path, fx) -> str:
    digest = _oci(fx)["layers"][0]["digest"]
    path = blob_path(root, digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(77)
        byte = f.read(1)
        f.seek(77)
        f.write(bytes([byte[0] ^ 0x40]))
    return digest


def truncated_config(root: Path, fx) -> str:
    digest = _oci(fx)["config"]["digest"]
    path = blob_path(root, digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.truncate(100)
    return digest


def _meta(root: Path) -> tuple[Path, int, int, int, int, int]:
    path = root.joinpath(*META)
    with BoltFile(path) as db:
        m = db.meta
        return path, db.page_size, m.pgid, m.page, m.root, m.freelist


def _zero_page(path: Path, pgid: int, page_size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pgid * page_size)
        f.write(bytes(page_size))


def meta_truncated_half(root: Path, fx) -> str:
    path, page_size, hwm, *_ = _meta(root)
    with open(path, "r+b") as f:
        f.truncate(hwm * page_size // 2)
    return "truncated"


def meta_leaf_zeroed(root: Path, fx) -> str:
    path, page_size, hwm, _, root_page, _ = _meta(root)
    from ctrconv.bolt import _structs as S

    with BoltFile(path) as db:
        images = db.bucket(b"v1", b"default", b"images")
        leaf = next(p.pgid for p in images.pages() if p.flags == S.LEAF_PAGE) if images.inline is None else root_page
    _zero_page(path, leaf, page_size)
    return f"page {leaf}"


def meta_current_meta_zeroed(root: Path, fx) -> str:
    path, page_size, _, current, _, _ = _meta(root)
    _zero_page(path, current, page_size)
    return f"meta {current}"


def meta_freelist_zeroed(root: Path, fx) -> str:
    path, page_size, _, _, _, freelist = _meta(root)
    _zero_page(path, freelist, page_size)
    return f"page {freelist}"


def snapshot_dir_deleted(root: Path, fx) -> str:
    snaps = root / OVERLAY / "snapshots"
    victim = sorted(snaps.iterdir(), key=lambda p: int(p.name))[0]
    shutil.rmtree(victim)
    return str(victim)


def snapshotter_db_deleted(root: Path, fx) -> str:
    (root / OVERLAY / "metadata.db").unlink()
    return "metadata.db"


def meta_deleted(root: Path, fx) -> str:
    root.joinpath(*META).unlink()
    return "meta.db"


CATALOGUE: dict[str, Callable[[Path, object], str]] = {
    "deleted-layer": deleted_layer,
    "flipped-layer-byte": flipped_layer_byte,
    "truncated-config": truncated_config,
    "meta-truncated-half": meta_truncated_half,
    "meta-leaf-zeroed": meta_leaf_zeroed,
    "meta-current-meta-zeroed": meta_current_meta_zeroed,
    "meta-freelist-zeroed": meta_freelist_zeroed,
    "snapshot-dir-deleted": snapshot_dir_deleted,
    "snapshotter-db-deleted": snapshotter_db_deleted,
    "meta-deleted": meta_deleted,
}
