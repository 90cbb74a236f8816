"""Writing the repaired stores: fresh bolt files (the replaced ones backed up in place), the
kept snapshot directories and ingests copied into a new root, the unkept ones removed in place.

Crash order: meta.db first (it only drops references), then the snapshotter dbs (a backend
record meta.db no longer names is garbage containerd's GC collects), and only then the
directories no record keeps.
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext
from pathlib import Path

from ctrconv.bolt.salvage import SalvageResult
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.commitpoint import committing
from ctrconv.containerd import schema as K
from ctrconv.containerd.locking import kept_lock
from ctrconv.containerd.records import read_schema_version, write_schema_version
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.errors import FormatError
from ctrconv.recovery.content import QUARANTINE, unused_path
from ctrconv.recovery.report import RebuildReport
from ctrconv.recovery.salvage import Salvaged
from ctrconv.recovery.snapshots import restore_work_dirs, unnamed_writable_dirs
from ctrconv.sinks.containerd_root.transaction import backup_copy, replace_bolt_file
from ctrconv.streams import fsync_dir

META_DB_MODE = 0o644
SNAPSHOTTER_DB_MODE = 0o600
#: plugin directory only containerd 2.x creates (docs/containerd-versions.md)
_SANDBOX_CONTROLLER_DIR = "io.containerd.sandbox.controller.v1.shim"


def write_stores(stores: Salvaged, croot: ContainerdRoot, target: ContainerdRoot, kept: dict[str, set[int]],
                 report: RebuildReport, *, in_place: bool, stamp: str) -> None:
    """Write the repaired trees of ``stores`` into ``target`` (``croot`` itself when in place)."""
    if not in_place:
        target.path.mkdir(parents=True, exist_ok=True)
        copy_snapshot_dirs(croot, target, kept)
        copy_ingests(croot, target)
        for sn, names in unnamed_writable_dirs(croot, kept).items():
            for name in names:  # (in place these go to the quarantine, reported there)
                report.clean("snapshot-dir", f"{sn}/snapshots/{name}",
                             "no record names it and it holds files (a container's layer whose record is lost, or a "
                             "snapshot removed and not yet collected: they cannot be told apart): "
                             f"left out of the new root; the source keeps it ({croot.snapshots_dir(sn) / name})")
    restore_work_dirs(stores.backend_trees, target, kept, report)
    ensure_schema_version(stores.meta, croot)
    meta_result = stores.meta_result
    # the commit point in place: from the new meta.db on, a signal does not undo the
    # rebuild (into a new root it is the final rename)
    with committing() if in_place else nullcontext():
        write_bolt_file(target.meta_db, stores.meta, META_DB_MODE, meta_result.page_size if meta_result else None,
                        synced_freelist(meta_result, stores.meta), report, in_place=in_place, stamp=stamp)
    for sn, (tree, res) in stores.backends.items():
        if res is None and not tree.value_count() and not (in_place and target.snapshotter_db(sn).exists()):
            continue  # no db and nothing to keep (containerd makes one when it needs it)
        # (in place, an empty or unreadable db is replaced: the re-import opens it)
        target.snapshotter_dir(sn).mkdir(mode=0o700, parents=True, exist_ok=True)
        target.snapshots_dir(sn).mkdir(mode=0o700, exist_ok=True)
        write_bolt_file(target.snapshotter_db(sn), tree, SNAPSHOTTER_DB_MODE, res.page_size if res else None, True,
                        report, in_place=in_place, stamp=stamp)
    if in_place:
        quarantine = croot.path / QUARANTINE / stamp / "snapshots"
        # every tree store on disk, not only those with kept records: a store whose db was
        # lost keeps none, and its directories (containers' writable layers among them) were
        # left in snapshots/, where containerd's cleanup deletes what its db does not name
        on_disk = {sn for sn in K.TREE_SNAPSHOTTERS if croot.snapshots_dir(sn).is_dir()}
        for sn in sorted(set(kept) | on_disk):
            remove_unkept_snapshot_dirs(croot, sn, kept.get(sn, set()), report, quarantine=quarantine / sn,
                                        records_intact=stores.snapshot_records_intact(sn))


def synced_freelist(result: SalvageResult | None, meta: BucketTree) -> bool:
    """Write the freelist the way the containerd that last wrote the file does.

    The newest valid meta page tells (1.7+ open meta.db with ``NoFreelistSync``; a 1.6 root
    that 2.x started once has a synced older page and an unsynced newest one). With no valid
    meta page, schema version 4 means 2.x (unsynced); otherwise a synced freelist, which every
    line accepts.
    """
    valid = [m for m in (result.metas if result else ()) if m.valid]
    if valid:
        return max(valid, key=lambda m: m.txid).freelist_synced
    return _schema_version(meta) != K.DB_VERSION_2X


def _schema_version(meta: BucketTree) -> int | None:
    try:
        return read_schema_version(meta.bucket(K.V1))
    except FormatError:
        return None


def ensure_schema_version(meta: BucketTree, croot: ContainerdRoot) -> None:
    """Keep a salvaged ``v1/version`` as is (never downgrade 4 -> 3); set one only if lost.

    A lost key becomes 4 only when 2.x evidently ran the root and nothing but ``v1`` is at the
    root level (2.x's 3 -> 4 migration would have removed the rest); else 3, which every line
    accepts and 2.x migrates itself. Nothing is ever added at the root level except ``v1``.
    """
    v1 = meta.bucket(K.V1, create=True)
    assert v1 is not None
    if v1.get(K.VERSION) is not None:
        return
    two_x = (croot.path / _SANDBOX_CONTROLLER_DIR).is_dir() and set(meta.entries) == {K.V1}
    write_schema_version(v1, K.DB_VERSION_2X if two_x else K.DB_VERSION_1X)


def copy_snapshot_dirs(croot: ContainerdRoot, target: ContainerdRoot, kept: dict[str, set[int]]) -> None:
    """The kept snapshots' directories, copied into a new root."""
    from ctrconv.layers import copy_tree

    for sn, ids in kept.items():
        target.snapshots_dir(sn).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target.snapshotter_dir(sn), 0o700)
        for sid in sorted(ids):
            source = croot.snapshot_dir(sn, sid)
            if sn == "native" and not os.path.lexists(source):
                continue  # a view on a parent: it has no directory (kept only so, see has_own_directory)
            copy_tree(source, target.snapshot_dir(sn, sid))


