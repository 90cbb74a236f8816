"""Rebuild a damaged containerd root, in place (every replaced file backed up) or into a new root.

The orchestrator of seven named stages, each a function over the in-memory trees salvaged from
the root's bolt files (unit-tested without a daemon):

1. salvage (:mod:`.salvage`): meta.db and each snapshotter metadata.db as trees;
2. check content (:mod:`.content`): hash every blob once, quarantine the corrupt ones;
3. clean metadata (:mod:`.metadata`): drop records of missing content and images without target;
4. clean snapshots (:mod:`.snapshots`): keep the whole chains whose trees match their layers;
5. derive images (:mod:`.derive`): records for manifests and indexes whose records were lost,
   (opt-in, :mod:`.regenerate`) lost layer blobs written again from surviving snapshots,
   and no image that cannot run;
6. re-import (:mod:`.reimport`): every image imported from the repaired root into itself
   (GC labels restored, intact snapshots reused, missing ones unpacked again);
7. settle (:func:`.reimport.settle_rebuilt_root`): containers' writable snapshots kept aside
   in stage 4 attached to the chains stage 6 made again, snapshot GC labels left pointing at
   nothing removed,

with the fresh bolt files written (:mod:`.output`) between stages 5 and 6.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ctrconv import commitpoint, tempfiles
from ctrconv.commitpoint import committing, into_scratch
from ctrconv.containerd import schema as K
from ctrconv.containerd.locking import keeping_bolt_locks
from ctrconv.containerd.records import key_bytes
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.digest import Digest
from ctrconv.durability import sync_filesystems
from ctrconv.streams import fsync_dir
from ctrconv.errors import CtrconvError, UsageError
from ctrconv.interrupts import Stopped
from ctrconv.outputs import refuse_output_inside
from ctrconv.progress import Progress
from ctrconv.recovery import journal
from ctrconv.recovery.buckets import namespaces
from ctrconv.recovery.carry import carry_over
from ctrconv.recovery.content import QUARANTINE, KnownHash, check_content, verify_first
from ctrconv.recovery.derive import (derive_images, drop_incomplete_images, record_images_run_from_snapshots,
                                     relabel_bare_documents)
from ctrconv.recovery.metadata import (
    clean_metadata,
    drop_flattened_buckets,
    drop_empty_recovered_namespaces,
    drop_undecodable_labels,
    mend_undecodable_times,
    prune_dangling_labels,
)
from ctrconv.recovery.output import write_stores
from ctrconv.recovery.regenerate import regenerate_lost_layers
from ctrconv.recovery.reimport import import_groups, lost_child_records, reimport_groups, settle_rebuilt_root
from ctrconv.recovery.report import RebuildReport
from ctrconv.recovery.salvage import CONTAINERD_ROOT_HINTS, Salvaged, lock_stores, salvage_stores
from ctrconv.recovery.snapshots import (
    Detached,
    clean_snapshots,
    meta_db_predates_snapshots,
    drop_containers_without_snapshots,
    hold_orphan_writable_snapshots,
    snapshots_unlike_their_layers,
    unnamed_writable_dirs,
)

__all__ = ["CONTAINERD_ROOT_HINTS", "RebuildReport", "rebuild_root"]


@dataclass
class _Run:
    """One rebuild: what it reads, what it writes, and how."""

    croot: ContainerdRoot
    target: ContainerdRoot
    in_place: bool
    names: dict[str, str]
    unpack: bool
    jobs: int | None
    progress: Progress | None
    trust_snapshots: bool
    link: bool
    regenerate_layers: bool = False
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    #: blobs the healthy-check's verify already hashed (in place only)
    known: dict[str, KnownHash] = field(default_factory=dict)
    #: containers' writable snapshots kept aside until their parent chain is unpacked again
    detached: list[Detached] = field(default_factory=list)
    #: meta.db paths an interrupted in-place rebuild found lost (:mod:`.journal`)
    resumed_lost: set[journal.LostPath] | None = None
    #: namespace -> (snapshotter, key) of children records list without a record, as salvaged
    #: (before the clean-up unlinks such children: :func:`~.reimport.lost_child_records`)
    lost_children: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)


def rebuild_root(
    root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    names: dict[str, str] | None = None,
    unpack: bool = True,
    jobs: int | None = None,
    progress: Progress | None = None,
    trust_snapshots: bool = False,
    link: bool = False,
    regenerate_layers: bool = False,
) -> RebuildReport:
    """Rebuild ``root`` in place, or into ``output`` (the source is then never written).

    Into ``output`` blobs are copied (reflinked where the filesystem can), so the new root
    shares no inode with the damaged one; ``link`` hard-links them instead.

    Snapshots are reused only where their tree matches their layer (compared like
    ``verify --deep``), unless ``trust_snapshots``: then any whole chain is reused as it is.

    ``regenerate_layers``: layer blobs lost to damage whose snapshots survive are written again
    from them (an image whose blobs do not come back byte for byte gets a new target).
    """
    croot = ContainerdRoot(root)
    if not croot.path.is_dir():
        raise UsageError(f"containerd root {croot.path} does not exist")
    if not croot.content_dir.is_dir() and not croot.meta_db.exists():
        raise UsageError(f"{croot.path} is not a containerd root")
    target = ContainerdRoot(croot.path if output is None else output)
    if output is not None:
        if target.path.exists() and any(target.path.iterdir()):
            tempfiles.sweep(target.path.parent, _scratch_prefix(target.path))  # (a killed run's staging root)
            raise UsageError(f"output {target.path} exists and is not empty")
        if target.path.resolve() == croot.path.resolve():
            raise UsageError("output must differ from the root (omit -o to rebuild in place)")
        refuse_output_inside(target.path, croot.path, "the damaged root is only read")
    names = {str(Digest.parse(d)): ref for d, ref in (names or {}).items()}
    run = _Run(croot, target, output is None, names, unpack, jobs, progress, trust_snapshots, link, regenerate_layers)
    report = RebuildReport(str(croot.path), str(target.path))
    if run.in_place:
        # a bolt write killed before its rename (this command's or an import's) left a whole
        # copy of the file as a temp: ctrconv's own garbage, removed under the writers' lock
        _remove_bolt_temps(croot)
        run.resumed_lost = journal.read(croot.path)
        if run.resumed_lost is not None:
            report.clean("interrupted-rebuild", str(croot.path / journal.JOURNAL),
                          "a rebuild of this root was interrupted: the damage it found is taken as found again")
        # a healthy root is left exactly as it is: no backup, no rewrite, no re-import
        elif not names:
            report.healthy, run.known, report.not_repairable = verify_first(
                croot, jobs=jobs, progress=progress, deep=not trust_snapshots)
        if not report.healthy:
            try:
                # every bolt file stays locked from the first read to the end: no containerd
                # runs on a state between two of the rebuild's commits
                with keeping_bolt_locks():
                    _rebuild_into(run, report)
            except CtrconvError as exc:
                if not (croot.path / journal.JOURNAL).exists():
                    raise  # (nothing was written yet)
                kept = _kept_summary(croot, report, run.stamp)
                raise type(exc)(f"{exc}; the rebuild stopped after it began changing {croot.path}{kept}: run it "
                                "again once that is fixed, before containerd runs on the root, or roll it back "
                                "(docs/recovery.md)", hint=exc.hint) from exc
        return report
    _rebuild_into_new_root(run, report)
    return report


def content_records(namespace: str) -> tuple[bytes, ...]:
    """The bucket of a namespace's content records (``v1/<ns>/content/blob``): what "its content
    records may be lost" asks about. Its ``ingests`` beside them (transfers in flight) say nothing
    of what the namespace holds, and a ``content`` page lost with ``blob`` read back whole from
    the orphan pages below it lost no record (a page sweep: the namespace took other namespaces'
    platforms it never pulled)."""
    return (K.V1, namespace.encode(), K.CONTENT, K.BLOB)


def _remove_bolt_temps(croot: ContainerdRoot) -> None:
    """Only under this process's writers' lock (``api.rebuild_root`` takes it): no other
    writer can be writing one of them then."""
    from ctrconv.containerd.rootlock import holds_write_lock
    from ctrconv.sinks.containerd_root.transaction import remove_stale_bolt_temps

    if not holds_write_lock(croot.path):
        return
    remove_stale_bolt_temps(croot.meta_db)
    for sn in K.TREE_SNAPSHOTTERS:
        remove_stale_bolt_temps(croot.snapshotter_db(sn))


def _scratch_prefix(final: Path) -> str:
    """The name prefix of the staging root ``rebuild -o FINAL`` builds beside it."""
    return f".{final.name}.ctrconv-"


def _rebuild_into_new_root(run: _Run, report: RebuildReport) -> None:
    """A new root is built under a temporary name beside it and renamed at the end, so an
    interrupted rebuild leaves no half-made root behind."""
    final = run.target.path
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfiles.temp_dir(final.parent, _scratch_prefix(final), sweep=True)
    try:
        run.target = ContainerdRoot(scratch)
        with into_scratch():
            _rebuild_into(run, report)
            report.carried = carry_over(run.croot, scratch)
        # every file of the new root on the disk before the root appears: the reused snapshot
        # trees were copied with plain writes, and a journal commit of the rename before their
        # data left a whole-looking root of empty files (a power cut during the final sync)
        sync_filesystems([scratch])
        if final.exists():
            final.rmdir()  # checked empty above
        with committing():  # the new root appears: a signal from here on does not undo it
            os.rename(scratch, final)
            fsync_dir(final.parent)
        tempfiles.forget(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        tempfiles.forget(scratch)
        raise


#: what an error in the middle of an in-place rebuild says (its record of the damage stays)
UNFINISHED = "the rebuild is not finished: run ctrconv rebuild again to complete it"


def _rebuild_into(run: _Run, report: RebuildReport) -> None:
    """Every stage, reading ``run.croot`` and writing ``run.target`` (the same root in place)."""
    with commitpoint.unfinished(UNFINISHED) if run.in_place else nullcontext():
        _rebuild_stages(run, report)


def _rebuild_stages(run: _Run, report: RebuildReport) -> None:
    croot = run.croot
    with ExitStack() as locks:
        lock_stores(croot, locks, exclusive=run.in_place)
        stores = salvage_stores(croot, report)
        if run.resumed_lost:
            stores.lost_paths |= run.resumed_lost
        try:
            kept = _repair(run, stores, report)
            if run.in_place:  # before the first write: a re-run after a kill repairs as much
                journal.write(croot.path, _lost_in_meta(stores), run.stamp)
            write_stores(stores, croot, run.target, kept, report, in_place=run.in_place, stamp=run.stamp)
        except Stopped:
            if run.in_place and run.resumed_lost is None and not commitpoint.passed():
                # a signal before the new meta.db: the corrupt blobs set aside go back and the
                # record goes, so that nothing was changed, as exit 130/143 says (a kill leaves
                # both: the re-run repairs as much)
                _put_back_set_aside_blobs(croot, report, run.stamp)
                journal.clear(croot.path)
            raise
    report.snapshots_reused = sum(len(ids) for ids in kept.values())
    # Intact content records say what a namespace holds; only where they may be lost may a
    # namespace take blobs on disk that it has no record of.
    salvaged_namespaces = {ns for ns, _ in namespaces(stores.meta)}
    content_lost = {ns for ns in salvaged_namespaces if stores.meta_lost_under(*content_records(ns))}
    work = reimport_groups(run.target, stores.meta, run.unpack,
                           trusted=lambda ns: ns not in content_lost,
                           writer_line=stores.meta_writer_line, lost_children=run.lost_children)
    del stores  # the salvaged trees: each import below loads the repaired meta.db itself
    import_groups(run.target, work, report, progress=run.progress)
    del work  # the walks and sources: the last step loads meta.db once more
    settle_rebuilt_root(run.target, report, run.detached,
                        quarantine=run.croot.path / QUARANTINE / run.stamp if run.in_place else None,
                        content_lost_in=lambda ns: ns in content_lost or ns not in salvaged_namespaces)
    if run.in_place:
        sync_filesystems([croot.path])  # every write durable before the record of the damage goes
        journal.clear(croot.path)


def _kept_summary(croot: ContainerdRoot, report: RebuildReport, stamp: str) -> str:
    """`` (what it replaced is kept: <bolt backups>, <quarantine dir>)``: the backups of the bolt
    files, and the quarantine as one directory however many entries it holds."""
    kept = [b for b in report.backups if ".bak-" in Path(b).name]
    quarantine = croot.path / QUARANTINE / stamp
    if any(Path(b).is_relative_to(quarantine) for b in report.backups):
        kept.append(str(quarantine))
    return f" (what it replaced is kept: {', '.join(kept)})" if kept else ""


def _put_back_set_aside_blobs(croot: ContainerdRoot, report: RebuildReport, stamp: str) -> None:
    """Undo the content check's quarantine of corrupt blobs (``<quarantine>/<stamp>/<alg>/<hex>``)."""
    base = croot.path / QUARANTINE / stamp
    for backup in report.backups:
        path = Path(backup)
        if path.parent.parent != base:
            continue  # (not a blob)
        try:
            digest = Digest.parse(f"{path.parent.name}:{path.name.split('.', 1)[0]}")
        except CtrconvError:
            continue
        home = croot.content.blob_path(digest)
        if not os.path.lexists(home):
            os.rename(path, home)
            fsync_dir(home.parent)
    for directory in sorted(base.glob("*"), reverse=True) + [base, base.parent]:
        try:
            directory.rmdir()  # (only what is left empty)
        except OSError:
            pass


