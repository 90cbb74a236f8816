"""Rebuild a damaged containerd root, in place (every replaced file backed up) or into a new root.

Two phases:

1. **Repair the stores.** Salvage meta.db and each snapshotter metadata.db
   (:mod:`ctrconv.bolt.salvage`); hash every blob and quarantine corrupt ones; drop records
   that point at missing or corrupt content, snapshot records whose backend or directory is
   gone (and everything above them), and stale ingests; keep containers, leases, namespace
   labels and sandboxes byte for byte; re-derive images whose records were lost from the
   manifests and indexes found among the blobs; set every bucket sequence above the ids in
   use; write fresh bolt files.
2. **Re-derive what the records imply.** Import every image from the repaired root into
   itself: GC labels are restored, intact snapshots reused, missing ones unpacked again.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable

from ctrconv import tempfiles
from ctrconv.commitpoint import committing
from ctrconv.bolt.salvage import RootHints, SalvageResult, salvage
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import (
    ImageRecord,
    Target,
    backend_name_seq,
    go_time,
    newest_update,
    read_backend_id,
    read_blob_size,
    read_map,
    read_schema_version,
    read_target,
    target_digest,
    write_blob_size,
    write_image,
    write_parent_link,
    write_schema_version,
)
from ctrconv.containerd.content import ContentStore
from ctrconv.containerd.locking import exclusive_lock, is_locked, shared_lock
from ctrconv.containerd.rootlock import describe_holders
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, FormatError, InvalidDigestError, LockedError, UsageError
from ctrconv.oci import platform as plat
from ctrconv.pipeline.completeness import Assessment, assess, namespace_lookups
from ctrconv.pipeline.plan import PlannedManifest, plan_image
from ctrconv.recovery.derive import derived_name, sniff_document, top_level
from ctrconv.streams import CHUNK, fsync_dir
from ctrconv.verify.blobs import hash_blobs

META_DB_MODE = 0o644
SNAPSHOTTER_DB_MODE = 0o600
QUARANTINE = "ctrconv-quarantine"


@dataclass
class RebuildReport:
    root: str
    output: str
    salvage: dict[str, dict[str, Any]] = field(default_factory=dict)
    corrupt_blobs: list[dict[str, str]] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)
    snapshots_reused: int = 0
    snapshots_unpacked: int = 0
    backups: list[str] = field(default_factory=list)
    #: what containerd itself would remove (unreferenced records, orphan directories): done, not damage
    cleaned: list[dict[str, str]] = field(default_factory=list)
    #: in place, the root verified clean first: nothing was written
    healthy: bool = False

    def drop(self, kind: str, obj: str, reason: str) -> None:
        self.dropped.append({"kind": kind, "object": obj, "reason": reason})

    def clean(self, kind: str, obj: str, reason: str) -> None:
        self.cleaned.append({"kind": kind, "object": obj, "reason": reason})

    @property
    def damage_found(self) -> bool:
        """Anything repaired: salvage damage, corrupt blobs, dropped records, re-derived
        images or snapshots unpacked again."""
        return bool(
            any(info.get("damage") for info in self.salvage.values())
            or self.corrupt_blobs or self.dropped or self.snapshots_unpacked
            or any(i["origin"] != "kept" for i in self.images)
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["damage_found"] = self.damage_found
        return out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def rebuild_root(
    root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    names: dict[str, str] | None = None,
    unpack: bool = True,
    jobs: int | None = None,
    progress: Callable[[int], object] | None = None,
    trust_snapshots: bool = False,
    link: bool = False,
) -> RebuildReport:
    """Rebuild ``root`` in place, or into ``output`` (the source is then never written).

    Into ``output`` blobs are copied (reflinked where the filesystem can), so the new root
    shares no inode with the damaged one; ``link`` hard-links them instead.

    Snapshots are reused only where their tree matches their layer (compared like
    ``verify --deep``), unless ``trust_snapshots``: then any whole chain is reused as it is.
    """
    croot = ContainerdRoot(root)
    if not croot.path.is_dir():
        raise UsageError(f"containerd root {croot.path} does not exist")
    if not croot.content_dir.is_dir() and not croot.meta_db.exists():
        raise UsageError(f"{croot.path} is not a containerd root")
    in_place = output is None
    target = ContainerdRoot(croot.path if in_place else output)
    if not in_place:
        if target.path.exists() and any(target.path.iterdir()):
            raise UsageError(f"output {target.path} exists and is not empty")
        if target.path.resolve() == croot.path.resolve():
            raise UsageError("output must differ from the root (omit -o to rebuild in place)")
    names = {str(Digest.parse(d)): ref for d, ref in (names or {}).items()}
    report = RebuildReport(str(croot.path), str(target.path))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

    if in_place:
        if not names and _healthy(croot, jobs, progress, deep=not trust_snapshots):
            # a healthy root is left exactly as it is: no backup, no rewrite, no re-import
            report.healthy = True
            return report
        _rebuild_into(croot, target, True, names, unpack, jobs, progress, report, stamp, trust_snapshots, link)
        return report
    # A new root is built under a temporary name beside it and renamed at the end, so an
    # interrupted rebuild leaves no half-made root behind.
    final = target.path
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfiles.temp_dir(final.parent, f".{final.name}.ctrconv-")
    try:
        _rebuild_into(croot, ContainerdRoot(scratch), False, names, unpack, jobs, progress, report, stamp,
                      trust_snapshots, link)
        if final.exists():
            final.rmdir()  # checked empty above
        with committing():  # the new root appears: a signal from here on does not undo it
            os.rename(scratch, final)
        tempfiles.forget(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        tempfiles.forget(scratch)
        raise
    return report


def _healthy(croot: ContainerdRoot, jobs: int | None, progress, *, deep: bool) -> bool:
    """Nothing to repair: ``verify`` (``--deep`` unless snapshots are trusted) finds no problem
    in any namespace. An image that lost its snapshots (to damage, or to a rebuild killed after
    writing meta.db) still names them in its config's GC label, which verify reports."""
    from ctrconv.verify.root import verify_root

    if not croot.meta_db.is_file() or croot.is_locked():
        return False
    return verify_root(croot.path, None, jobs=jobs, progress=progress, deep=deep).ok


