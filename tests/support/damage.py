"""A catalogue of damage done to copies of real-daemon roots, shared by verify and rebuild tests.

Each entry damages a root in place and returns a string that ``verify`` must name (a digest,
a page id or a path).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from ctrconv.bolt import BoltFile

META = ("io.containerd.metadata.v1.bolt", "meta.db")
OVERLAY = "io.containerd.snapshotter.v1.overlayfs"


def blob_path(root: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":")
    return root / "io.containerd.content.v1.content" / "blobs" / alg / hexpart


def lose_blobs(root: Path, digests: Iterable[str]) -> None:
    """Delete these blob files, records kept: layers lost to damage (or collected after
    unpacking) while their snapshots survive."""
    for digest in digests:
        blob_path(root, digest).unlink()


def root_unpacked_by(daemon, archive: Path, *snapshotter: str) -> Path:  # type: ignore[no-untyped-def]
    """``ctr images import`` (unpacked, ``snapshotter`` as ctr's extra options) of ``archive``
    into a private containerd, stopped: its root, as a node holds it."""
    daemon.ctr("images", "import", *snapshotter, str(archive), timeout=120)
    daemon.stop()
    return daemon.root


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


def meta_is_a_directory(root: Path, fx) -> str:
    """A directory where meta.db goes (an fsck, a careless restore): rebuild in place failed
    with the bare "Is a directory" (a red-team run); it is moved aside, kept, and replaced."""
    path = root.joinpath(*META)
    path.unlink()
    path.mkdir()
    (path / "kept").write_text("x")
    return "meta.db"


def meta_both_metas_zeroed(root: Path, fx) -> str:
    path, page_size, *_ = _meta(root)
    _zero_page(path, 0, page_size)
    _zero_page(path, 1, page_size)
    return "meta"


def meta_empty(root: Path, fx) -> str:
    root.joinpath(*META).write_bytes(b"")
    return "meta.db"


def meta_random_page(root: Path, fx) -> str:
    """Random bytes over one page of the tree (seeded), the kind of damage a bad sector does."""
    import random

    from ctrconv.bolt.check import _Checker

    path, page_size, *_ = _meta(root)
    with BoltFile(path) as db:
        checker = _Checker(db)
        for _problem in checker.run():
            pass
        # a page the tree uses: a free page's bytes mean nothing, and which pages are free
        # depends on how the daemon that made the fixture happened to allocate
        in_use = sorted(p for p, what in checker.reachable.items() if what.startswith("bucket "))
    rnd = random.Random(7)
    page = rnd.choice(in_use)
    with open(path, "r+b") as f:
        f.seek(page * page_size)
        f.write(rnd.randbytes(page_size))
    return "meta.db"


def _rewrite_meta(root: Path, edit: Callable) -> None:
    from ctrconv.bolt.reader import read_tree
    from ctrconv.bolt.writer import write_bolt

    path = root.joinpath(*META)
    tree = read_tree(path)
    edit(tree)
    write_bolt(path, tree)


def content_record_deleted(root: Path, fx) -> str:
    """meta.db forgets a layer's content record: containerd's GC would delete the blob."""
    digest = _oci(fx)["layers"][0]["digest"]
    _rewrite_meta(root, lambda t: t.bucket(b"v1", b"default", b"content", b"blob").entries.pop(digest.encode()))
    return digest


def snapshot_record_deleted(root: Path, fx) -> str:
    """meta.db forgets the top snapshot of a chain that the snapshotter still has."""
    chain = _oci(fx)["chain_ids"][-1]
    _rewrite_meta(root, lambda t: t.bucket(b"v1", b"default", b"snapshots", b"overlayfs").entries.pop(chain.encode()))
    return chain


def index_blob_deleted(root: Path, fx) -> str:
    """The index of a multi-platform image is gone; its manifests are still there."""
    digest = fx.image("default", "docker.io/library/bbx:multi")["target"]["digest"]
    blob_path(root, digest).unlink()
    return digest


def layer_garbage_same_size(root: Path, fx) -> str:
    digest = _oci(fx)["layers"][0]["digest"]
    path = blob_path(root, digest)
    size = path.stat().st_size
    os.chmod(path, 0o644)
    path.write_bytes(bytes((i * 131 + 7) % 256 for i in range(size)))
    return digest


def orphan_snapshot_dir(root: Path, fx) -> str:
    """overlay's temp directory of a snapshot being made (``new-*``) left by a crash: its
    Cleanup removes it, and no id it could issue collides with it."""
    junk = root / OVERLAY / "snapshots" / "new-3141592653"
    (junk / "fs").mkdir(parents=True)
    (junk / "fs" / "junk").write_text("x")
    return str(junk)


def orphan_snapshot_dir_above_sequence(root: Path, fx) -> str:
    """A directory with an id above the snapshotter's sequence (a crash between overlay's
    rename and its commit): the next snapshot gets that id and fails ("file exists")."""
    junk = root / OVERLAY / "snapshots" / "999"
    (junk / "fs").mkdir(parents=True)
    (junk / "fs" / "junk").write_text("x")
    return str(junk)


def snapshotter_db_leaf_zeroed(root: Path, fx) -> str:
    from ctrconv.bolt import _structs as S

    path = root / OVERLAY / "metadata.db"
    with BoltFile(path) as db:
        snaps = db.bucket(b"v1", b"snapshots")
        leaf = next(p.pgid for p in snaps.pages() if p.flags == S.LEAF_PAGE)
        page_size = db.page_size
    _zero_page(path, leaf, page_size)
    return "metadata.db"


def snapshot_file_deleted(root: Path, fx) -> str:
    """A file vanishes from inside an unpacked snapshot (only ``verify --deep`` sees it)."""
    for snap in sorted((root / OVERLAY / "snapshots").iterdir(), key=lambda p: int(p.name)):
        victim = snap / "fs" / "bin" / "busybox"
        if victim.exists():
            victim.unlink()
            return str(snap / "fs")
    raise AssertionError("no snapshot holds bin/busybox")


#: damage that only ``verify --deep`` can see
DEEP_ONLY = {"snapshot-file-deleted"}

#: states that look odd but that containerd repairs by itself (its start-up cleanup removes an
#: orphan snapshot directory): ``verify`` reports them as information, never as a problem
BENIGN: dict[str, Callable[[Path, object], str]] = {
    "orphan-snapshot-dir": orphan_snapshot_dir,
}

CATALOGUE: dict[str, Callable[[Path, object], str]] = {
    "meta-both-metas-zeroed": meta_both_metas_zeroed,
    "meta-empty": meta_empty,
    "meta-random-page": meta_random_page,
    "content-record-deleted": content_record_deleted,
    "snapshot-record-deleted": snapshot_record_deleted,
    "index-blob-deleted": index_blob_deleted,
    "layer-garbage-same-size": layer_garbage_same_size,
    "snapshotter-db-leaf-zeroed": snapshotter_db_leaf_zeroed,
    "snapshot-file-deleted": snapshot_file_deleted,
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
    "meta-is-a-directory": meta_is_a_directory,
    "orphan-snapshot-dir-above-sequence": orphan_snapshot_dir_above_sequence,
}

