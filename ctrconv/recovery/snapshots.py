"""Stage 4, clean snapshots: keep only the snapshot chains that are whole in meta.db, in the
snapshotter db and on disk (and, unless snapshots are trusted, whose trees match their
layers); rewrite the snapshotter's ``parents`` index and set every sequence above the ids in use."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Hashable, Iterator, Mapping, TypeVar

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.content import ContentStore
from ctrconv.containerd.codec import decode_uvarint_exact
from ctrconv.containerd.records import (
    KIND_ACTIVE,
    KIND_COMMITTED,
    KIND_VIEW,
    BackendSnapshot,
    SnapshotRecord,
    add_child,
    backend_name_seq,
    go_time,
    is_committed,
    key_bytes,
    kind_name,
    name_text,
    read_backend_snapshot,
    read_parent_links,
    read_snapshot,
    write_backend_snapshot,
    write_parent_link,
    write_snapshot,
)
from ctrconv.errors import FormatError, NoSpaceError
from ctrconv.containerd.root import ContainerdRoot, has_own_directory, holds_entries, is_namespace, real_dir
from ctrconv.recovery.buckets import backend_id, image_descriptors, namespaces, text
from ctrconv.recovery.report import RebuildReport


@dataclass
class Detached:
    """A container's writable snapshot whose own record and directory are whole but whose parent
    chain broke (an image layer's directory lost): kept aside, its directory kept, and attached
    again after the re-import unpacked that chain anew (:func:`reattach`)."""

    namespace: str
    snapshotter: str
    key: bytes  #: its meta.db key (the container's ``snapshotKey``)
    backend_key: bytes
    backend: BucketTree  #: its snapshotter record (``parent`` rewritten when attached)
    record: BucketTree  #: its meta.db record
    parent: bytes  #: the meta.db key of its parent (a chain ID for an image's top layer)
    id: int


def whole_chains(records: Mapping[bytes, BucketTree], ok: Callable[[bytes, BucketTree], bool]) -> set[bytes]:
    """Keys of the records that are ``ok`` and whose parent (``parent`` key) is kept too: a
    fixpoint, so a chain is cut below its first broken link whatever the order of records."""
    keep: set[bytes] = set()
    changed = True
    while changed:
        changed = False
        for key, rec in records.items():
            if key in keep or not ok(key, rec):
                continue
            parent = rec.get(K.PARENT)
            if parent is None or parent in keep:
                keep.add(key)
                changed = True
    return keep


def clean_snapshots(
    meta: BucketTree, backends: dict[str, BucketTree], croot: ContainerdRoot, report: RebuildReport,
    distrusted: dict[str, set[bytes]] | None = None, *, restore_records: Callable[[str], bool] | None = None,
    detached: list[Detached] | None = None,
) -> dict[str, set[int]]:
    """Keep only snapshot chains that are whole in meta.db, the backend db and on disk, and
    whose trees were not found to differ from their layers (``distrusted`` backend keys).
    ``restore_records(namespace)``: whether that namespace's snapshot records may have been
    lost to damage; a whole backend snapshot of such a namespace that no record names gets its
    record back (:func:`restore_lost_records`) instead of being cleaned up.

    ``detached`` receives the writable snapshots whose parent chain broke below them
    (:class:`Detached`): their directories stay too.

    Returns, per snapshotter, the ids of the snapshots kept (their directories stay).
    """
    kept_ids: dict[str, set[int]] = {}
    for sn, backend in backends.items():
        records = backend.bucket(K.V1, K.SNAPSHOTS, create=True)
        assert records is not None
        mend_emptied_records(sn, records, backend.bucket(K.V1, K.PARENTS), croot, report)
        restore_backend_records(meta, sn, records, backend.bucket(K.V1, K.PARENTS), croot, report)
        _commit_parents(sn, records, report)
        _kinds_by_role(meta, sn, records, report)
        alive = _alive_backend_snapshots(sn, records, croot, (distrusted or {}).get(sn, set()))
        if restore_records is not None:
            restore_lost_records(meta, sn, records, alive, report, restore_records)
        aside = _detach_writable(meta, sn, records, alive, croot) if detached is not None else []
        aside_keys = {d.backend_key for d in aside}
        referenced: set[bytes] = set()
        for ns_name, ns in namespaces(meta):
            bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
            if bucket is not None:
                referenced |= _clean_namespace_snapshots(
                    f"{ns_name}/{sn}", bucket, alive, report, {d.key for d in aside if d.namespace == ns_name})
        for key in list(records.entries):
            if key in aside_keys:
                continue
            if key not in alive or key not in referenced:
                record = records.entries.pop(key)
                if key in alive:  # whole, but no namespace names it: containerd's GC removes it
                    report.clean("backend-snapshot", f"{sn}/{text(key)}",
                                 "no meta.db record names it" + _writable_with_files(croot, sn, alive[key], record))
                else:
                    report.drop("backend-snapshot", f"{sn}/{text(key)}", "incomplete chain (parent, record or directory missing)")
        kept = {key: alive[key] for key in records.entries if key not in aside_keys}
        _rewrite_parents(backend, records, kept)
        records.sequence = max([records.sequence, *kept.values(), *(d.id for d in aside)])
        kept_ids[sn] = set(kept.values()) | {d.id for d in aside}
        if detached is not None:
            detached.extend(aside)
    _drop_records_of_lost_snapshotters(meta, set(backends), report)
    mend_children_index(meta, report)
    return kept_ids


def mend_children_index(meta: BucketTree, report: RebuildReport) -> None:
    """Every meta.db snapshot record that names a parent is among that parent's ``children``:
    a record written again (its page lost) had none, and containerd then let ``ctr snapshots
    rm`` remove a base layer six snapshots stood on (it checks that index, not the parent
    fields; a red-team sweep), its GC failing on it ever after."""
    for ns_name, ns in namespaces(meta):
        snapshots = ns.bucket(K.SNAPSHOTS)
        for sn, bucket in (snapshots.entries.items() if snapshots is not None else ()):
            if not isinstance(bucket, BucketTree):
                continue
            mended: dict[bytes, int] = {}
            for key, record in bucket.entries.items():
                parent = record.get(K.PARENT) if isinstance(record, BucketTree) else None
                above = bucket.entries.get(parent) if parent else None
                if isinstance(above, BucketTree) and add_child(above, text(key)):
                    mended[parent] = mended.get(parent, 0) + 1  # type: ignore[index]
            for parent, count in sorted(mended.items()):
                report.restore("snapshot", f"snapshot {ns_name}/{text(sn)}/{text(parent)}",
                               f"{count} child link(s) lost; written again from the children's parent fields")


#: a layer's snapshot: containerd commits an unpacked layer under its chain ID
_CHAIN_KEY = re.compile(r"sha256:[0-9a-f]{64}")


def mend_emptied_records(sn: str, records: BucketTree, parents: BucketTree | None, croot: ContainerdRoot,
                         report: RebuildReport) -> None:
    """A snapshotter record whose own page went with the damage reads back as its key alone.
    The ``parents`` index still says its id (an entry naming it as a child) and its parent's,
    and one that is a parent itself was committed (containerd makes children of committed
    snapshots only), as is one named by a chain ID (an unpacked layer): such a record is
    written again, when its directory is there. Dropped, it took every snapshot above it and
    every container on them (a red-team run)."""
    try:
        links = list(read_parent_links(parents))
    except FormatError:
        return
    ids = _ids_of(records)
    has_children = {pid for pid, _, _ in links}
    emptied = {key for key, record in records.entries.items() if isinstance(record, BucketTree) and not record.entries}
    found: dict[bytes, tuple[int, int | None]] = {}  # emptied key -> (its id, its parent's id)
    for pid, cid, child in links:
        if key_bytes(child) in emptied:
            found[key_bytes(child)] = (cid, pid)
    # (a chain's base has no parent, so no entry names it as a child: when one emptied record
    # and one parent id nobody else holds are left, they are each other's)
    unnamed = sorted(emptied - set(found))
    orphan_ids = sorted(has_children - set(ids) - {cid for cid, _ in found.values()})
    if len(unnamed) == 1 and len(orphan_ids) == 1:
        found[unnamed[0]] = (orphan_ids[0], None)
    for key, (cid, pid) in sorted(found.items(), key=lambda item: item[1][0]):
        committed = cid in has_children or _CHAIN_KEY.fullmatch(text(key).split("/", 2)[-1]) is not None
        if not committed or not croot.snapshot_dir(sn, cid).is_dir():
            continue  # (a leaf named otherwise may be active: its kind is not known)
        ids.setdefault(cid, key)
    now = go_time(time.time_ns())
    for key, (cid, pid) in found.items():
        if ids.get(cid) != key or (pid is not None and pid not in ids):
            continue
        parent = text(ids[pid]) if pid is not None else None
        write_backend_snapshot(records.entries[key], BackendSnapshot(text(key), cid, "committed", parent,  # type: ignore[arg-type]
                                                                     created_at=now, updated_at=now))
        report.restore("backend-snapshot", f"{sn}/{text(key)}", "its record's page was lost: id, parent and kind "
                       "written again from the parents index")


def restore_backend_records(meta: BucketTree, sn: str, records: BucketTree, parents: BucketTree | None,
                            croot: ContainerdRoot, report: RebuildReport) -> None:
    """Snapshotter records a lost page of the snapshotter db took whole (1.6/1.7 keep records
    inline: one zeroed leaf held several), whose meta.db records and directories survive: the
    ``parents`` index still names each child with its id and its parent's id (a chain's base,
    a child of nothing, has its id in its children's entries), meta.db says each one's parent
    and which is a container's (active). Written again, instead of dropping the containers on
    them with their writable layers (a red-team sweep: one zeroed leaf lost up to five)."""
    try:
        links = list(read_parent_links(parents))
    except FormatError:
        return
    taken = _ids_of(records)
    child_of = {key_bytes(child): (pid, cid) for pid, cid, child in links}
    has_children = {pid for pid, _, _ in links}
    named: dict[bytes, tuple[str, bytes, BucketTree]] = {}  # backend key -> (namespace, meta key, record)
    parent_name: dict[bytes, bytes | None] = {}
    kinds: dict[bytes, str] = {}
    for ns_name, ns in namespaces(meta):
        bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
        writable = _container_snapshot_keys(ns, sn)
        entries = bucket.entries if bucket is not None else {}
        for key, rec in entries.items():
            name = rec.get(K.NAME) if isinstance(rec, BucketTree) else None
            if not name:
                continue
            named[name] = (ns_name, key, rec)  # type: ignore[assignment]
            above = entries.get(rec.get(K.PARENT)) if rec.get(K.PARENT) else None  # type: ignore[union-attr]
            parent_name[name] = above.get(K.NAME) if isinstance(above, BucketTree) else None
            if key in writable:
                kinds[name] = "active"
    id_of = {name: cid for name, (_, cid) in child_of.items()}
    for name, (pid, _) in child_of.items():  # (a parent's id is in each of its children's entries)
        parent = parent_name.get(name)
        if parent:
            id_of.setdefault(parent, pid)
    lost = {name for name in named if name in id_of and not (isinstance(records.entries.get(name), BucketTree)
                                                              and records.entries[name].entries)}  # type: ignore[union-attr]
    done = True
    while lost and done:  # (parents first)
        done = False
        for name in sorted(lost):
            cid, parent = id_of[name], parent_name.get(name)
            if parent is not None and parent in lost:
                continue
            lost.discard(name)
            if cid in taken or not croot.snapshot_dir(sn, cid).is_dir() or (parent is not None and parent not in records.entries):
                continue
            kind = kinds.get(name) or ("committed" if cid in has_children or
                                       _CHAIN_KEY.fullmatch(text(named[name][1])) is not None else "")
            if not kind:
                continue  # (a view or a prepared snapshot: its kind is not known)
            ns_name, key, rec = named[name]
            found = read_snapshot(rec, ns_name, sn, text(key))
            records.entries.pop(name, None)
            write_backend_snapshot(records.bucket(name, create=True),  # type: ignore[arg-type]
                                   BackendSnapshot(text(name), cid, kind, text(parent) if parent else None,
                                                   created_at=found.created_at, updated_at=found.updated_at))
            taken[cid] = name
            done = True
            report.restore("backend-snapshot", f"{sn}/{text(name)}", "its snapshotter record was lost: written "
                           "again from meta.db's record and the parents index")


def _ids_of(records: BucketTree) -> dict[int, bytes]:
    """id -> backend key of the snapshotter records that hold a readable id."""
    ids: dict[int, bytes] = {}
    for key, record in records.entries.items():
        if isinstance(record, BucketTree) and record.get(K.ID) is not None:
            try:
                ids[decode_uvarint_exact(record.get(K.ID))] = key  # type: ignore[arg-type]
            except FormatError:
                continue
    return ids


def _container_snapshot_keys(ns: BucketTree, sn: str) -> set[bytes]:
    """The snapshot keys the namespace's containers name on ``sn``: active snapshots."""
    containers = ns.bucket(K.CONTAINERS)
    keys = set()
    for record in (containers.entries.values() if containers is not None else ()):
        if isinstance(record, BucketTree) and record.get(K.SNAPSHOTTER) == sn.encode() and record.get(K.SNAPSHOT_KEY):
            keys.add(record.get(K.SNAPSHOT_KEY))
    return keys  # type: ignore[return-value]


def _drop_records_of_lost_snapshotters(meta: BucketTree, snapshotters: set[str], report: RebuildReport) -> None:
    """meta.db records of an overlayfs or native snapshotter whose metadata.db is gone from the
    root name snapshots nothing holds (its store deleted): they go, as every record whose
    backend is gone (kept, they failed every mount: ``missing parent ... bucket: not found``);
    images unpacked there are unpacked again (their snapshot GC labels say where). Records of
    other snapshotters stay as they are: a proxy snapshotter (stargz, nydus, soci) keeps its
    store outside the root, where its snapshots are whole."""
    for ns_name, ns in namespaces(meta):
        buckets = ns.bucket(K.SNAPSHOTS)
        for sn in [k for k, v in (buckets.entries.items() if buckets else ()) if isinstance(v, BucketTree)]:
            if text(sn) in snapshotters or text(sn) not in K.TREE_SNAPSHOTTERS:
                continue
            for key in list(buckets.entries[sn].entries):  # type: ignore[union-attr]
                report.drop("snapshot", f"snapshot {ns_name}/{text(sn)}/{text(key)}", f"{text(sn)}'s metadata.db is gone")
            del buckets.entries[sn]  # type: ignore[union-attr]


def _commit_parents(sn: str, records: BucketTree, report: RebuildReport) -> None:
    """A snapshotter record other snapshots name as parent whose kind is not committed (a
    damaged kind byte): containerd makes children of committed snapshots only, so it was one;
    recorded otherwise, every container and unpack on it failed ("parent ... is not committed
    snapshot") while the chain looked whole."""
    named = {rec.get(K.PARENT) for rec in records.entries.values() if isinstance(rec, BucketTree)}
    for key in sorted(k for k in named if k):
        record = records.entries.get(key)
        if isinstance(record, BucketTree) and not is_committed(record):
            was = K.SNAPSHOT_KINDS.get((record.get(K.KIND) or b"\0")[0], "unknown")
            record.put(K.KIND, bytes([KIND_COMMITTED]))
            report.restore("backend-snapshot", f"{sn}/{text(key)}",
                           f"recorded as {was} though other snapshots are made on it: committed again")


def _kinds_by_role(meta: BucketTree, sn: str, records: BucketTree, report: RebuildReport) -> None:
    """A snapshot whose role says its kind, recorded otherwise (a damaged kind byte): an image
    layer (its meta.db key a chain ID) is committed; a container's writable snapshot recorded
    as committed is active again (its container could not start, "not active or view")."""
    for ns_name, ns in namespaces(meta):
        bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
        containers = ns.bucket(K.CONTAINERS)
        writable = {c.get(K.SNAPSHOT_KEY) for c in (containers.entries.values() if containers else ())
                    if isinstance(c, BucketTree) and c.get(K.SNAPSHOTTER) == sn.encode()}
        for key, rec in (bucket.entries.items() if bucket is not None else ()):
            backend = records.entries.get(rec.get(K.NAME)) if isinstance(rec, BucketTree) else None
            if not isinstance(backend, BucketTree) or backend.get(K.KIND) is None:
                continue
            if K.CHAIN_KEY.fullmatch(text(key)) and not is_committed(backend):
                backend.put(K.KIND, bytes([KIND_COMMITTED]))
                report.restore("backend-snapshot", f"{sn}/{text(rec.get(K.NAME))}",  # type: ignore[union-attr]
                               "an image layer (its key is a chain ID) not recorded as committed: committed again")
            elif key in writable and backend.get(K.KIND) not in (bytes([KIND_ACTIVE]), bytes([KIND_VIEW])):
                backend.put(K.KIND, bytes([KIND_ACTIVE]))
                report.restore("backend-snapshot", f"{sn}/{text(rec.get(K.NAME))}",  # type: ignore[union-attr]
                               f"container {ns_name} writable snapshot recorded as neither active nor a view: active again")


def restore_work_dirs(backends: Mapping[str, BucketTree], target: ContainerdRoot, kept: Mapping[str, set[int]],
                      report: RebuildReport) -> None:
    """An active overlay snapshot kept without its ``work`` directory gets an empty one (mode
    0711, as containerd's overlay makes it): overlayfs mounts the writable layer with it, so
    its container could not start; its data (``fs``) is intact."""
    records = backends.get("overlayfs")
    records = records.bucket(K.V1, K.SNAPSHOTS) if records is not None else None
    for key, record in (records.entries.items() if records is not None else ()):
        sid = backend_id(record) if isinstance(record, BucketTree) else None
        if sid is None or sid not in kept.get("overlayfs", set()) or record.get(K.KIND) != bytes([KIND_ACTIVE]):  # type: ignore[union-attr]
            continue
        directory = target.snapshot_dir("overlayfs", sid)
        work = directory / "work"
        if not (directory / "fs").is_dir() or real_dir(work):
            continue
        if os.path.lexists(work):  # a file or a symlink where overlayfs needs its own directory
            os.unlink(work)
        work.mkdir(mode=0o711)
        os.chmod(work, 0o711)
        report.restore("snapshot-dir", f"overlayfs/snapshots/{sid}/work",
                       f"active snapshot {text(key)} had no work directory: made again (empty)")


def _detach_writable(meta: BucketTree, sn: str, records: BucketTree, alive: Mapping[bytes, int],
                     croot: ContainerdRoot) -> list[Detached]:
    """The writable (not committed) snapshots a container names whose own snapshotter record,
    meta.db record and directory are whole but whose parent chain is not: taken out of both
    trees (as the clean-up would), kept for :func:`reattach`. Deleting them lost a container's
    data when only an image layer below it was lost, which the re-import unpacks again.

    Their records stay in both trees as they are (their parent dangling until :func:`reattach`
    links them again): a rebuild killed before that last step leaves them where a second
    rebuild finds them again. Taken out of the written files, they were lost to that run."""
    aside: list[Detached] = []
    for ns_name, ns in namespaces(meta):
        bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
        containers = ns.bucket(K.CONTAINERS)
        if bucket is None or containers is None:
            continue
        named = {c.get(K.SNAPSHOT_KEY) for c in containers.entries.values()
                 if isinstance(c, BucketTree) and c.get(K.SNAPSHOTTER) == sn.encode()}
        for key in sorted(k for k in named if k):
            record = bucket.entries.get(key)
            if not isinstance(record, BucketTree) or record.get(K.PARENT) is None:
                continue
            backend_key = record.get(K.NAME)
            backend = records.entries.get(backend_key) if backend_key else None
            if not isinstance(backend, BucketTree) or backend_key in alive or is_committed(backend):
                continue
            sid = backend_id(backend)
            directory = croot.snapshot_fs(sn, sid) if sid is not None else None
            if sid is None or directory is None or not directory.is_dir():
                continue
            aside.append(Detached(ns_name, sn, key, backend_key, backend, record, record.get(K.PARENT), sid))  # type: ignore[arg-type]
    return aside


def reattach(meta: BucketTree, backends: Mapping[str, BucketTree], detached: list[Detached],
             report: RebuildReport) -> list[Detached]:
    """Attach each :class:`Detached` writable snapshot to its parent as the re-import made it
    again (the same meta.db key, a chain ID, on a new snapshotter record): its snapshotter
    record points at the new one, the parents index links them, the parent lists it as a child.
    Returns those whose parent was not made again (their container cannot start): their
    records, left dangling in both trees until now, are taken out."""
    lost: list[Detached] = []
    for item in detached:
        bucket = meta.bucket(K.V1, key_bytes(item.namespace), K.SNAPSHOTS, item.snapshotter.encode())
        parent = bucket.entries.get(item.parent) if bucket is not None else None
        records = backends[item.snapshotter].bucket(K.V1, K.SNAPSHOTS)
        parent_backend = records.entries.get(parent.get(K.NAME)) if isinstance(parent, BucketTree) and records else None
        parent_id = backend_id(parent_backend) if isinstance(parent_backend, BucketTree) else None
        own = bucket is not None and _still_detached(bucket, records, item)
        if parent_id is None or not own:
            if own:
                del bucket.entries[item.key]  # type: ignore[union-attr]
                del records.entries[item.backend_key]  # type: ignore[union-attr]
            lost.append(item)
            continue
        item.backend.put(K.PARENT, parent.get(K.NAME))  # type: ignore[union-attr,arg-type]
        records.entries[item.backend_key] = item.backend  # type: ignore[union-attr]
        parents = backends[item.snapshotter].bucket(K.V1, K.PARENTS, create=True)
        write_parent_link(parents, parent_id, item.id, text(item.backend_key))  # type: ignore[arg-type]
        bucket.entries[item.key] = item.record
        bucket.sequence = max(bucket.sequence, backend_name_seq(text(item.backend_key)) or 0)
        add_child(parent, text(item.key))  # type: ignore[arg-type]
        report.restore("snapshot", f"snapshot {item.namespace}/{item.snapshotter}/{text(item.key)}",
                       f"a container's writable layer, attached again to {text(item.parent)} as unpacked anew")
    return lost


def _still_detached(bucket: BucketTree, records: BucketTree | None, item: Detached) -> bool:
    """Whether the records the re-import left under the detached snapshot's keys are still its
    own (nothing else took its meta.db key or its snapshotter key meanwhile)."""
    record = bucket.entries.get(item.key)
    backend = records.entries.get(item.backend_key) if records is not None else None
    return (isinstance(record, BucketTree) and record.get(K.NAME) == item.backend_key
            and isinstance(backend, BucketTree) and backend_id(backend) == item.id)


def unnamed_writable_dirs(croot: ContainerdRoot, kept: Mapping[str, set[int]]) -> dict[str, list[str]]:
    """Per tree snapshotter, the snapshot directories no kept record names that look like a
    writable layer holding files (``fs`` with entries, and ``work`` for overlayfs): where the
    files of a container whose snapshot record was lost (an older snapshotter db put back) are."""
    found: dict[str, list[str]] = {}
    for sn in K.TREE_SNAPSHOTTERS:
        base = croot.snapshots_dir(sn)
        try:
            names = sorted(os.listdir(base), key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
        except OSError:
            continue
        for name in names:
            if name.isdigit() and int(name) in kept.get(sn, set()):
                continue
            overlay = sn == "overlayfs"
            if holds_entries(base / name / "fs" if overlay else base / name) \
                    and (not overlay or (base / name / "work").is_dir()):
                found.setdefault(sn, []).append(name)
    return found


def drop_containers_without_snapshots(meta: BucketTree, report: RebuildReport,
                                      pending: Collection[tuple[str, bytes]] = (), reason: str | None = None,
                                      unnamed_dirs: Mapping[str, list[str]] | None = None) -> None:
    """A container whose snapshot did not survive (its writable layer lost with its directory,
    its record, or a broken link below it) cannot start, and nothing makes that snapshot again:
    its record goes, reported (``verify`` calls it ``missing-container-snapshot``). containerd's
    GC never removes a container, so a rebuilt root kept it, failing to start, and verified
    clean. ``pending``: (namespace, snapshot key) of writable snapshots kept aside for
    :func:`reattach`, whose containers stay for now; ``reason`` words the drop.
    ``unnamed_dirs`` (:func:`unnamed_writable_dirs`): directories that may hold the files of a
    container whose record is gone, named in its drop (a red-team run: "is lost" was said of a
    container whose files sat in such a directory, which the rebuild then set aside unlinked)."""
    for ns_name, ns in namespaces(meta):
        containers = ns.bucket(K.CONTAINERS)
        named = {(c.get(K.SNAPSHOTTER), c.get(K.SNAPSHOT_KEY)) for c in (containers.entries.values() if containers else ())
                 if isinstance(c, BucketTree)}
        for container_id in list(containers.entries) if containers is not None else []:
            record = containers.entries[container_id]
            if not isinstance(record, BucketTree):
                continue
            sn, key = record.get(K.SNAPSHOTTER), record.get(K.SNAPSHOT_KEY)
            if not key:
                continue  # (a container made without a root filesystem)
            snapshots = ns.bucket(K.SNAPSHOTS, sn) if sn else None
            if (ns_name, key) in pending:
                continue
            if (snapshots is not None and not isinstance(snapshots.entries.get(key), BucketTree)
                    and isinstance(snapshots.entries.get(container_id), BucketTree) and (sn, container_id) not in named):
                # its key damaged, its snapshot whole under the key ctr and CRI give it (the
                # container's id) and named by no container: linked again (dropped, the GC
                # deleted the writable layer)
                record.put(K.SNAPSHOT_KEY, container_id)
                named.add((sn, container_id))
                report.restore("container", f"container {ns_name}/{text(container_id)}",
                               f"its snapshot key {text(key)!r} names nothing; its snapshot {text(container_id)} "
                               "(the container's id) is whole: linked again")
                continue
            if snapshots is None or not isinstance(snapshots.entries.get(key), BucketTree):
                del containers.entries[container_id]
                why = reason or f"its snapshot {text(key)} ({text(sn or b'')}) is lost: it could not start"
                candidates = (unnamed_dirs or {}).get(text(sn or b""), [])
                if candidates and reason is None:
                    why += (f"; its files may be in {text(sn or b'')} snapshots/{', snapshots/'.join(candidates)}, "
                            "a writable layer no record names (in place it goes to the quarantine, a new root "
                            "leaves it in the source)")
                report.drop("container", f"container {ns_name}/{text(container_id)}", why)


def _writable_with_files(croot: ContainerdRoot, sn: str, snapshot_id: int, record: object) -> str:
    """What to say of a writable snapshot no record names that holds files: a container's
    layer, a removed container's awaiting GC or one whose record an older meta.db lacks (they
    cannot be told apart; a red-team run), and where its files are now."""
    if not isinstance(record, BucketTree) or is_committed(record):
        return ""
    if not holds_entries(croot.snapshot_fs(sn, snapshot_id)):
        return ""
    return ("; it is writable and holds files (a removed container's layer, or one whose record an older "
            "meta.db lacks): a new root leaves it out (the source keeps it), in place it goes to the quarantine")


def hold_orphan_writable_snapshots(meta: BucketTree, backends: Mapping[str, BucketTree], report: RebuildReport,
                                   lost_in: Callable[[str], bool]) -> None:
    """Where damage may have taken container records (``lost_in(namespace)``), keep the
    writable snapshots no container names from containerd's GC (which deletes an active
    snapshot nothing holds): each is labelled ``containerd.io/gc.root`` and reported. A
    container record the damage emptied (no snapshot key, no spec: it cannot start) goes, and
    its snapshot is held the same way (a rebuild kept such a record, and the first GC deleted
    the writable layer it no longer named: a red-team run)."""
    for ns_name, ns in namespaces(meta):
        if not lost_in(ns_name):
            continue
        containers = ns.bucket(K.CONTAINERS)
        for container_id in list(containers.entries) if containers is not None else []:
            record = containers.entries[container_id]
            if isinstance(record, BucketTree) and record.get(K.SNAPSHOT_KEY) is None and record.get(b"spec") is None:
                del containers.entries[container_id]
                report.drop("container", f"container {ns_name}/{text(container_id)}",
                            "its record lost its snapshot key and spec to the damage: it could not start")
        held = {(c.get(K.SNAPSHOTTER), c.get(K.SNAPSHOT_KEY)) for c in (containers.entries.values() if containers else ())
                if isinstance(c, BucketTree)}
        for sn, backend in backends.items():
            bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
            records = backend.bucket(K.V1, K.SNAPSHOTS)
            if bucket is None or records is None:
                continue
            for key, rec in bucket.entries.items():
                if not isinstance(rec, BucketTree) or (sn.encode(), key) in held or _UNPACK_KEY.match(key):
                    continue  # (an unpack's scratch snapshot, ``extract-<n> <chain>``: no one's data)
                name = rec.get(K.NAME)
                backend_rec = records.entries.get(name) if name else None
                if not isinstance(backend_rec, BucketTree) or is_committed(backend_rec):
                    continue
                labels = rec.bucket(K.LABELS, create=True)
                assert labels is not None
                if key_bytes(GC_ROOT) in labels.entries:
                    continue
                labels.put(key_bytes(GC_ROOT), key_bytes(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
                report.restore("snapshot", f"snapshot {ns_name}/{sn}/{text(key)}",
                               f"a writable snapshot no container names (its container's record lost to the damage?): "
                               f"labelled {GC_ROOT} so containerd's GC keeps it (ctr -n {ns_name} snapshots "
                               f"--snapshotter {sn} mounts / rm it once its data is saved)")


def _unnamed_ancestors(records: BucketTree, alive: Mapping[bytes, int], named: set[bytes]) -> set[bytes]:
    """Whole backend snapshots no meta.db record names that are parents (at any depth) of one a
    record names: the record of a layer below a container's writable snapshot lost from a meta.db
    that reads whole (containerd still mounts and starts the container; cleaning the layer up
    dropped the container and its data, a red-team run). Their records are written again."""
    needed: set[bytes] = set()
    for name in named:
        record = records.entries.get(name) if name else None
        parent = record.get(K.PARENT) if isinstance(record, BucketTree) else None
        while parent and parent in alive and parent not in named and parent not in needed:
            needed.add(parent)
            above = records.entries.get(parent)
            parent = above.get(K.PARENT) if isinstance(above, BucketTree) else None
    return needed


def restore_lost_records(meta: BucketTree, sn: str, records: BucketTree, alive: Mapping[bytes, int],
                         report: RebuildReport, lost_in: Callable[[str], bool] = lambda _ns: True) -> None:
    """Write again the meta.db records a damaged meta.db lost of snapshots its snapshotter still
    holds whole (a lost leaf of ``snapshots/<sn>``, one flipped bit in a key): each backend
    name ``<ns>/<seq>/<key>`` says the namespace and the key, the backend record the parent,
    the labels it inherited and the times. Cleaning them up instead (what containerd's GC does
    to a backend snapshot no record names) deleted the image layers of a node whose layer
    blobs are discarded and the writable layers of its containers. A snapshot is restored into
    its namespace when the namespace survived and may have lost snapshot records (``lost_in``)
    or when it is a parent of a snapshot a record names (:func:`_unnamed_ancestors`), and never
    over a record of the same key that names another whole snapshot (one left
    without a name, or naming nothing, is written again: it broke every chain above it)."""
    ns_buckets = dict(namespaces(meta))
    named: set[bytes] = set()
    for ns in ns_buckets.values():
        bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
        if bucket is not None:
            named |= {rec.get(K.NAME) for rec in bucket.entries.values() if isinstance(rec, BucketTree)}  # type: ignore[misc]
    needed = _unnamed_ancestors(records, alive, named)
    restored: dict[bytes, tuple[BucketTree, bytes, str | None]] = {}  # backend key -> (bucket, key, parent key)
    for backend_key in sorted(alive):
        parts = text(backend_key).split("/", 2)
        if backend_key in named or len(parts) != 3 or not parts[1].isdigit():
            continue
        if not lost_in(parts[0]) and backend_key not in needed:
            continue
        ns_name, _, key = parts
        try:
            found = read_backend_snapshot(records.entries[backend_key], text(backend_key))  # type: ignore[arg-type]
        except FormatError:
            continue
        parent = None
        if found.parent is not None:
            parent_parts = found.parent.split("/", 2)
            if len(parent_parts) != 3 or parent_parts[0] != ns_name:
                continue  # (containerd links a snapshot to its own namespace's parent only)
            parent = parent_parts[2]
        if ns_name not in ns_buckets:
            # the damage took the namespace itself (meta.db cut short, its v1 page lost): the
            # snapshotter's keys still name it, and what it held comes back there (a key whose
            # namespace a flipped bit changed names a parent of another namespace: skipped
            # above, it makes no namespace that never was)
            if not is_namespace(ns_name):
                continue
            ns_buckets[ns_name] = _restored_namespace(meta, ns_name, report)
        bucket = ns_buckets[ns_name].bucket(K.SNAPSHOTS, sn.encode(), create=True)
        assert bucket is not None
        existing = bucket.entries.get(key_bytes(key))
        if isinstance(existing, BucketTree) and existing.get(K.NAME) in alive:
            continue  # that key names another whole backend snapshot: the record stays as it is
        # (a record the damage left without a name, or naming nothing, breaks every chain
        # above it: the snapshotter's record says what it was)
        children = existing.bucket(K.CHILDREN) if isinstance(existing, BucketTree) else None
        bucket.entries.pop(key_bytes(key), None)  # (nothing of a broken record is trusted...)
        record = bucket.bucket(key_bytes(key), create=True)
        assert record is not None
        if children is not None:  # (...but the links of its children, which are kept)
            record.entries[K.CHILDREN] = children
        # (a writable one whose container record the damage took too is held by
        # :func:`hold_orphan_writable_snapshots`, with those whose records were kept)
        write_snapshot(record, SnapshotRecord(ns_name, sn, key, text(backend_key), parent, labels=found.labels,
                                              created_at=found.created_at, updated_at=found.updated_at))
        restored[backend_key] = (bucket, key_bytes(key), parent)
        report.restore("snapshot", f"snapshot {ns_name}/{sn}/{key}",
                       f"meta.db record lost; written again from snapshotter record {text(backend_key)}")
    for bucket, key, parent in restored.values():  # each parent lists its restored children
        parent_record = bucket.entries.get(key_bytes(parent)) if parent is not None else None
        if isinstance(parent_record, BucketTree):
            add_child(parent_record, text(key))
    _hold_unreferenced_restored(ns_buckets, sn, restored, records, report)


def _hold_unreferenced_restored(ns_buckets: Mapping[str, BucketTree], sn: str,
                                restored: Mapping[bytes, tuple[BucketTree, bytes, str | None]],
                                records: BucketTree, report: RebuildReport) -> None:
    """A restored record has the labels the snapshotter kept (the inherited ones), not meta.db's:
    a ``containerd.io/gc.root`` that held it is gone (``ctr snapshots prepare`` and ``commit``
    label theirs; so do tools keeping a snapshot), and containerd's first GC deleted a whole
    restored chain and the writable snapshot on it (a red-team run). Each restored snapshot that
    nothing left references (an image config's ``gc.ref.snapshot`` label, a container, a lease,
    a ``gc.root`` of a record above it) is held with ``gc.root`` and reported: kept, not lost.
    Not an image layer (a committed snapshot named by its chain ID: the re-import labels it
    again for the image that has it, and GC would have taken it otherwise), nor an unpack's
    scratch snapshot."""
    by_namespace: dict[str, list[bytes]] = {}
    for backend_key, (_bucket, key, _parent) in restored.items():
        by_namespace.setdefault(text(backend_key).split("/", 1)[0], []).append(key)
    for ns_name, keys in by_namespace.items():
        ns = ns_buckets[ns_name]
        bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
        if bucket is None:
            continue
        kept = _referenced_snapshots(ns, sn, bucket)
        unheld: dict[bytes, BucketTree] = {}
        for key in keys:
            record = bucket.entries.get(key)
            if key in kept or not isinstance(record, BucketTree) or _UNPACK_KEY.match(key):
                continue
            backend = records.entries.get(record.get(K.NAME) or b"")
            if _CHAIN_KEY.fullmatch(text(key)) and isinstance(backend, BucketTree) and is_committed(backend):
                continue
            unheld[key] = record
        for key, record in sorted(unheld.items()):
            # each one, as ``ctr snapshots`` labels each: held by the top only, the chain
            # below went with it once the operator removed that (a red-team run)
            labels = record.bucket(K.LABELS, create=True)
            assert labels is not None
            labels.put(key_bytes(GC_ROOT), key_bytes(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
            report.restore("snapshot", f"snapshot {ns_name}/{sn}/{text(key)}",
                           f"its record was written again without meta.db's labels, and nothing references it: "
                           f"labelled {GC_ROOT} so containerd's GC keeps it (ctr -n {ns_name} snapshots "
                           f"--snapshotter {sn} rm it if it is not wanted)")


def _referenced_snapshots(ns: BucketTree, sn: str, bucket: BucketTree) -> set[bytes]:
    """Keys of ``sn``'s snapshots in ``ns`` that containerd's GC keeps: those an image config's
    ``gc.ref.snapshot.<sn>`` label, a container, a lease or their own ``gc.root`` references,
    and every parent below them."""
    roots: set[bytes] = set()
    label = key_bytes(K.LABEL_GC_SNAPSHOT + sn)
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    for record in blobs.entries.values() if blobs is not None else ():
        value = (record.bucket(K.LABELS) or BucketTree()).entries.get(label) if isinstance(record, BucketTree) else None
        if isinstance(value, bytes):
            roots.add(value)
    containers = ns.bucket(K.CONTAINERS)
    for record in containers.entries.values() if containers is not None else ():
        if isinstance(record, BucketTree) and record.get(K.SNAPSHOTTER) == sn.encode() and record.get(K.SNAPSHOT_KEY):
            roots.add(record.get(K.SNAPSHOT_KEY))  # type: ignore[arg-type]
    leases = ns.bucket(K.LEASES)
    for lease in leases.entries.values() if leases is not None else ():
        held = lease.bucket(K.SNAPSHOTS, sn.encode()) if isinstance(lease, BucketTree) else None
        roots |= set(held.entries) if held is not None else set()
    for key, record in bucket.entries.items():
        if isinstance(record, BucketTree) and key_bytes(GC_ROOT) in (record.bucket(K.LABELS) or BucketTree()).entries:
            roots.add(key)
    kept: set[bytes] = set()
    for key in roots:
        while key is not None and key not in kept:
            kept.add(key)
            record = bucket.entries.get(key)
            key = record.get(K.PARENT) if isinstance(record, BucketTree) else None  # type: ignore[assignment]
    return kept


def _restored_namespace(meta: BucketTree, name: str, report: RebuildReport) -> BucketTree:
    """A namespace bucket made again under ``v1`` (``v1`` too when gone: the schema version is
    written with the stores, :func:`~ctrconv.recovery.output.ensure_schema_version`)."""
    bucket = meta.bucket(K.V1, name.encode(), create=True)
    assert bucket is not None
    report.restore("namespace", name, "meta.db lost it; its snapshotter's records name it")
    return bucket


#: the label that makes containerd's GC keep an object nothing else references
GC_ROOT = "containerd.io/gc.root"
#: containerd's unpacker names the active snapshot it applies a layer into
#: ``extract-<unique> <chain ID>`` (``snapshots.UnpackKeyFormat``)
_UNPACK_KEY = re.compile(rb"extract-\S+ sha256:[0-9a-f]{64}\Z")


def _alive_backend_snapshots(sn: str, records: BucketTree, croot: ContainerdRoot,
                             distrusted: set[bytes]) -> dict[bytes, int]:
    """Backend key -> id of the snapshotter records with an id, a directory and a kept parent."""
    candidates = {k: r for k, r in records.entries.items() if isinstance(r, BucketTree)}

    def ok(key: bytes, rec: BucketTree) -> bool:
        sid = backend_id(rec)
        if sid is None or key in distrusted:
            return False
        directory = croot.snapshot_fs(sn, sid)
        if directory is not None and not directory.is_dir() and not has_own_directory(
                sn, kind_name(rec.get(K.KIND)), name_text(rec.get(K.PARENT))):
            return True  # (a native view: its parent's directory, kept with the parent)
        return directory is not None and directory.is_dir()

    return {key: backend_id(candidates[key]) for key in whole_chains(candidates, ok)}  # type: ignore[misc]


def _clean_namespace_snapshots(where: str, bucket: BucketTree, alive: Mapping[bytes, int],
                               report: RebuildReport, detached: Collection[bytes] = ()) -> set[bytes]:
    """One namespace's records of one snapshotter: those whose backend snapshot is alive and
    whose parent stays are kept (children links to dropped ones removed), and the ``detached``
    keys as they are; the rest dropped; the sequence is set above every backend name in use.
    Returns the backend keys named."""
    recs = {k: r for k, r in bucket.entries.items() if isinstance(r, BucketTree)}
    keep = whole_chains(recs, lambda _key, rec: rec.get(K.NAME) in alive) | set(detached)
    referenced: set[bytes] = set()
    top = bucket.sequence
    for key in list(bucket.entries):
        if key not in keep:
            del bucket.entries[key]
            report.drop("snapshot", f"snapshot {where}/{text(key)}", "backend record, parent or directory missing")
            continue
        rec = bucket.entries[key]
        referenced.add(rec.get(K.NAME))  # type: ignore[union-attr,arg-type]
        children = rec.bucket(K.CHILDREN)  # type: ignore[union-attr]
        for child in list(children.entries) if children is not None else []:
            if child not in keep:
                del children.entries[child]  # type: ignore[union-attr]
        seq = backend_name_seq(text(rec.get(K.NAME) or b""))  # type: ignore[union-attr]
        if seq is not None:
            top = max(top, seq)
    bucket.sequence = top
    return referenced


def _rewrite_parents(backend: BucketTree, records: BucketTree, kept: Mapping[bytes, int]) -> None:
    """The snapshotter's ``v1/parents`` index, made again from the kept records."""
    v1 = backend.bucket(K.V1)
    assert v1 is not None
    old = v1.bucket(K.PARENTS)
    parents = BucketTree(sequence=old.sequence if old is not None else 0)
    for key, rec in records.entries.items():
        parent = rec.get(K.PARENT)  # type: ignore[union-attr]
        if parent is not None and key in kept:  # (a detached snapshot is linked when attached)
            write_parent_link(parents, kept[parent], kept[key], text(key))
    v1.entries[K.PARENTS] = parents


def snapshots_unlike_their_layers(
    meta: BucketTree, backends: dict[str, BucketTree], croot: ContainerdRoot, content: ContentStore,
    report: RebuildReport, *, scratch: Path,
) -> dict[str, set[bytes]]:
    """Backend keys of snapshots whose tree differs from their layer, like ``verify --deep``.

    Every snapshot an image's host platform unpacks is applied again in a scratch directory
    under ``scratch`` (the root being written) and compared entry by entry; one that differs (a
    deleted or changed file, a lost xattr) is not reused, so it and everything above it are
    unpacked again. Snapshots no image explains (a container's, say) are left as they are.
    """
    bad: dict[str, set[bytes]] = {}
    checked: set[Hashable] = set()
    for sn, backend in backends.items():
        records = backend.bucket(K.V1, K.SNAPSHOTS)
        if records is None:
            continue
        for ns_name, ns in namespaces(meta):
            bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
            if bucket is not None:
                dirs = _snapshot_dirs(sn, bucket, records, croot)
                _compare_namespace(f"{ns_name}/{sn}", sn, ns, dirs, content, bad, checked, report, scratch)
    return bad


def _snapshot_dirs(sn: str, bucket: BucketTree, records: BucketTree, croot: ContainerdRoot) -> dict[str, tuple[bytes, Path]]:
    """chain key -> (backend key, tree directory) of one namespace's snapshots of ``sn``."""
    dirs: dict[str, tuple[bytes, Path]] = {}
    for chain, rec in bucket.entries.items():
        name = rec.get(K.NAME) if isinstance(rec, BucketTree) else None
        backend_rec = records.entries.get(name) if name else None
        sid = backend_id(backend_rec) if isinstance(backend_rec, BucketTree) else None
        fs = croot.snapshot_fs(sn, sid) if sid is not None else None
        if name is not None and fs is not None:
            dirs[text(chain)] = (name, fs)
    return dirs


def _compare_namespace(where: str, sn: str, ns: BucketTree, dirs: dict[str, tuple[bytes, Path]], content: ContentStore,
                       bad: dict[str, set[bytes]], checked: set[Hashable], report: RebuildReport, scratch: Path) -> None:
    """Compare the unpacked chains of one namespace's images; add what differs to ``bad``."""
    from ctrconv.verify.deep import compare_chain, unpacked_layer_chains

    def fs_of(chain: str) -> Path | None:
        found = dirs.get(chain)
        if found is None or found[0] in bad.get(sn, set()) or not found[1].is_dir():
            return None
        return found[1]

    for desc in image_descriptors(ns):
        for layers, diff_ids, runs_here in unpacked_layer_chains(content, desc):
            # scratch beside the root being written, not in $TMPDIR (often a small
            # tmpfs): one layer at a time, removed right after
            walk = compare_chain(content, sn, layers, diff_ids, fs_of, checked,
                                 lambda chain: (sn, dirs[chain][0]), scratch)
            for chain, layer, _, problems in _refusing_when_full(walk):
                if problems:
                    bad.setdefault(sn, set()).add(dirs[chain][0])
                    again = "unpacked again" if runs_here else "another platform's: unpacked again when it is used"
                    report.drop("snapshot-tree", f"snapshot {where}/{chain}",
                                f"differs from layer {layer['digest']} ({problems[0]}): {again}")
                    break  # everything above it is unpacked again anyway


T = TypeVar("T")


def _refusing_when_full(walk: Iterator[T]) -> Iterator[T]:
    """The comparisons of a chain; a scratch filesystem too full to apply a layer stops the
    rebuild before it writes anything (a snapshot that could not be compared was taken for
    one that differs, and deleted: on a node that keeps no layer blobs, the only copy)."""
    try:
        yield from walk
    except NoSpaceError as exc:
        raise NoSpaceError(f"{exc}; nothing was changed",
                           hint="free space beside the root, or use --trust-snapshots to reuse the snapshots "
                                "without comparing them with their layers") from exc


def meta_db_predates_snapshots(meta: BucketTree, backends: Mapping[str, BucketTree], croot: ContainerdRoot,
                               report: RebuildReport) -> set[tuple[bytes, ...]]:
    """The meta.db bucket paths whose records an older meta.db lacks: a namespace whose
    snapshotter holds committed snapshots, or writable ones with files, that meta.db never
    issued (:mod:`ctrconv.containerd.snapshotkeys`: meta.db was put back from an older copy).
    Its snapshot records are restored from the snapshotter's, and its content and image records
    re-derived from the blobs on disk, as for records damage took; containers cannot be (their
    specs were in meta.db only): their writable layers are restored and held. One without files
    (a write stopped between the two commits) is no such sign (GC removes it). Said as damage of
    meta.db in the report. Before, a rebuild found nothing to repair and containerd's next
    garbage collection deleted a container's files (a red-team run)."""
    from ctrconv.containerd.snapshotkeys import holds_work, issued_after

    lost: set[tuple[bytes, ...]] = set()
    for sn, backend in sorted(backends.items()):
        records = backend.bucket(K.V1, K.SNAPSHOTS)
        if records is None:
            continue
        known: set[str] = set()
        for _, ns in namespaces(meta):
            bucket = ns.bucket(K.SNAPSHOTS, key_bytes(sn))
            if bucket is not None:
                known |= {text(r.get(K.NAME)) for r in bucket.entries.values()
                          if isinstance(r, BucketTree) and r.get(K.NAME)}
        found = []
        for backend_key, record in records.entries.items():
            if isinstance(record, BucketTree):
                try:
                    found.append(read_backend_snapshot(record, text(backend_key), times=False))
                except FormatError:
                    continue

        def sequence(namespace: str, sn: str = sn) -> int:
            bucket = meta.bucket(K.V1, key_bytes(namespace), K.SNAPSHOTS, key_bytes(sn))
            return 0 if bucket is None else bucket.sequence

        for snapshot in issued_after(found, sequence, known):
            if not holds_work(snapshot.kind, croot.snapshot_fs(sn, snapshot.id)):
                continue
            namespace = snapshot.key.split("/", 1)[0]
            path = (K.V1, key_bytes(namespace))
            if not {(*path, K.SNAPSHOTS), (*path, K.CONTENT), (*path, K.IMAGES)} <= lost:
                lost |= {(*path, K.SNAPSHOTS), (*path, K.CONTENT), (*path, K.IMAGES)}
                entry = report.salvage.setdefault(str(croot.meta_db), {"source": "meta", "damage": []})
                entry.setdefault("damage", []).append(
                    f"meta.db is older than {sn}/metadata.db: snapshot {snapshot.key} was made after it (above "
                    f"namespace {namespace}'s sequence {sequence(namespace)}); the namespace's snapshot, content and "
                    "image records are restored from what the root holds")
    return lost