def _rebuild_into(
    croot: ContainerdRoot,
    target: ContainerdRoot,
    in_place: bool,
    names: dict[str, str],
    unpack: bool,
    jobs: int | None,
    progress: Callable[[int], object] | None,
    report: RebuildReport,
    stamp: str,
    trust_snapshots: bool = False,
    link: bool = False,
) -> None:
    """Both phases, reading ``croot`` and writing ``target`` (the same root when in place)."""
    bolt_files = [croot.meta_db] + [croot.snapshotter_db(sn) for sn in croot.snapshotters_on_disk()]
    for path in bolt_files:
        if path.exists() and is_locked(path):
            raise LockedError(f"{path} is locked by {describe_holders(path)}: stop it before rebuilding")

    with ExitStack() as locks:
        for path in bolt_files:
            if path.exists() and path.stat().st_size:
                locks.enter_context(exclusive_lock(path) if in_place else shared_lock(path))
        meta, meta_salvage = _salvage(croot.meta_db, report)
        # a snapshotter directory without a metadata.db (containerd makes the directories of
        # plugins that then fail to start, btrfs on ext4 say) has nothing to salvage
        backends = {sn: _salvage(croot.snapshotter_db(sn), report) for sn in croot.snapshotters_on_disk()
                    if croot.snapshotter_db(sn).exists()}
        good = _check_content(croot, target, in_place, stamp, report, jobs, progress, link)
        orphaned = _clean_meta(meta, good, report)
        backend_trees = {sn: t for sn, (t, _) in backends.items()}
        # the target's content store holds exactly the good blobs (corrupt ones were
        # quarantined in place, or left out of a new root)
        distrusted = {} if trust_snapshots else _snapshots_unlike_their_layers(
            meta, backend_trees, croot, target.content, report, scratch=target.path)
        kept_backends = _clean_snapshots(meta, backend_trees, croot, report, distrusted)
        if not unpack:
            # with an unpack, labels of lost snapshots stay: they say the image was unpacked,
            # so it is unpacked again (and labelled anew), even after an interrupted rebuild
            _prune_dangling_labels(meta, report)
        _derive_images(meta, good, target.content, names, report, orphaned)
        _drop_incomplete_images(meta, target.content, report)
        if not in_place:
            target.path.mkdir(parents=True, exist_ok=True)
            _copy_snapshot_dirs(croot, target, kept_backends)
            _copy_ingests(croot, target)
        _ensure_schema_version(meta, croot)
        # Crash order: meta.db first (it only drops references), then the snapshotter dbs (a
        # backend record meta.db no longer names is garbage containerd's GC collects), and
        # only then the directories no record keeps.
        # the commit point in place: from the new meta.db on, a signal does not undo the
        # rebuild (into a new root it is the final rename)
        with committing() if in_place else nullcontext():
            _write(target.meta_db, meta, META_DB_MODE, meta_salvage.page_size if meta_salvage else None,
                   _synced_freelist(meta_salvage, meta), in_place, stamp, report)
        for sn, (tree, res) in backends.items():
            if res is None and not tree.value_count():
                continue  # no db and nothing to keep (containerd makes one when it needs it)
            target.snapshotter_dir(sn).mkdir(mode=0o700, parents=True, exist_ok=True)
            target.snapshots_dir(sn).mkdir(mode=0o700, exist_ok=True)
            _write(target.snapshotter_db(sn), tree, SNAPSHOTTER_DB_MODE, res.page_size if res else None, True, in_place, stamp, report)
        if in_place:
            _remove_unkept_snapshot_dirs(croot, kept_backends, report)

    report.snapshots_reused = sum(len(ids) for ids in kept_backends.values())
    # An intact meta.db says what each namespace holds; only a damaged one (records may be
    # lost) lets a namespace take blobs on disk that it has no record of.
    intact = bool(meta_salvage) and not meta_salvage.damage and meta_salvage.source.startswith("meta ")
    _reimport(target, meta, unpack, report, trust_records=intact)


