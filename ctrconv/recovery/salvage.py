"""Stage 1, salvage: meta.db and every snapshotter metadata.db read back into in-memory trees
(:mod:`ctrconv.bolt.salvage`), whatever pages survived; the later stages repair the trees."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Mapping

from ctrconv.bolt.salvage import EntryNamer, RootHints, SalvageResult, salvage
from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import newest_update, read_schema_version, split_parents_key
from ctrconv.containerd.locking import exclusive_lock, is_locked, shared_lock
from ctrconv.containerd.root import ContainerdRoot, is_namespace
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
    ``parents``), 0 for an empty one (or of labels only), -1 for each that is not (an old root
    whose ``v1`` pointer lands on a page reused for another tree: a lease's bucket, with its
    ``createdat`` value, is no namespace),
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
        elif not child.entries or (set(child.entries) == {K.LABELS} and child.bucket(K.LABELS) is not None):
            # (``ctr namespaces create`` makes a namespace of an empty ``labels`` bucket; a namespace
            # whose page was lost is empty: neither says anything. Scored -1, a healthy root with two
            # such namespaces beside one in use lost to a stale orphan root in rebuild)
            continue
        elif (child.entries and all(isinstance(v, BucketTree) for v in child.entries.values())
              and any(k in _NAMESPACE_BUCKETS for k in child.entries)):
            score += 1
        else:
            score -= 1
    return score


#: the name a namespace page gets when its records do not say which namespace it was
RECOVERED_NAMESPACE_PREFIX = "recovered-"


@dataclass(frozen=True)
class StoreEvidence:
    """What the rest of a root says of a copy of a namespace page found among orphans: the keys
    of the snapshotter dbs read whole (salvaged before meta.db) and the blob files on disk.
    Without a persisted freelist (1.7+) stale copies of earlier commits lie among the orphans,
    and timestamps alone do not tell them: a commit that deleted the newest record makes the
    live copy look older than a stale one (a red-team run: a stale ``k8s.io`` won, its deleted
    images, containers and lease came back)."""

    #: snapshotter -> every backend key its db holds (only dbs read whole)
    snapshot_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    blob_exists: Callable[[str], bool] = lambda _digest: True

    def namespaces_of(self, snapshotter: str, key: str) -> set[str]:
        """The namespaces whose snapshots in ``snapshotter`` include one keyed ``key``."""
        return self._owners.get((snapshotter, key), set())

    @cached_property
    def _owners(self) -> dict[tuple[str, str], set[str]]:
        """(snapshotter, key) -> namespaces; built once (asked for each candidate copy's containers)."""
        owners: dict[tuple[str, str], set[str]] = {}
        for sn, keys in self.snapshot_keys.items():
            for backend_key in keys:
                parts = backend_key.split("/", 2)
                if len(parts) == 3:
                    owners.setdefault((sn, parts[2]), set()).add(parts[0])
        return owners

    def disagreement(self, name: str | None, tree: BucketTree) -> int:
        """Records of the copy the root contradicts: snapshot records naming backend snapshots
        that do not exist, backend snapshots of the namespace the copy does not name, and
        content records whose blob file is gone (GC deletes the file with the last record)."""
        count = 0
        for sn, keys in self.snapshot_keys.items():
            named = _backend_names(tree, sn)
            count += len(named - keys)
            if name is not None:
                count += sum(1 for key in keys if key.startswith(f"{name}/") and key not in named)
        blobs = tree.bucket(K.CONTENT, K.BLOB)
        count += sum(1 for digest in (blobs.entries if blobs is not None else ()) if not self.blob_exists(text(digest)))
        return count

    def contradicts(self, name: str | None, tree: BucketTree) -> bool:
        """The root holds nothing of the copy: every snapshot it records is gone from an intact
        snapshotter db that holds none of the namespace's (``ctr namespaces rm`` empties a
        namespace first; its stale pages stay), or, recording no snapshot, every blob it records
        is gone. Such a copy is an earlier commit's, not a namespace that damage hid."""
        recorded = False
        for sn, keys in self.snapshot_keys.items():
            named = _backend_names(tree, sn)
            if not named:
                continue
            recorded = True
            if named & keys or (name is not None and any(k.startswith(f"{name}/") for k in keys)):
                return False
        if recorded:
            return True
        blobs = tree.bucket(K.CONTENT, K.BLOB)
        digests = [text(d) for d in (blobs.entries if blobs is not None else ())]
        return bool(digests) and not any(self.blob_exists(d) for d in digests)


def _backend_names(namespace: BucketTree, snapshotter: str) -> set[str]:
    """The snapshotter keys (``<ns>/<seq>/<key>``) a namespace copy's snapshot records name."""
    bucket = namespace.bucket(K.SNAPSHOTS, snapshotter.encode())
    return {text(r.get(K.NAME) or b"") for r in (bucket.entries.values() if bucket is not None else ())
            if isinstance(r, BucketTree)}


def assemble_namespaces(found: list[tuple[int, BucketTree, int]],
                        evidence: StoreEvidence | None = None) -> BucketTree | None:
    """A ``v1`` made of the orphan pages that are namespace buckets, when the pages above them
    (the root, ``v1``) are lost, as a meta.db cut short loses its last pages: rebuild took one
    namespace's page for the root and every other namespace was lost. A namespace is named by
    its snapshots (the snapshotter keys ``<ns>/<seq>/<key>`` its records hold), else ``k8s.io``
    when its images carry CRI's label, else ``default`` for the first unnamed one, else
    ``recovered-<page>``. Of two copies of one name (a freed older copy) the less damaged wins,
    then the one the rest of the root contradicts least (``evidence``), then the newer, and of
    two as new the smaller (a later commit that only deleted, as containerd's GC does, moves no
    timestamp). A copy that holds no record, or that the root contradicts whole
    (:meth:`StoreEvidence.contradicts`), is dropped, and so is an unnamed copy of a namespace
    already taken (most of its images, containers, leases and blobs are that namespace's: an
    older copy whose snapshots said nothing)."""
    evidence = evidence or StoreEvidence()
    best: dict[str, tuple[tuple[int, int, int, int], BucketTree]] = {}
    unnamed: list[tuple[int, BucketTree, int]] = []
    for pgid, tree, damage in found:
        if not _namespace_shaped(tree):
            continue
        name = _namespace_name(tree, evidence)
        if not tree.value_count() or evidence.contradicts(name, tree):
            continue  # (nothing to recover: often the last copy of a namespace emptied and removed)
        if name is None:
            unnamed.append((pgid, tree, damage))
            continue
        rank = (-damage, -evidence.disagreement(name, tree), _recency(tree), -tree.value_count())
        if name not in best or rank > best[name][0]:
            best[name] = (rank, tree)
    for pgid, tree, damage in sorted(unnamed, key=lambda u: (u[2], evidence.disagreement(None, u[1]),
                                                             -_recency(u[1]), u[1].value_count())):
        if any(_mostly_records_of(tree, taken) for _, taken in best.values()) or _leases_only(tree):
            continue
        name = "default" if "default" not in best else f"{RECOVERED_NAMESPACE_PREFIX}{pgid}"
        best[name] = ((-damage, 0, _recency(tree), -tree.value_count()), tree)
    if not best:
        return None
    root = BucketTree()
    v1 = root.bucket(K.V1, create=True)
    assert v1 is not None
    for name, (_, tree) in sorted(best.items()):
        v1.entries[name.encode()] = tree
    return root


def _recency(tree: BucketTree) -> int:
    """The newest timestamp of a tree's records (a whole tree, a ``v1``, a namespace copy),
    namespaces' leases aside: a lease lives for one pull or one GC request (``ctr leases delete
    --sync``), so the copy of the commit that made one and not of the one that deleted it
    looked the newer (a red-team run: a deleted lease came back)."""
    v1 = tree.bucket(K.V1)
    if v1 is not None:
        return max((_recency(child) for child in v1.entries.values() if isinstance(child, BucketTree)), default=0)
    if not _namespace_keys(tree):
        return newest_update(tree)
    return max((newest_update(child) for key, child in tree.entries.items()
                if key != K.LEASES and isinstance(child, BucketTree)), default=0)


#: the buckets whose record keys say whose copy a namespace page is
_IDENTIFYING = ((K.IMAGES,), (K.CONTAINERS,), (K.LEASES,), (K.CONTENT, K.BLOB))


def _mostly_records_of(tree: BucketTree, taken: BucketTree) -> bool:
    """At least half of ``tree``'s records (image names, container ids, lease ids, blob
    digests) are ``taken``'s too: an older copy of that namespace (and it has some)."""
    mine = shared = 0
    for path in _IDENTIFYING:
        ours, theirs = tree.bucket(*path), taken.bucket(*path)
        for key in (ours.entries if ours is not None else ()):
            mine += 1
            shared += theirs is not None and key in theirs.entries
    return mine > 0 and 2 * shared >= mine


def _leases_only(tree: BucketTree) -> bool:
    """A copy whose only records are leases: no evidence of a namespace. A lease lives for one
    pull or one GC request, and the live copy of a namespace whose last lease was deleted is
    empty, so only the stale copy that still held it was found (a red-team-found flake: the
    lease ``ctr leases delete --sync`` had removed came back as ``default``'s)."""
    others = [path for path in (*_IDENTIFYING, (K.SNAPSHOTS,)) if path != (K.LEASES,)]
    return not any((bucket := tree.bucket(*path)) is not None and bucket.entries for path in others)


def _namespace_shaped(tree: BucketTree) -> bool:
    """Buckets named as a namespace's, none of which is shaped so itself, whose records are
    shaped as records: a stale copy of a namespace page points at pages reused since, often
    at another namespace's page, or at the root (an "image" named ``v1``)."""
    return (_namespace_keys(tree) and not any(_namespace_keys(child) for child in tree.entries.values())
            and _records_shaped(tree))


#: a field most records of the bucket have: images their target, blobs their size,
#: containers their runtime (containerd refuses a container without one)
_RECORD_FIELD: dict[tuple[bytes, ...], bytes] = {
    (K.IMAGES,): K.TARGET, (K.CONTENT, K.BLOB): K.SIZE, (K.CONTAINERS,): b"runtime",
}


def _records_shaped(tree: BucketTree) -> bool:
    """The namespace's buckets hold what containerd puts there (a ``content`` bucket holds
    ``blob`` and ``ingests``, a ``snapshots`` bucket snapshotters whose records have a name),
    not pages a stale pointer landed on."""
    content = tree.bucket(K.CONTENT)
    if content is not None and not set(content.entries) <= {K.BLOB, K.INGESTS}:
        return False
    snapshots = tree.bucket(K.SNAPSHOTS)
    for per_snapshotter in (snapshots.entries.values() if snapshots is not None else ()):
        if not _mostly_have(per_snapshotter, K.NAME):
            return False
    return all(_mostly_have(tree.bucket(*path), needed) for path, needed in _RECORD_FIELD.items())


def _mostly_have(bucket: BucketTree | bytes | None, needed: bytes) -> bool:
    """At least half of ``bucket``'s records are buckets holding ``needed`` (or it is empty)."""
    if bucket is None:
        return True
    if not isinstance(bucket, BucketTree):
        return False
    # (a record that came back empty lost its page to the damage: it says nothing either way)
    records = [r for r in bucket.entries.values() if not isinstance(r, BucketTree) or r.entries]
    shaped = sum(1 for r in records if isinstance(r, BucketTree) and r.entries.get(needed) is not None)
    return not records or 2 * shaped >= len(records)


def _namespace_keys(tree: BucketTree | bytes) -> bool:
    return (isinstance(tree, BucketTree) and len(tree.entries) >= 2
            and all(isinstance(v, BucketTree) for v in tree.entries.values())
            and set(tree.entries) <= _NAMESPACE_BUCKETS | {K.LABELS})


def _namespace_name(tree: BucketTree, evidence: StoreEvidence | None = None) -> str | None:
    """The namespace a namespace bucket belongs to, from what its records say of it: its
    snapshot records' backend keys, else its containers' snapshots as the snapshotter dbs
    name them (``<ns>/<seq>/<key>``: a copy whose snapshot records were lost with the pages
    cut off a meta.db kept its 320 containers, which went to ``default`` and were dropped,
    their snapshots restored into their own namespace: a red-team run), else CRI's label."""
    from collections import Counter

    votes: Counter[str] = Counter()
    snapshots = tree.bucket(K.SNAPSHOTS)
    for bucket in (snapshots.entries.values() if snapshots else ()):
        for record in (bucket.entries.values() if isinstance(bucket, BucketTree) else ()):
            name = record.get(K.NAME) if isinstance(record, BucketTree) else None
            if name and b"/" in name:
                votes[text(name.split(b"/", 1)[0])] += 1
    if not votes and evidence is not None:
        votes = _container_namespace_votes(tree, evidence)
    if votes:
        return votes.most_common(1)[0][0]
    images = tree.bucket(K.IMAGES)
    for record in (images.entries.values() if images else ()):
        labels = record.bucket(K.LABELS) if isinstance(record, BucketTree) else None
        if labels is not None and labels.get(b"io.cri-containerd.image") is not None:
            return "k8s.io"
    return None


def _container_namespace_votes(tree: BucketTree, evidence: StoreEvidence) -> "Counter[str]":
    """Namespace -> how many of the copy's containers have their snapshot there, by the keys of
    the snapshotter dbs read whole (a key held in two namespaces says nothing)."""
    from collections import Counter

    votes: Counter[str] = Counter()
    containers = tree.bucket(K.CONTAINERS)
    for record in containers.entries.values() if containers is not None else ():
        if not isinstance(record, BucketTree):
            continue
        sn, key = record.get(K.SNAPSHOTTER), record.get(K.SNAPSHOT_KEY)
        found = evidence.namespaces_of(text(sn), text(key)) if sn and key else set()
        if len(found) == 1:
            votes[next(iter(found))] += 1
    return votes


def assemble_snapshotter(found: list[tuple[int, BucketTree, int]],
                         named: frozenset[str] | None = None) -> BucketTree | None:
    """A snapshotter's ``v1`` made of the orphan pages that are its ``snapshots`` bucket (and
    its ``parents`` index), when the page of ``v1`` (or the pages above it) is lost. Of several
    copies (freed older ones) the one agreeing best with the backend keys meta.db's records name
    (``named``, when meta.db reads whole) wins, then the less damaged, the newer, the smaller. A
    record whose own page went with the damage comes back empty: it says nothing of its copy
    (it disqualified the live copy, and every container lost its snapshot: a red-team run),
    and :func:`~ctrconv.recovery.snapshots.mend_emptied_records` makes it again."""
    shaped = [(-_key_disagreement(tree, named), -damage, newest_update(tree), -tree.value_count(), -pgid, tree)
              for pgid, tree, damage in found if _snapshots_shaped(tree)]
    if not shaped:
        return None
    *_, best = max(shaped, key=lambda c: c[:5])
    root = BucketTree()
    v1 = root.bucket(K.V1, create=True)
    assert v1 is not None
    v1.entries[K.SNAPSHOTS] = best
    parents = [(damage, -tree.value_count(), pgid, tree) for pgid, tree, damage in found if _parents_shaped(tree, best)]
    if parents:
        v1.entries[K.PARENTS] = min(parents, key=lambda c: c[:3])[3]
    return root


def _key_disagreement(snapshots: BucketTree, named: frozenset[str] | None) -> int:
    """Backend keys meta.db names that the copy lacks, and keys of the copy meta.db does not name."""
    if named is None:
        return 0
    keys = {text(key) for key in snapshots.entries}
    return len(named - keys) + len(keys - named)


def _snapshots_shaped(tree: BucketTree) -> bool:
    """A snapshotter's ``v1/snapshots``: records keyed ``<ns>/<seq>/<key>``, each with an id and
    a kind (one that came back empty lost its page: it says nothing either way)."""
    records = [(key, record) for key, record in tree.entries.items()]
    whole = [record for _, record in records if not isinstance(record, BucketTree) or record.entries]
    return bool(whole) and all(isinstance(r, BucketTree) and b"/" in k for k, r in records) and all(
        isinstance(record, BucketTree) and record.get(K.ID) is not None and record.get(K.KIND) is not None
        for record in whole)


def _parents_shaped(tree: BucketTree, snapshots: BucketTree) -> bool:
    """A snapshotter's ``v1/parents``: plain values, keyed by two ids, naming keys of ``snapshots``."""
    if not tree.entries or not all(isinstance(v, bytes) for v in tree.entries.values()):
        return False
    try:
        for key in tree.entries:
            split_parents_key(key)
    except CtrconvError:
        return False
    return sum(1 for v in tree.entries.values() if v in snapshots.entries) * 2 >= len(tree.entries)


def name_namespace_buckets(path: tuple[bytes, ...], found: list[tuple[int, BucketTree, int]], tree: BucketTree,
                           exact: bool, evidence: StoreEvidence | None = None) -> dict[bytes, BucketTree]:
    """The buckets of a namespace (``v1/<ns>``) whose own page was lost, named from the orphan
    subtrees below it: every bucket containerd keeps there that holds records is a page of its
    own (a bucket with sub-buckets is never inlined), so ``images``, ``content``, ``snapshots``,
    ``containers``, ``leases`` and ``sandboxes`` survive the loss of the namespace's leaf with
    their names gone. Each is told by what its records hold (:func:`_namespace_bucket_kind`).
    A namespace's ``labels`` (plain values, inlined) are lost.

    ``exact`` (a persisted freelist): the subtrees are the lost page's; of two of one kind the
    less damaged, then the larger, wins. Otherwise they are candidates among stale copies of
    earlier commits (:func:`_pick_live_copies`)."""
    if len(path) != 2 or path[0] != K.V1:
        return {}
    by_kind: dict[bytes, list[tuple[int, BucketTree, int]]] = {}
    for part in found:
        kind = _namespace_bucket_kind(part[1])
        if kind is not None:
            by_kind.setdefault(kind, []).append(part)
    if not exact:
        return _pick_live_copies(path[1], by_kind, tree, evidence or StoreEvidence())
    return {kind: max(parts, key=lambda p: (-p[2], p[1].value_count()))[1] for kind, parts in by_kind.items()}


def _pick_live_copies(namespace: bytes, by_kind: dict[bytes, list[tuple[int, BucketTree, int]]], tree: BucketTree,
                      evidence: StoreEvidence) -> dict[bytes, BucketTree]:
    """The live copy of each of a namespace's buckets among stale copies of earlier commits (a
    file without a persisted freelist). Copies of another namespace's bucket are left out: most
    of their records are that namespace's own, keys and creation times alike (a namespace's
    records are made at its own times, even of images another namespace holds too). Snapshots
    must name this namespace's backend keys; containers must have their snapshots in the
    snapshots picked (``ctr containers rm`` and CRI remove them: a stale copy holds the
    removed). Of the rest the least damaged wins, then the one the root's stores contradict
    least (a blob gone, an image whose target blob is gone: what GC removed after a delete),
    then the newest, then the smaller (a commit that only deleted moves no timestamp). Leases
    are not taken: an empty ``leases`` bucket is inlined in the lost page, so every copy found
    may be a stale one holding a lease since deleted."""
    name = text(namespace)
    others = list(_other_namespaces(tree, namespace).values())
    picked: dict[bytes, BucketTree] = {}
    damaged: set[bytes] = set()  # kinds whose picked copy is damaged itself
    for kind in (K.SNAPSHOTS, K.CONTENT, K.IMAGES, K.CONTAINERS, K.SANDBOXES):
        candidates = []
        for _, copy, damage in by_kind.get(kind, ()):
            if any(_same_records(copy, other.bucket(kind)) for other in others):
                continue  # (a stale copy of another namespace's bucket)
            if kind == K.SNAPSHOTS and _namespace_name(_wrap(kind, copy)) != name:
                continue
            if kind == K.CONTAINERS and not _snapshots_kept(
                    copy, picked.get(K.SNAPSHOTS), (name, evidence) if K.SNAPSHOTS in damaged or K.SNAPSHOTS not in picked
                    else None):
                continue
            wrapped = _wrap(kind, copy)
            contradicted = evidence.disagreement(name, wrapped) + _targets_gone(copy if kind == K.IMAGES else None, evidence)
            candidates.append(((-damage, -contradicted, newest_update(copy), -copy.value_count()), copy, damage))
        if candidates:
            best = max(candidates, key=lambda c: c[0])
            picked[kind] = best[1]
            if best[2]:
                damaged.add(kind)
    return picked


def _other_namespaces(tree: BucketTree, namespace: bytes) -> dict[bytes, BucketTree]:
    """The namespaces of ``tree`` but ``namespace``: whose stale copies lie among the candidates."""
    v1 = tree.bucket(K.V1)
    return {key: ns for key, ns in (v1.entries.items() if v1 is not None else ())
            if key != namespace and isinstance(ns, BucketTree)}


def _wrap(kind: bytes, bucket: BucketTree) -> BucketTree:
    """A namespace tree holding only ``bucket`` as its ``kind`` (for the namespace-wide checks)."""
    namespace = BucketTree()
    namespace.entries[kind] = bucket
    return namespace


def _same_records(copy: BucketTree, other: BucketTree | None) -> bool:
    """At least half of ``copy``'s records are ``other``'s, created at the same time."""
    if other is None or not copy.entries:
        return False
    same = 0
    for key, record in copy.entries.items():
        theirs = other.entries.get(key)
        if isinstance(record, BucketTree) and isinstance(theirs, BucketTree):
            created = record.get(K.CREATED_AT)
            if created is None:  # (content: blob and ingests; snapshots: one bucket per snapshotter)
                same += _same_records(record, theirs)
            else:
                same += created == theirs.get(K.CREATED_AT)
    return 2 * same >= len(copy.entries)


def _snapshots_kept(containers: BucketTree, snapshots: BucketTree | None,
                    backend: tuple[str, StoreEvidence] | None = None) -> bool:
    """Most containers with a snapshot have its record in ``snapshots``. ``backend``
    (namespace, evidence): where the snapshots copy picked is damaged or none was found, a
    snapshot the snapshotter db holds in the namespace counts too (its record comes back
    from there: a damaged copy lacked the one container's snapshot, and the container was
    dropped with a fresh corpus)."""
    with_snapshot = [r for r in _whole_records(containers) if r.get(K.SNAPSHOT_KEY) and r.get(K.SNAPSHOTTER)]
    if not with_snapshot:
        return True

    def kept(record: BucketTree) -> bool:
        sn, key = record.get(K.SNAPSHOTTER), record.get(K.SNAPSHOT_KEY)
        if snapshots is not None and snapshots.bucket(sn, key) is not None:  # type: ignore[arg-type]
            return True
        return backend is not None and backend[0] in backend[1].namespaces_of(text(sn), text(key))

    return 2 * sum(1 for r in with_snapshot if kept(r)) > len(with_snapshot)


def _targets_gone(images: BucketTree | None, evidence: StoreEvidence) -> int:
    """Images whose target's blob is gone from the content store (GC removes it after the image)."""
    count = 0
    for record in (_whole_records(images) if images is not None else ()):
        digest = record.bucket(K.TARGET).get(K.DIGEST) if record.bucket(K.TARGET) is not None else None
        count += bool(digest) and not evidence.blob_exists(text(digest))  # type: ignore[arg-type]
    return count


def name_containers(namespace: bytes, found: list[tuple[int, BucketTree, int]], tree: BucketTree,
                    exact: bool) -> dict[bytes, BucketTree]:
    """The containers of a namespace whose ``containers`` leaf page was lost: each container
    record holds buckets (``runtime``, ``labels``), so it is a page of its own, orphaned with
    its id. containerd's clients name a container's writable snapshot after it (``ctr run``,
    ``ctr containers create``, CRI, Docker, nerdctl: snapshot key = container id), so a record
    is named by its ``snapshotKey`` when that is a valid id. Without a persisted freelist the
    candidates include stale copies of earlier commits: only a container whose snapshot the
    namespace still records is taken (removing a container removes its snapshot), no copy of
    another namespace's record (:func:`_another_namespace_s`), and of two copies of one the less
    damaged, then the newer. A container whose snapshot key is not its
    id (an API client's choice) comes back under its snapshot key's name."""
    snapshots = tree.bucket(K.V1, namespace, K.SNAPSHOTS)
    others = _other_namespaces(tree, namespace)
    best: dict[bytes, tuple[tuple[int, int], BucketTree]] = {}
    for _, record, damage in found:
        key, snapshotter = record.get(K.SNAPSHOT_KEY), record.get(K.SNAPSHOTTER)
        if record.bucket(b"runtime") is None or not key or not snapshotter or not is_namespace(text(key)):
            continue
        if not exact and (snapshots is None or snapshots.bucket(snapshotter, key) is None
                          or _another_namespace_s(record, key, others)):
            continue
        rank = (-damage, newest_update(record))
        if key not in best or rank > best[key][0]:
            best[key] = (rank, record)
    return {key: record for key, (_, record) in best.items()}


def _another_namespace_s(record: BucketTree, key: bytes, others: Mapping[bytes, BucketTree]) -> bool:
    """A stale copy of a container record of another namespace (a container of that id there,
    created at the same time; or a spec whose cgroup path, ``/<ns>/<id>`` as ctr makes it, names
    that namespace): two namespaces may hold containers of one id, each with a snapshot of it."""
    created, spec = record.get(K.CREATED_AT), record.get(b"spec") or b""
    for name, ns in others.items():
        theirs = ns.bucket(K.CONTAINERS, key)
        if theirs is not None and created is not None and theirs.get(K.CREATED_AT) == created:
            return True
        if b'"cgroupsPath":"/' + name + b"/" + key + b'"' in spec:
            return True
    return False


def name_content_buckets(namespace: bytes, found: list[tuple[int, BucketTree, int]], tree: BucketTree,
                         exact: bool, evidence: StoreEvidence | None = None) -> dict[bytes, BucketTree]:
    """The ``blob`` and ``ingests`` buckets of a namespace whose ``content`` leaf page was lost
    (each holds a bucket per record, so it is a page of its own): ``blob`` records have a size,
    ``ingests`` records a backend ref. rebuild recorded again every blob the namespace's images
    name, other platforms' blobs that other namespaces keep on disk among them (a page sweep).
    Without a persisted freelist, a copy most of whose records another namespace holds (keys and
    creation times) is that namespace's; of the rest the least damaged, the least contradicted
    (blob files GC removed), the newest, the smaller wins."""
    evidence = evidence or StoreEvidence()
    others = list(_other_namespaces(tree, namespace).values())
    best: dict[bytes, tuple[tuple[int, int, int, int], BucketTree]] = {}
    for _, bucket, damage in found:
        records = _whole_records(bucket)
        if not records or len(records) != len(bucket.entries):
            continue
        kind = K.BLOB if _mostly_have(bucket, K.SIZE) else K.INGESTS if _mostly_have(bucket, K.REF) else None
        if kind is None:
            continue
        if not exact and any(_same_records(bucket, other.bucket(K.CONTENT, kind)) for other in others):
            continue
        gone = sum(1 for key in bucket.entries if not evidence.blob_exists(text(key))) if kind == K.BLOB else 0
        rank = (-damage, -gone, newest_update(bucket), -bucket.value_count())
        if kind not in best or rank > best[kind][0]:
            best[kind] = (rank, bucket)
    return {kind: bucket for kind, (_, bucket) in best.items()}


def _namespace_bucket_kind(tree: BucketTree) -> bytes | None:
    """Which of a namespace's buckets ``tree`` is, from its records' fields, or None: images
    have a ``target``; containers an image, a snapshot key or a sandbox id beside their
    ``runtime``; sandboxes (2.x) a ``sandboxer``; leases only a ``createdat`` (no
    ``updatedat``, no record of another kind); content holds ``blob`` and ``ingests``;
    snapshots holds one bucket per snapshotter, of records naming their backend key."""
    entries = tree.entries
    if not entries or not all(isinstance(value, BucketTree) for value in entries.values()):
        return None
    if set(entries) <= {K.BLOB, K.INGESTS}:
        return K.CONTENT if _mostly_have(tree.bucket(K.BLOB), K.SIZE) else None
    children = list(entries.values())  # (a snapshotter bucket of no snapshot says nothing)
    if any(_whole_records(child) for child in children) and all(_mostly_have(child, K.NAME) for child in children):
        return K.SNAPSHOTS
    records = _whole_records(tree)
    if not records:
        return None

    def most(*fields: bytes) -> bool:
        return 2 * sum(1 for r in records if any(r.entries.get(f) is not None for f in fields)) > len(records)

    if most(K.TARGET):
        return K.IMAGES
    if most(b"sandboxer"):
        return K.SANDBOXES
    if most(b"runtime") and most(K.IMAGE, K.SNAPSHOT_KEY, K.SNAPSHOTTER, b"sandboxid"):
        return K.CONTAINERS
    if most(K.CREATED_AT) and not any(r.entries.get(f) is not None for r in records
                                      for f in (K.UPDATED_AT, K.TARGET, b"runtime", K.NAME)):
        return K.LEASES
    return None


def _whole_records(bucket: BucketTree | bytes) -> list[BucketTree]:
    """The records of ``bucket`` that came back with fields (one whose page was lost is empty)."""
    if not isinstance(bucket, BucketTree):
        return []
    return [r for r in bucket.entries.values() if isinstance(r, BucketTree) and r.entries]


def containerd_root_hints(evidence: StoreEvidence | None = None,
                          named: frozenset[str] | None = None) -> RootHints:
    """How a containerd root's bolt files rank candidate trees; ``evidence``: what the root's
    other stores say of meta.db's namespace pages (:class:`StoreEvidence`); ``named``: the
    backend keys meta.db's records name, for a snapshotter db's pages."""

    def assemble_top(found: list[tuple[int, BucketTree, int]]) -> BucketTree | None:
        """meta.db's namespaces, else a snapshotter's records, from orphan pages."""
        return assemble_namespaces(found, evidence) or assemble_snapshotter(found, named)

    def entry_namer(path: tuple[bytes, ...]) -> EntryNamer | None:
        """A namespace's buckets, from the orphan pages below its lost page; a namespace's
        containers, or its ``blob`` and ``ingests`` buckets, from the orphan pages below the lost
        leaf of its ``containers`` or ``content``."""
        if len(path) == 2 and path[0] == K.V1:
            return lambda found, tree, exact: name_namespace_buckets(path, found, tree, exact, evidence)
        if len(path) == 3 and path[0] == K.V1 and path[2] == K.CONTAINERS:
            return lambda found, tree, exact: name_containers(path[1], found, tree, exact)
        if len(path) == 3 and path[0] == K.V1 and path[2] == K.CONTENT:
            return lambda found, tree, exact: name_content_buckets(path[1], found, tree, exact, evidence)
        return None

    return RootHints(plausibility=containerd_shape, recency=_recency, assemble=assemble_top, entry_namer=entry_namer)


CONTAINERD_ROOT_HINTS = containerd_root_hints()


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
        (``v1``, a namespace, ``content``, ...): a bucket above it or below it was unreadable
        (above it: unless a bucket between was read back whole from the orphan pages below the
        loss, :attr:`SalvageResult.recovered_whole`), or meta.db was not read from a meta page.
        Damage to one namespace's snapshots says nothing of another namespace's records, nor
        of its own content records."""
        res = self.meta_result
        if res is None:
            return True
        if res.older_commit and K.SNAPSHOTS in path[2:3]:
            # an older commit's tree stands in: the snapshots the last commit made (a container
            # created last) are in the snapshotter db, whose records say what they were; images
            # and content records it wrote cannot be told from a guess, and are not re-derived
            return True
        # (a damage entry without path or page is a note on how the tree was found)
        lost = [d.path for d in res.damage if d.path or d.page is not None] + list(self.lost_paths)
        if not res.source.startswith("meta "):
            lost.append(())
        whole = res.recovered_whole

        def covers(p: tuple[bytes, ...]) -> bool:
            if p[:len(path)] == path:
                return True  # (lost below the bucket asked about)
            # lost above it, unless a bucket between was read back whole from its orphan pages
            return p == path[:len(p)] and not any(path[:i] in whole for i in range(len(p) + 1, len(path) + 1))

        return any(covers(p) for p in lost)


def salvage_file(path: Path, report: RebuildReport,
                 hints: RootHints = CONTAINERD_ROOT_HINTS) -> tuple[BucketTree, SalvageResult | None]:
    """One bolt file as a tree (empty when missing, empty or unreadable), its salvage noted in
    ``report`` (a file of 0 bytes, what a power cut can leave, is ``empty``, not ``missing``)."""
    if not path.exists() or path.stat().st_size == 0:
        report.salvage[str(path)] = {"source": "empty" if path.exists() else "missing", "damage": []}
        return BucketTree(), None
    if not path.is_file():  # (a directory there: mmap failed with a bare "Invalid argument")
        report.salvage[str(path)] = {"source": "unreadable", "damage": [f"{path} is not a regular file"]}
        return BucketTree(), None
    try:
        result = salvage(path, hints=hints)
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
    bolt_files = [path for path in bolt_files if path.is_file()]  # (a directory in its place is no db to hold)
    for path in bolt_files:
        if is_locked(path):
            raise LockedError(f"{path} is locked by {describe_holders(path)}: stop it before rebuilding")
    for path in bolt_files:
        if path.stat().st_size:
            locks.enter_context(exclusive_lock(path) if exclusive else shared_lock(path))


def salvage_stores(croot: ContainerdRoot, report: RebuildReport) -> Salvaged:
    """meta.db and the snapshotter dbs of ``croot`` as trees.

    A snapshotter directory without a metadata.db (containerd makes the directories of plugins
    that then fail to start, btrfs on ext4 say) has nothing to salvage and is left out.
    """
    backends = {sn: salvage_file(croot.snapshotter_db(sn), report) for sn in croot.snapshotters_on_disk()
                if croot.snapshotter_db(sn).exists()}
    content = croot.content
    evidence = StoreEvidence({sn: _backend_keys(tree) for sn, (tree, result) in backends.items()
                              if result is not None and not result.damage}, lambda d: content.exists(d))
    meta, meta_result = salvage_file(croot.meta_db, report, containerd_root_hints(evidence))
    if meta_result is not None and not meta_result.damage:
        # a damaged snapshotter db, read again knowing what the whole meta.db names in it
        for sn, (_, result) in list(backends.items()):
            if result is not None and result.damage:
                named = _named_backend_keys(meta, sn)
                backends[sn] = salvage_file(croot.snapshotter_db(sn), report, containerd_root_hints(named=named))
    report.salvage = {str(croot.meta_db): report.salvage.pop(str(croot.meta_db)), **report.salvage}  # (meta.db first)
    return Salvaged(meta, meta_result, backends)


def _named_backend_keys(meta: BucketTree, snapshotter: str) -> frozenset[str]:
    """Every backend key meta.db's snapshot records of ``snapshotter`` name, in every namespace."""
    v1 = meta.bucket(K.V1)
    names: set[str] = set()
    for ns in (v1.entries.values() if v1 is not None else ()):
        if isinstance(ns, BucketTree):
            names |= _backend_names(ns, snapshotter)
    names.discard("")
    return frozenset(names)


def _backend_keys(tree: BucketTree) -> frozenset[str]:
    records = tree.bucket(K.V1, K.SNAPSHOTS)
    return frozenset(text(key) for key in records.entries) if records is not None else frozenset()
