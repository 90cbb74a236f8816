"""Stage 1, salvage: meta.db and every snapshotter metadata.db read back into in-memory trees
(:mod:`ctrconv.bolt.salvage`), whatever pages survived; the later stages repair the trees."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ctrconv.bolt.salvage import RootHints, SalvageResult, salvage
from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import newest_update, read_schema_version
from ctrconv.containerd.locking import exclusive_lock, is_locked, shared_lock
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.containerd.rootlock import describe_holders
from ctrconv.errors import CtrconvError, LockedError
from ctrconv.recovery.buckets import text
from ctrconv.recovery.report import RebuildReport

#: buckets containerd keeps in a namespace (``v1/<ns>/...``) and a snapshotter db keeps in ``v1``
_NAMESPACE_BUCKETS = {K.IMAGES, K.CONTENT, K.SNAPSHOTS, K.LEASES, b"containers", b"sandboxes"}
_SNAPSHOTTER_BUCKETS = {K.SNAPSHOTS, K.PARENTS}


def containerd_shape(tree: BucketTree) -> int:
    """How containerd-like a candidate tree is: +1 for each ``v1`` child that is shaped like a
    namespace (buckets only, some of them a namespace's; or a snapshotter's ``snapshots`` /
    ``parents``), -1 for each that is not (an old root whose ``v1`` pointer lands on a page
    reused for another tree: a lease's bucket, with its ``createdat`` value, is no namespace),
    -1 for a ``v1`` without the ``version`` containerd writes at every start, -1 for each plain
    value at the top; a non-empty tree without ``v1`` scores -1."""
    v1 = tree.bucket(K.V1)
    if v1 is None:  # (an empty file has nothing; anything else without v1 is no meta.db tree)
        return -1 if tree.entries else 0
    score = -sum(1 for value in tree.entries.values() if not isinstance(value, BucketTree))  # (only buckets on top)
    score += 0 if v1.get(K.VERSION) is not None or not v1.entries else -1
    for key, child in v1.entries.items():
        if not isinstance(child, BucketTree):
            continue
        if key in _SNAPSHOTTER_BUCKETS:
            score += 1
        elif (child.entries and all(isinstance(v, BucketTree) for v in child.entries.values())
              and any(k in _NAMESPACE_BUCKETS for k in child.entries)):
            score += 1
        else:
            score -= 1
    return score


#: the name a namespace page gets when its records do not say which namespace it was
RECOVERED_NAMESPACE_PREFIX = "recovered-"


def assemble_namespaces(found: list[tuple[int, BucketTree, int]]) -> BucketTree | None:
    """A ``v1`` made of the orphan pages that are namespace buckets, when the pages above them
    (the root, ``v1``) are lost, as a meta.db cut short loses its last pages: rebuild took one
    namespace's page for the root and every other namespace was lost. A namespace is named by
    its snapshots (the snapshotter keys ``<ns>/<seq>/<key>`` its records hold), else ``k8s.io``
    when its images carry CRI's label, else ``default`` for the first unnamed one, else
    ``recovered-<page>``; of two copies of one name (a freed older copy) the less damaged,
    then the newer wins, and of two as new the smaller (a later commit that only deleted, as
    containerd's GC does, moves no timestamp)."""
    best: dict[str, tuple[tuple[int, int, int], BucketTree]] = {}
    unnamed: list[tuple[int, BucketTree, int]] = []
    for pgid, tree, damage in found:
        if not _namespace_shaped(tree):
            continue
        name = _namespace_name(tree)
        if name is None:
            unnamed.append((pgid, tree, damage))
            continue
        rank = (-damage, newest_update(tree), -tree.value_count())
        if name not in best or rank > best[name][0]:
            best[name] = (rank, tree)
    for pgid, tree, damage in sorted(unnamed, key=lambda u: (u[2], -newest_update(u[1]))):
        name = "default" if "default" not in best else f"{RECOVERED_NAMESPACE_PREFIX}{pgid}"
        best[name] = ((-damage, newest_update(tree), -tree.value_count()), tree)
    if not best:
        return None
    root = BucketTree()
    v1 = root.bucket(K.V1, create=True)
    assert v1 is not None
    for name, (_, tree) in sorted(best.items()):
        v1.entries[name.encode()] = tree
    return root


def _namespace_shaped(tree: BucketTree) -> bool:
    """Buckets named as a namespace's, none of which is shaped so itself: a stale copy of a
    namespace page points at pages reused since, often at another namespace's page."""
    return _namespace_keys(tree) and not any(_namespace_keys(child) for child in tree.entries.values())


def _namespace_keys(tree: BucketTree | bytes) -> bool:
    return (isinstance(tree, BucketTree) and len(tree.entries) >= 2
            and all(isinstance(v, BucketTree) for v in tree.entries.values())
            and set(tree.entries) <= _NAMESPACE_BUCKETS | {K.LABELS})


def _namespace_name(tree: BucketTree) -> str | None:
    """The namespace a namespace bucket belongs to, from what its records say of it."""
    from collections import Counter

    votes: Counter[str] = Counter()
    snapshots = tree.bucket(K.SNAPSHOTS)
    for bucket in (snapshots.entries.values() if snapshots else ()):
        for record in (bucket.entries.values() if isinstance(bucket, BucketTree) else ()):
            name = record.get(K.NAME) if isinstance(record, BucketTree) else None
            if name and b"/" in name:
                votes[text(name.split(b"/", 1)[0])] += 1
    if votes:
        return votes.most_common(1)[0][0]
    images = tree.bucket(K.IMAGES)
    for record in (images.entries.values() if images else ()):
        labels = record.bucket(K.LABELS) if isinstance(record, BucketTree) else None
        if labels is not None and labels.get(b"io.cri-containerd.image") is not None:
            return "k8s.io"
    return None


def assemble_snapshotter(found: list[tuple[int, BucketTree, int]]) -> BucketTree | None:
    """A snapshotter's ``v1`` made of the orphan page that is its ``snapshots`` bucket, when the
    page of ``v1`` (or the pages above it) is lost: the records are whole below it, and the
    ``parents`` index is made again from them by the repair. Of several copies (freed older
    ones) the less damaged, then the newer, then the smaller wins (as for namespaces)."""
    shaped = [(-damage, newest_update(tree), -tree.value_count(), -pgid, tree)
              for pgid, tree, damage in found if _snapshots_shaped(tree)]
    if not shaped:
        return None
    *_, best = max(shaped, key=lambda c: c[:4])
    root = BucketTree()
    v1 = root.bucket(K.V1, create=True)
    assert v1 is not None
    v1.entries[K.SNAPSHOTS] = best
    return root


def _snapshots_shaped(tree: BucketTree) -> bool:
    """A snapshotter's ``v1/snapshots``: records keyed ``<ns>/<seq>/<key>``, each with an id and a kind."""
    return bool(tree.entries) and all(
        isinstance(record, BucketTree) and b"/" in key and record.get(K.ID) is not None and record.get(K.KIND) is not None
        for key, record in tree.entries.items())


def assemble_top(found: list[tuple[int, BucketTree, int]]) -> BucketTree | None:
    """meta.db's namespaces, else a snapshotter's records, from orphan pages (RootHints.assemble)."""
    return assemble_namespaces(found) or assemble_snapshotter(found)


CONTAINERD_ROOT_HINTS = RootHints(plausibility=containerd_shape, recency=newest_update, assemble=assemble_top)


@dataclass
class Salvaged:
    """The trees salvaged from a root's bolt files, with how each was found."""

    meta: BucketTree
    meta_result: SalvageResult | None
    #: snapshotter -> (tree, salvage result; None when the db was missing or unreadable)
    backends: dict[str, tuple[BucketTree, SalvageResult | None]] = field(default_factory=dict)
    #: meta.db bucket paths found unreadable after the salvage (a bucket stored as a value)
    lost_paths: set[tuple[bytes, ...]] = field(default_factory=set)

    @property
    def backend_trees(self) -> dict[str, BucketTree]:
        return {sn: tree for sn, (tree, _) in self.backends.items()}

    @property
    def meta_writer_line(self) -> str | None:
        """The containerd line that wrote meta.db, as :attr:`MetadataDB.writer_line` tells it
        (``v1/version`` 4: 2.x; the newest meta without a persisted freelist: 1.7), or None."""
        try:
            version = read_schema_version(self.meta.bucket(K.V1))
        except CtrconvError:
            version = None
        if version is not None and version >= K.DB_VERSION_2X:
            return "2.x"
        metas = self.meta_result.metas if self.meta_result is not None else ()
        newest = max((m for m in metas if m.valid), key=lambda m: m.txid, default=None)
        if newest is None:
            return None
        return "1.6" if newest.freelist_synced else "1.7"

    @property
    def meta_intact(self) -> bool:
        """meta.db read whole from its newest meta page: it says what each namespace holds."""
        res = self.meta_result
        return (bool(res) and not res.damage and res.source.startswith("meta ")  # type: ignore[union-attr]
                and all(m.valid for m in res.metas) and not self.lost_paths)  # type: ignore[union-attr]

    def snapshot_records_intact(self, snapshotter: str) -> bool:
        """meta.db and ``snapshotter``'s db both read whole: a snapshot directory no record
        names is garbage (containerd's GC deletes it). Otherwise its records may be what the
        damage lost (a container's writable layer, a layer whose blob was discarded)."""
        found = self.backends.get(snapshotter)
        res = found[1] if found is not None else None
        return (self.meta_intact and res is not None and not res.damage
                and res.source.startswith("meta ") and all(m.valid for m in res.metas))

    def meta_lost_under(self, *path: bytes) -> bool:
        """Whether the damage to meta.db may have lost records under the bucket ``path``
        (``v1``, a namespace, ``content``, ...): a bucket above it or below it was unreadable,
        or meta.db was not read from a meta page at all. Damage to one namespace's snapshots
        says nothing of another namespace's records, nor of its own content records."""
        res = self.meta_result
        if res is None or not res.source.startswith("meta "):
            return True
        lost = [d.path for d in res.damage] + list(self.lost_paths)
        return any(p == path[:len(p)] or p[:len(path)] == path for p in lost)


def salvage_file(path: Path, report: RebuildReport) -> tuple[BucketTree, SalvageResult | None]:
    """One bolt file as a tree (empty when missing, empty or unreadable), its salvage noted in
    ``report`` (a file of 0 bytes, what a power cut can leave, is ``empty``, not ``missing``)."""
    if not path.exists() or path.stat().st_size == 0:
        report.salvage[str(path)] = {"source": "empty" if path.exists() else "missing", "damage": []}
        return BucketTree(), None
    if not path.is_file():  # (a directory there: mmap failed with a bare "Invalid argument")
        report.salvage[str(path)] = {"source": "unreadable", "damage": [f"{path} is not a regular file"]}
        return BucketTree(), None
    try:
        result = salvage(path, hints=CONTAINERD_ROOT_HINTS)
    except CtrconvError as exc:
        report.salvage[str(path)] = {"source": "unreadable", "damage": [str(exc)]}
        return BucketTree(), None
    report.salvage[str(path)] = {
        "source": result.source,
        "damage": [str(d) for d in result.damage],
        "backfilled": ["/".join(text(p) for p in b) for b in result.backfilled],
    }
    return result.tree, result


def lock_stores(croot: ContainerdRoot, locks: ExitStack, *, exclusive: bool) -> None:
    """Hold every bolt file of ``croot`` until ``locks`` closes: exclusively when it is
    rewritten in place, shared when only read; refuse one another process (containerd) holds."""
    bolt_files = [croot.meta_db] + [croot.snapshotter_db(sn) for sn in croot.snapshotters_on_disk()]
    for path in bolt_files:
        if path.exists() and is_locked(path):
            raise LockedError(f"{path} is locked by {describe_holders(path)}: stop it before rebuilding")
    for path in bolt_files:
        if path.exists() and path.stat().st_size:
            locks.enter_context(exclusive_lock(path) if exclusive else shared_lock(path))


def salvage_stores(croot: ContainerdRoot, report: RebuildReport) -> Salvaged:
    """meta.db and the snapshotter dbs of ``croot`` as trees.

    A snapshotter directory without a metadata.db (containerd makes the directories of plugins
    that then fail to start, btrfs on ext4 say) has nothing to salvage and is left out.
    """
    meta, meta_result = salvage_file(croot.meta_db, report)
    backends = {sn: salvage_file(croot.snapshotter_db(sn), report) for sn in croot.snapshotters_on_disk()
                if croot.snapshotter_db(sn).exists()}
    return Salvaged(meta, meta_result, backends)