# -- phase 1 ------------------------------------------------------------------------------


def _synced_freelist(result: SalvageResult | None, meta: BucketTree) -> bool:
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


#: plugin directory only containerd 2.x creates (docs/containerd-versions.md)
_SANDBOX_CONTROLLER_DIR = "io.containerd.sandbox.controller.v1.shim"


def _ensure_schema_version(meta: BucketTree, croot: ContainerdRoot) -> None:
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


#: buckets containerd keeps in a namespace (``v1/<ns>/...``) and a snapshotter db keeps in ``v1``
_NAMESPACE_BUCKETS = {K.IMAGES, K.CONTENT, K.SNAPSHOTS, K.LEASES, b"containers", b"sandboxes"}
_SNAPSHOTTER_BUCKETS = {K.SNAPSHOTS, K.PARENTS}


def containerd_shape(tree: BucketTree) -> int:
    """How containerd-like a candidate tree is: +1 for each ``v1`` child that is shaped like a
    namespace (or like a snapshotter's ``snapshots``/``parents``), -1 for each that is not (an
    old root whose ``v1`` pointer lands on a page reused for another tree)."""
    v1 = tree.bucket(K.V1)
    if v1 is None:
        return 0
    score = 0
    for key, child in v1.entries.items():
        if not isinstance(child, BucketTree):
            continue
        if key in _SNAPSHOTTER_BUCKETS:
            score += 1
        elif child.entries and any(isinstance(v, BucketTree) and k in _NAMESPACE_BUCKETS for k, v in child.entries.items()):
            score += 1
        else:
            score -= 1
    return score


CONTAINERD_ROOT_HINTS = RootHints(plausibility=containerd_shape, recency=newest_update)


def _salvage(path: Path, report: RebuildReport) -> tuple[BucketTree, SalvageResult | None]:
    if not path.exists() or path.stat().st_size == 0:
        report.salvage[str(path)] = {"source": "missing", "damage": []}
        return BucketTree(), None
    try:
        result = salvage(path, hints=CONTAINERD_ROOT_HINTS)
    except CtrconvError as exc:
        report.salvage[str(path)] = {"source": "unreadable", "damage": [str(exc)]}
        return BucketTree(), None
    report.salvage[str(path)] = {
        "source": result.source,
        "damage": [str(d) for d in result.damage],
        "backfilled": ["/".join(_text(p) for p in b) for b in result.backfilled],
    }
    return result.tree, result


def _check_content(croot, target, in_place, stamp, report, jobs, progress, link: bool = False) -> dict[str, int]:
    """Hash every blob once; quarantine (in place) or leave out (new root) corrupt ones.

    For a new root each blob is copied (a reflink where the filesystem offers one) with the
    hash computed while the bytes flow; with ``link`` it is hard-linked when the filesystems
    allow (then hashed in parallel). One read either way. Returns the good blobs' sizes.
    """
    content = croot.content
    blobs = list(content.walk())
    to_hash = blobs
    copies: list[tuple[Digest, Path, Path]] = []
    if not in_place:
        to_hash = []
        for digest, path in blobs:
            dest = target.content_dir / "blobs" / digest.algorithm / digest.hex
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not link:
                copies.append((digest, path, dest))
                continue
            try:
                os.link(path, dest)
                to_hash.append((digest, path))
            except OSError:
                copies.append((digest, path, dest))
    results = hash_blobs(to_hash, jobs=jobs, progress=progress)
    results += [_copy_hashing(digest, path, dest, progress) for digest, path, dest in copies]
    good: dict[str, int] = {}
    for digest, actual, size in results:
        if actual == digest.hex:
            good[str(digest)] = size
            continue
        report.corrupt_blobs.append({"digest": str(digest), "reason": "unreadable" if actual is None else f"hashes to {digest.algorithm}:{actual}"})
        if in_place:
            dest = croot.path / QUARANTINE / stamp / digest.algorithm / digest.hex
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest = dest.with_name(f"{dest.name}.{time.time_ns()}")
            os.replace(content.blob_path(digest), dest)
            report.backups.append(str(dest))
        else:
            (target.content_dir / "blobs" / digest.algorithm / digest.hex).unlink(missing_ok=True)
    return good


#: ioctl FICLONE (linux/fs.h): make ``dest`` share ``src``'s extents
_FICLONE = 0x40049409


def _reflink(src_fd: int, dest_fd: int) -> bool:
    """Clone the whole file where the filesystem can; False elsewhere (then it is copied)."""
    try:
        fcntl.ioctl(dest_fd, _FICLONE, src_fd)
    except OSError:
        return False
    return True