def copy_ingests(croot: ContainerdRoot, target: ContainerdRoot) -> None:
    """Partial uploads go with their kept ingest records, so a pull can resume them."""
    from ctrconv.layers import copy_tree

    source = croot.content_dir / "ingest"
    if source.is_dir() and any(source.iterdir()):
        dest = target.content_dir / "ingest"
        if dest.exists():
            shutil.rmtree(dest)
        target.content_dir.mkdir(parents=True, exist_ok=True)
        copy_tree(source, dest)


def remove_unkept_snapshot_dirs(croot: ContainerdRoot, sn: str, ids: set[int], report: RebuildReport, *,
                                quarantine: Path, records_intact: bool) -> None:
    """The snapshot directories of ``sn`` no kept record names, moved to ``quarantine``: an
    in-place rebuild never deletes one. Such a directory may be a container's writable layer or
    a layer whose blob the node discarded, whose records damage lost (a truncated or missing
    snapshotter db, a lost meta.db root); and bolt files that read whole are no proof that
    none did: a rebuild killed after writing them leaves whole files without the records the
    damage took, and the next run deleted what the first would have kept aside. With
    ``records_intact`` the directory is most likely garbage (containerd's GC would remove it):
    the report says so, and the quarantine can be deleted."""
    sdir = croot.snapshots_dir(sn)
    if not sdir.is_dir():
        return
    why = ("no record names it (containerd's GC would delete it)" if records_intact
           else "no intact record (damage may have lost it)")
    moved = False
    for entry in sorted(os.listdir(sdir)):
        if entry.isdigit() and int(entry) in ids and str(int(entry)) == entry:
            continue
        quarantine.mkdir(parents=True, exist_ok=True)
        where = unused_path(quarantine / entry)
        os.rename(sdir / entry, where)
        moved = True
        report.backups.append(str(where))
        report.clean("snapshot-dir", f"{sn}/snapshots/{entry}", f"{why}: moved to {where}")
    if moved:  # (durable where they went, before the command says it is done)
        fsync_dir(quarantine)
        fsync_dir(sdir)


def _move_aside(path: Path, stamp: str) -> Path:
    """Rename what stands where a bolt file goes but is none (a directory, a dangling link) to
    ``<name>.bak-<stamp>``, durably: nothing in it is deleted, and the new file can take the name."""
    aside = unused_path(path.with_name(f"{path.name}.bak-{stamp}"))
    os.rename(path, aside)
    fsync_dir(path.parent)
    return aside


def write_bolt_file(path: Path, tree: BucketTree, mode: int, page_size: int | None, freelist: bool,
                    report: RebuildReport, *, in_place: bool, stamp: str) -> None:
    """A fresh bolt file from ``tree``. In place, the file it replaces is kept as a backup
    copy, and its inode retired (:func:`replace_bolt_file`): it was a hard link, which kept
    the old inode named, so a containerd waiting on it ran on the old metadata and its GC
    deleted what the rebuild wrote (found by a red-team run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    held = None
    if in_place and (path.exists() or path.is_symlink()) and not path.is_file():
        report.backups.append(str(_move_aside(path, stamp)))  # a directory (say) in its place: kept
    elif in_place and path.exists():
        report.backups.append(str(backup_copy(path, stamp)))
        held = kept_lock(path)
    replace_bolt_file(path, held, page_size, lambda hook: write_bolt(
        path, tree, page_size=page_size, txid=2, freelist=freelist, mode=mode, before_rename=hook))