def _lost_in_meta(stores: Salvaged) -> set[journal.LostPath]:
    """The meta.db paths whose records damage may have taken (:meth:`Salvaged.meta_lost_under`)."""
    res = stores.meta_result
    if res is None or not res.source.startswith("meta "):
        return {()}
    return {d.path for d in res.damage} | set(stores.lost_paths)


def _repair(run: _Run, stores: Salvaged, report: RebuildReport) -> dict[str, set[int]]:
    """Stages 2-5 on the salvaged trees; returns the snapshot ids kept per snapshotter."""
    meta, backends, content = stores.meta, stores.backend_trees, run.target.content
    # the target's content store holds exactly the good blobs (corrupt ones were
    # quarantined in place, or left out of a new root)
    good = check_content(run.croot, run.target, report, in_place=run.in_place, stamp=run.stamp, jobs=run.jobs,
                         progress=run.progress, link=run.link, known=run.known)
    stores.lost_paths |= {(K.V1, key_bytes(ns), name) for ns, name in drop_flattened_buckets(meta, report)}
    stores.lost_paths |= meta_db_predates_snapshots(meta, backends, run.croot, report)
    orphaned = clean_metadata(meta, good, report, content)
    for sn, backend in backends.items():
        drop_undecodable_labels(backend, f"{sn}/metadata.db", report)
        mend_undecodable_times(backend, f"{sn}/metadata.db", report)
    run.lost_children = {ns_name: lost_child_records(ns) for ns_name, ns in namespaces(meta)}
    distrusted = {} if run.trust_snapshots else snapshots_unlike_their_layers(
        meta, backends, run.croot, content, report, scratch=run.target.path)
    # a damaged meta.db may have lost snapshot records its snapshotters still hold: restored
    kept = clean_snapshots(meta, backends, run.croot, report, distrusted,
                           restore_records=lambda ns: stores.meta_lost_under(b"v1", ns.encode(), b"snapshots"),
                           detached=run.detached)
    drop_containers_without_snapshots(meta, report, pending={(d.namespace, d.key) for d in run.detached},
                                      unnamed_dirs=unnamed_writable_dirs(run.croot, kept))
    hold_orphan_writable_snapshots(meta, backends, report,
                                   lost_in=lambda ns: stores.meta_lost_under(b"v1", ns.encode(), K.CONTAINERS))
    if not run.unpack:
        # with an unpack, labels of lost snapshots stay: they say the image was unpacked,
        # so it is unpacked again (and labelled anew), even after an interrupted rebuild
        prune_dangling_labels(meta, report)
    derive_images(meta, good, content, run.names, report, orphaned,
                  lost_images=lambda ns: stores.meta_lost_under(b"v1", *([ns.encode(), b"images"] if ns else [])),
                  lost_content=lambda ns: stores.meta_lost_under(*content_records(ns)))
    if run.regenerate_layers:
        regenerate_lost_layers(meta, backends, run.croot, run.target, report, unpack=run.unpack)
    lost_content = lambda ns: stores.meta_lost_under(*content_records(ns))  # noqa: E731
    record_images_run_from_snapshots(meta, content, report, lost_content=lost_content)
    relabel_bare_documents(meta, content, report, lost_content=lost_content)
    drop_incomplete_images(meta, content, report, records_whole=lambda ns: not lost_content(ns))
    drop_empty_recovered_namespaces(meta, report)
    return kept