def _copy_hashing(digest: Digest, src: Path, dest: Path, progress) -> tuple[Digest, str | None, int]:
    """Copy a blob into the new root (temp file, fsync, 0444, rename), hashing as it goes;
    a reflink (``FICLONE``: btrfs, XFS) shares the extents copy-on-write and only the hash
    reads the bytes."""
    h = digest.hasher()
    size = 0
    tmp = dest.with_name(f".{dest.name}.ctrconv-tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            cloned = _reflink(fin.fileno(), fout.fileno())
            while chunk := fin.read(CHUNK):
                h.update(chunk)
                if not cloned:
                    fout.write(chunk)
                size += len(chunk)
                if progress:
                    progress(len(chunk))
            fout.flush()
            os.fsync(fout.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
    except OSError:
        tmp.unlink(missing_ok=True)
        return digest, None, size
    return digest, h.hexdigest(), size


def _namespaces(meta: BucketTree) -> list[tuple[str, BucketTree]]:
    v1 = meta.bucket(K.V1)
    if v1 is None:
        return []
    return [(_text(k), b) for k, b in sorted(v1.entries.items()) if isinstance(b, BucketTree)]


def _clean_meta(meta: BucketTree, good: dict[str, int], report: RebuildReport) -> dict[tuple[str, str], str]:
    """Drop records of missing or corrupt content and the images that point at it.

    Returns, per (namespace, digest), the name of a dropped image whose lost target (an index)
    listed that manifest in its content record's GC labels: the manifest can be named after it.
    """
    orphaned = _children_of_lost_targets(meta, good)
    for ns_name, ns in _namespaces(meta):
        blobs = ns.bucket(K.CONTENT, K.BLOB)
        for key in list(blobs.entries) if blobs else []:
            record = blobs.entries[key]
            obj = f"content {ns_name}/{_text(key)}"
            try:
                digest = str(Digest.parse(key))
            except InvalidDigestError:
                del blobs.entries[key]
                report.drop("content", obj, "invalid digest")
                continue
            if not isinstance(record, BucketTree) or digest not in good:
                del blobs.entries[key]
                report.drop("content", obj, "blob missing or corrupt")
                continue
            if read_blob_size(record) != good[digest]:
                write_blob_size(record, good[digest])
        # ingests are kept: a pull of the same blob resumes one, and containerd's GC drops
        # those that expired (their data under content/ingest is copied with the content)
        images = ns.bucket(K.IMAGES)
        for key in list(images.entries) if images else []:
            record = images.entries[key]
            digest = (target_digest(record) if isinstance(record, BucketTree) else None) or ""
            if digest not in good:
                del images.entries[key]
                report.drop("image", f"image {ns_name}/{_text(key)}", f"target {digest or '?'} missing or corrupt")
    return orphaned


def _children_of_lost_targets(meta: BucketTree, good: dict[str, int]) -> dict[tuple[str, str], str]:
    """(namespace, child digest) -> image name, for images whose target blob is gone but whose
    content record still lists its children (``containerd.io/gc.ref.content.m.<i>``)."""
    found: dict[tuple[str, str], str] = {}
    prefix = K.LABEL_GC_CONTENT + ".m."
    for ns_name, ns in _namespaces(meta):
        images = ns.bucket(K.IMAGES)
        blobs = ns.bucket(K.CONTENT, K.BLOB)
        for key, record in sorted(images.entries.items()) if images and blobs else []:
            desc = _target_descriptor(record)
            if desc is None or desc["digest"] in good:
                continue
            content = blobs.entries.get(desc["digest"].encode())
            labels = read_map(content.bucket(K.LABELS)) if isinstance(content, BucketTree) else {}
            for label, value in labels.items():
                if label.startswith(prefix):
                    found.setdefault((ns_name, value), _text(key))
    return found


GC_CONTENT = K.LABEL_GC_CONTENT
GC_SNAPSHOT = K.LABEL_GC_SNAPSHOT


def _prune_dangling_labels(meta: BucketTree, report: RebuildReport) -> None:
    """Drop snapshot GC labels whose snapshot is gone (the image is unpacked again and labelled
    anew). Content references to content a namespace does not hold stay: an index lists every
    platform, a pull fetches some, and containerd's GC ignores the rest."""
    for ns_name, ns in _namespaces(meta):
        blobs = ns.bucket(K.CONTENT, K.BLOB)
        if blobs is None:
            continue
        snapshots = ns.bucket(K.SNAPSHOTS)
        for digest, record in blobs.entries.items():
            labels = record.bucket(K.LABELS) if isinstance(record, BucketTree) else None
            if labels is None:
                continue
            for key in list(labels.entries):
                value = labels.entries[key]
                name = _text(key)
                if not isinstance(value, bytes):
                    continue
                if name.startswith(GC_SNAPSHOT):
                    sn = name[len(GC_SNAPSHOT):].split("/", 1)[0].encode()
                    bucket = snapshots.bucket(sn) if snapshots else None
                    dangling = bucket is None or value not in bucket.entries
                else:
                    continue
                if dangling:
                    # re-unpacking the image labels its snapshots again
                    del labels.entries[key]
                    report.clean("gc-label", f"label {name} of content {ns_name}/{_text(digest)}", f"pointed at snapshot {_text(value)}, which is gone")
            if not labels.entries:
                del record.entries[K.LABELS]


def _backend_id(record: BucketTree) -> int | None:
    """A salvaged backend record's id; ``None`` when absent or undecodable (not reusable)."""
    try:
        return read_backend_id(record)
    except FormatError:
        return None


def _clean_snapshots(
    meta: BucketTree, backends: dict[str, BucketTree], croot: ContainerdRoot, report: RebuildReport,
    distrusted: dict[str, set[bytes]] | None = None,
) -> dict[str, set[int]]:
    """Keep only snapshot chains that are whole in meta.db, the backend db and on disk, and
    whose trees were not found to differ from their layers (``distrusted`` backend keys)."""
    kept_ids: dict[str, set[int]] = {}
    for sn, backend in backends.items():
        records = backend.bucket(K.V1, K.SNAPSHOTS, create=True)
        assert records is not None
        alive: dict[bytes, int] = {}
        changed = True
        candidates = {k: r for k, r in records.entries.items() if isinstance(r, BucketTree)}
        while changed:  # fixpoint: a snapshot stays only if its parent stays
            changed = False
            for key, rec in candidates.items():
                if key in alive:
                    continue
                sid = _backend_id(rec)
                if sid is None or key in (distrusted or {}).get(sn, ()):
                    continue
                directory = croot.snapshot_fs(sn, sid)
                parent = rec.get(K.PARENT)
                if directory is not None and directory.is_dir() and (parent is None or parent in alive):
                    alive[key] = sid
                    changed = True
        referenced: set[bytes] = set()
        for ns_name, ns in _namespaces(meta):
            bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
            if bucket is None:
                continue
            recs = {k: r for k, r in bucket.entries.items() if isinstance(r, BucketTree)}
            keep: set[bytes] = set()
            changed = True
            while changed:
                changed = False
                for key, rec in recs.items():
                    if key in keep:
                        continue
                    parent = rec.get(K.PARENT)
                    if rec.get(K.NAME) in alive and (parent is None or parent in keep):
                        keep.add(key)
                        changed = True
            top = bucket.sequence
            for key in list(bucket.entries):
                if key not in keep:
                    del bucket.entries[key]
                    report.drop("snapshot", f"snapshot {ns_name}/{sn}/{_text(key)}", "backend record, parent or directory missing")
                    continue
                rec = bucket.entries[key]
                referenced.add(rec.get(K.NAME))  # type: ignore[arg-type]
                children = rec.bucket(K.CHILDREN)
                if children is not None:
                    for child in list(children.entries):
                        if child not in keep:
                            del children.entries[child]
                seq = backend_name_seq(_text(rec.get(K.NAME) or b""))
                if seq is not None:
                    top = max(top, seq)
            bucket.sequence = top
        for key in list(records.entries):
            if key not in alive or key not in referenced:
                del records.entries[key]
                if key in alive:  # whole, but no namespace names it: containerd's GC removes it
                    report.clean("backend-snapshot", f"{sn}/{_text(key)}", "no meta.db record names it")
                else:
                    report.drop("backend-snapshot", f"{sn}/{_text(key)}", "incomplete chain (parent, record or directory missing)")
        kept = {key: alive[key] for key in records.entries}
        v1 = backend.bucket(K.V1)
        assert v1 is not None
        parents = BucketTree(sequence=(v1.bucket(K.PARENTS).sequence if v1.bucket(K.PARENTS) else 0))
        for key, rec in records.entries.items():
            parent = rec.get(K.PARENT)  # type: ignore[union-attr]
            if parent is not None:
                write_parent_link(parents, kept[parent], kept[key], _text(key))
        v1.entries[K.PARENTS] = parents
        records.sequence = max([records.sequence, *kept.values()])
        kept_ids[sn] = set(kept.values())
    return kept_ids


def _snapshots_unlike_their_layers(
    meta: BucketTree, backends: dict[str, BucketTree], croot: ContainerdRoot, content: ContentStore,
    report: RebuildReport, *, scratch: Path,
) -> dict[str, set[bytes]]:
    """Backend keys of snapshots whose tree differs from their layer, like ``verify --deep``.

    Every snapshot an image's host platform unpacks is applied again in a scratch directory
    under ``scratch`` (the root being written) and compared entry by entry; one that differs (a
    deleted or changed file, a lost xattr) is not reused, so it and everything above it are unpacked again. Snapshots no image explains
    (a container's, say) are left as they are.
    """
    from ctrconv.verify.deep import compare_chain, host_layer_chains

    bad: dict[str, set[bytes]] = {}
    checked: set[Hashable] = set()
    for sn, backend in backends.items():
        records = backend.bucket(K.V1, K.SNAPSHOTS)
        if records is None:
            continue
        for ns_name, ns in _namespaces(meta):
            bucket = ns.bucket(K.SNAPSHOTS, sn.encode())
            if bucket is None:
                continue
            dirs: dict[str, tuple[bytes, Path]] = {}
            for chain, rec in bucket.entries.items():
                name = rec.get(K.NAME) if isinstance(rec, BucketTree) else None
                backend_rec = records.entries.get(name) if name else None
                sid = _backend_id(backend_rec) if isinstance(backend_rec, BucketTree) else None
                fs = croot.snapshot_fs(sn, sid) if sid is not None else None
                if name is not None and fs is not None:
                    dirs[_text(chain)] = (name, fs)

            def fs_of(chain: str) -> Path | None:
                found = dirs.get(chain)
                if found is None or found[0] in bad.get(sn, set()) or not found[1].is_dir():
                    return None
                return found[1]

            for desc in _image_descriptors(ns):
                for layers, diff_ids in host_layer_chains(content, desc):
                    # scratch beside the root being written, not in $TMPDIR (often a small
                    # tmpfs): one layer at a time, removed right after
                    walk = compare_chain(content, sn, layers, diff_ids, fs_of, checked,
                                         lambda chain: (sn, dirs[chain][0]), scratch)
                    for chain, layer, _, problems in walk:
                        if problems:
                            bad.setdefault(sn, set()).add(dirs[chain][0])
                            report.drop("snapshot-tree", f"snapshot {ns_name}/{sn}/{chain}",
                                        f"differs from layer {layer['digest']} ({problems[0]}): unpacked again")
                            break  # everything above it is unpacked again anyway
    return bad


def _image_descriptors(ns: BucketTree) -> list[dict[str, Any]]:
    """Target descriptors of one namespace's image records."""
    images = ns.bucket(K.IMAGES)
    found = (_target_descriptor(rec) for rec in (images.entries.values() if images else []))
    return [desc for desc in found if desc is not None]


def _target_descriptor(record: BucketTree | bytes) -> dict[str, Any] | None:
    """An image record's ``target`` as a descriptor; None when the record has none, or one
    too damaged to decode (the image is then dropped, not the rebuild)."""
    try:
        target = read_target(record) if isinstance(record, BucketTree) else None
    except FormatError:
        return None
    if target is None:
        return None
    return {"mediaType": target.media_type, "digest": target.digest, "size": target.size}


def _image_targets(ns: BucketTree) -> dict[str, list[str]]:
    """target digest -> image names in one namespace."""
    out: dict[str, list[str]] = {}
    images = ns.bucket(K.IMAGES)
    for name, rec in (images.entries.items() if images else []):
        digest = target_digest(rec) if isinstance(rec, BucketTree) else None
        if digest is not None:
            out.setdefault(digest, []).append(_text(name))
    return out


def _derive_images(
    meta: BucketTree, good: dict[str, int], content: ContentStore, names: dict[str, str], report: RebuildReport,
    orphaned: dict[tuple[str, str], str] | None = None,
) -> None:
    """Give top-level manifests/indexes among the blobs image records where they lost theirs.

    A document gets a record in every namespace that still holds its content record but no
    image pointing at it (or in ``default`` when no namespace knows it). Names come from
    ``--name``, then from images of other namespaces with the same target, then ``repo@digest``
    after an image of this namespace whose lost index listed it (``orphaned``), then from the
    document's annotations, else a placeholder that keeps the digest.
    """
    from ctrconv.oci import mediatypes as mt

    documents = [doc for digest in sorted(good) if (doc := sniff_document(Digest.parse(digest), content.blob_path(digest)))]
    by_digest = {d.descriptor["digest"]: d for d in documents}
    namespaces = dict(_namespaces(meta))
    targets = {ns_name: _image_targets(ns) for ns_name, ns in namespaces.items()}

    def reachable_in(ns_name: str) -> set[str]:
        seen = set(targets.get(ns_name, {}))
        stack = list(seen)
        while stack:
            doc = by_digest.get(stack.pop())
            if doc and mt.is_index(doc.descriptor["mediaType"]):
                for child in doc.children:
                    if child not in seen:
                        seen.add(child)
                        stack.append(child)
        return seen

    reachable = {ns_name: reachable_in(ns_name) for ns_name in namespaces}
    known_anywhere = set().union(*reachable.values()) if reachable else set()
    now = go_time(time.time_ns())
    for doc in top_level(documents):
        digest = doc.descriptor["digest"]
        holders = [n for n, ns in namespaces.items() if _has_blob_record(ns, digest)]
        if not holders and digest not in known_anywhere:
            holders = ["default"]
        for ns_name in holders:
            if digest in reachable.get(ns_name, set()):
                continue
            if digest in names:
                candidates = [names[digest]]
            else:
                candidates = sorted({n for other, t in targets.items() if other != ns_name for n in t.get(digest, [])})
                lost = (orphaned or {}).get((ns_name, digest))
                if not candidates and lost is not None:
                    candidates = [_by_digest(lost, digest)]
                candidates = [c for c in candidates if c] or [derived_name(doc, names)]
            v1 = meta.bucket(K.V1, create=True)
            images = v1.bucket(ns_name.encode(), K.IMAGES, create=True)  # type: ignore[union-attr]
            for name in candidates:
                if name.encode() in images.entries:  # type: ignore[union-attr]
                    continue
                record = BucketTree()
                target = Target(doc.descriptor["mediaType"], digest, doc.descriptor["size"])
                write_image(record, ImageRecord(ns_name, name, target, created_at=now, updated_at=now))
                images.entries[name.encode()] = record  # type: ignore[union-attr]
                report.images.append({"namespace": ns_name, "name": name, "digest": digest, "origin": "re-derived from content"})


def _by_digest(name: str, digest: str) -> str:
    """``repo@digest`` for the repository of image ``name``; "" if the name is no reference."""
    from ctrconv.oci.reference import parse_reference

    try:
        return f"{parse_reference(name).name}@{digest}"
    except CtrconvError:
        return ""


def _has_blob_record(ns: BucketTree, digest: str) -> bool:
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    return blobs is not None and digest.encode() in blobs.entries


def _assess_image(content: ContentStore, ns: BucketTree, desc: dict[str, Any]) -> Assessment:
    labels_of, snapshot_exists = namespace_lookups(ns)
    return assess(content, desc, labels_of=labels_of, snapshot_exists=snapshot_exists)


def _drop_incomplete_images(meta: BucketTree, content: ContentStore, report: RebuildReport) -> None:
    """An image that no platform can run (or that lacks what every platform needs) would fail
    every use: drop it. Platforms never pulled are no reason; neither are layers let go after
    unpacking (``discard_unpacked_layers``): their snapshots still run the image."""
    for ns_name, ns in _namespaces(meta):
        images = ns.bucket(K.IMAGES)
        for key in list(images.entries) if images else []:
            desc = _target_descriptor(images.entries[key])
            if desc is None:
                del images.entries[key]
                report.drop("image", f"image {ns_name}/{_text(key)}", "no target")
                continue
            try:
                verdict = _assess_image(content, ns, desc)
                problem = None
                if verdict.broken:
                    problem = "missing " + ", ".join(d["digest"] for d in verdict.broken)
                elif not verdict.usable:
                    problem = "no platform of it is present"
            except CtrconvError as exc:
                problem = str(exc)
            if problem:
                del images.entries[key]
                report.drop("image", f"image {ns_name}/{_text(key)}", problem)
            elif not any(i["name"] == _text(key) and i["namespace"] == ns_name for i in report.images):
                report.images.append({"namespace": ns_name, "name": _text(key), "digest": desc["digest"], "origin": "kept"})


def _copy_snapshot_dirs(croot: ContainerdRoot, target: ContainerdRoot, kept: dict[str, set[int]]) -> None:
    from ctrconv.layers import copy_tree

    for sn, ids in kept.items():
        target.snapshots_dir(sn).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target.snapshotter_dir(sn), 0o700)
        for sid in sorted(ids):
            copy_tree(croot.snapshot_dir(sn, sid), target.snapshot_dir(sn, sid))


def _copy_ingests(croot: ContainerdRoot, target: ContainerdRoot) -> None:
    """Partial uploads go with their kept ingest records, so a pull can resume them."""
    from ctrconv.layers import copy_tree

    source = croot.content_dir / "ingest"
    if source.is_dir() and any(source.iterdir()):
        dest = target.content_dir / "ingest"
        if dest.exists():
            shutil.rmtree(dest)
        target.content_dir.mkdir(parents=True, exist_ok=True)
        copy_tree(source, dest)


def _remove_unkept_snapshot_dirs(croot: ContainerdRoot, kept: dict[str, set[int]], report: RebuildReport) -> None:
    """Snapshot directories no record keeps are derived data containerd would delete anyway."""
    for sn, ids in kept.items():
        sdir = croot.snapshots_dir(sn)
        if not sdir.is_dir():
            continue
        for entry in sorted(os.listdir(sdir)):
            if entry.isdigit() and int(entry) in ids and str(int(entry)) == entry:
                continue
            shutil.rmtree(sdir / entry, ignore_errors=True)
            report.clean("snapshot-dir", f"{sn}/snapshots/{entry}", "no intact record; re-unpacked if an image needs it")


def _write(path: Path, tree: BucketTree, mode: int, page_size: int | None, freelist: bool, in_place: bool, stamp: str, report: RebuildReport) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if in_place and path.exists():
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        n = 1
        while backup.exists():
            n += 1
            backup = path.with_name(f"{path.name}.bak-{stamp}.{n}")
        os.link(path, backup)
        report.backups.append(str(backup))
    write_bolt(path, tree, page_size=page_size, txid=2, freelist=freelist, mode=mode)
    fsync_dir(path.parent)


# -- phase 2 ------------------------------------------------------------------------------


def _reimport(target: ContainerdRoot, meta: BucketTree, unpack: bool, report: RebuildReport, *,
              trust_records: bool = False) -> None:
    """Import each namespace's images from the repaired root into itself.

    Every platform whose content is complete is kept (labelled, so GC keeps it), not just the
    host's: a rebuild must not lose what the node had. Images are grouped by that platform set
    so each group is one transaction.
    """
    from ctrconv.sinks.containerd_root import copy_images_to_root
    from ctrconv.sources.containerd_root import ContainerdRootSource

    snapshotter = "overlayfs"
    counted: set[tuple[str, str]] = set()
    for ns_name, ns in _namespaces(meta):
        images = ns.bucket(K.IMAGES)
        if not images or not images.entries:
            continue
        source = ContainerdRootSource(target, ns_name, namespace_content_only=False)
        # With an intact meta.db, a platform of an index is the namespace's only if it was
        # pulled here (see _pulled_here): a lost layer record is restored from the blob on
        # disk, but no platform is taken over from another namespace's blobs. A damaged
        # meta.db may have lost any record: then every complete platform counts.
        pulled = _pulled_here(ns) if trust_records else None
        try:
            groups: dict[tuple[tuple[str, ...] | None, bool], list] = {}
            for entry in source.entries():
                if not _assess_image(target.content, ns, entry.descriptor).whole:
                    continue  # runs from its snapshots only (layers discarded): records kept as they are
                # an image never unpacked (ctr import --no-unpack, a kind node image) stays so;
                # one that was (its config names a snapshot) is unpacked again where it lost it.
                # A damaged meta.db may have lost those labels: then everything is unpacked.
                again = unpack and (not trust_records or _was_unpacked(source, ns, entry.descriptor))
                key = (_complete_platforms(source, entry.descriptor, pulled), again)
                groups.setdefault(key, []).append(entry)
            for (platforms, again), entries in groups.items():
                result = copy_images_to_root(
                    source, target.path, ns_name, snapshotter=snapshotter, unpack=again,
                    platforms=list(platforms) if platforms else None, entries=entries, backup=False,
                    keep_partial=True, cri=False,  # the names the root has, none added
                )
                for image in result.images:
                    # images sharing a manifest report the same new snapshots: count them once
                    if image.unpacked and (ns_name, image.unpacked) not in counted:
                        counted.add((ns_name, image.unpacked))
                        report.snapshots_unpacked += image.snapshots_created
        finally:
            source.close()


def _was_unpacked(source, ns: BucketTree, descriptor: dict[str, Any]) -> bool:
    """A config of the image carries a ``gc.ref.snapshot.<sn>`` label: it was unpacked."""
    labels_of, _ = namespace_lookups(ns)
    try:
        plan = plan_image(source, descriptor, None)
    except CtrconvError:
        return True
    return any(k.startswith(GC_SNAPSHOT) for m in plan.manifests for k in labels_of(m.config["digest"]))


def _pulled_here(ns: BucketTree) -> Callable[[PlannedManifest], bool]:
    """Whether a namespace pulled a platform: it records the manifest, the config and every
    layer, or the manifest and a config labelled with an unpacked snapshot (a layer record
    lost to damage). 2.x records the manifests and configs of platforms it did not pull,
    without their layers and never unpacked: those stay partial."""
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    records = {_text(k): v for k, v in blobs.entries.items()} if blobs is not None else {}

    def unpacked(config: str) -> bool:
        rec = records.get(config)
        labels = read_map(rec.bucket(K.LABELS)) if isinstance(rec, BucketTree) else {}
        return any(k.startswith(GC_SNAPSHOT) for k in labels)

    def pulled(m: PlannedManifest) -> bool:
        if m.descriptor["digest"] not in records or m.config["digest"] not in records:
            return False
        return all(layer["digest"] in records for layer in m.layers) or unpacked(m.config["digest"])

    return pulled


def _complete_platforms(source, descriptor: dict[str, Any],
                        pulled: Callable[[PlannedManifest], bool] | None = None) -> tuple[str, ...] | None:
    """Platforms of an index whose manifest, config and layers are all present (None: no index);
    with ``pulled``, only the platforms it accepts."""
    plan = plan_image(source, descriptor, None)
    if not plan.indexes:
        return None
    missing = {d["digest"] for d in plan.missing}
    complete = []
    for m in plan.manifests:
        if pulled is not None and not pulled(m):
            continue
        if m.platform and not {d["digest"] for d in (m.descriptor, m.config, *m.layers)} & missing:
            complete.append(plat.format_platform(plat.Platform.from_json(m.platform)))
    return tuple(sorted(set(complete))) or None
