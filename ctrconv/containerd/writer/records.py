"""Build and merge containerd records in a :class:`BucketTree`, byte-compatible with the daemon.

Everything here works on the in-memory tree of a bolt file, never on disk. Merging follows one
rule: an existing record is left exactly as it is unless the import needs a field it lacks
(a GC label, a retargeted image), and then only that field and ``updatedat`` change, which is
what containerd's own ``Update(..., fieldpaths)`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import encode_time_ns, encode_uvarint, encode_varint
from ctrconv.errors import FormatError
from ctrconv.oci import mediatypes as mt

# GC label keys (containerd ``images.ChildGCLabels`` and the unpacker)
GC_REF_CONTENT = K.LABEL_GC_CONTENT
LABEL_CONFIG = GC_REF_CONTENT + ".config"
LABEL_LAYER = GC_REF_CONTENT + ".l."
LABEL_MANIFEST = GC_REF_CONTENT + ".m."
LABEL_GENERIC = GC_REF_CONTENT + "."
LABEL_UNCOMPRESSED = K.LABEL_UNCOMPRESSED
LABEL_CRI_IMAGE = "io.cri-containerd.image"
LABEL_CRI_PINNED = "io.cri-containerd.pinned"
CRI_NAMESPACE = "k8s.io"
MAX_LABEL_BYTES = 4096

KIND_COMMITTED = 3

#: outcome of a merge, as reported to the user
ADDED, UPDATED, PRESENT = "added", "updated", "present"


def snapshot_label(snapshotter: str) -> str:
    """``containerd.io/gc.ref.snapshot.<snapshotter plugin id>`` (``overlayfs``, not ``overlay``)."""
    return K.LABEL_GC_SNAPSHOT + snapshotter


def child_label_key(media_type: str) -> str:
    """containerd ``ChildGCLabels``: the label prefix a parent uses to point at a child."""
    if mt.is_config(media_type):
        return LABEL_CONFIG
    if mt.is_manifest(media_type):
        return LABEL_MANIFEST
    if mt.is_layer(media_type):
        return LABEL_LAYER
    return LABEL_GENERIC


def children_labels(children: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Labels of one parent blob, numbered like ``SetChildrenMappedLabels``.

    One counter per prefix; the number is appended when the prefix ends with ``.`` or the
    counter is already > 0 (a second config would be ``...content.config1``).
    """
    labels: dict[str, str] = {}
    counters: dict[str, int] = {}
    for child in children:
        key = child_label_key(child.get("mediaType", ""))
        idx = counters.get(key, 0)
        counters[key] = idx + 1
        if idx > 0 or key.endswith("."):
            key = f"{key}{idx}"
        labels[key] = str(child["digest"])
    return labels


def put_timestamps(bucket: BucketTree, created_ns: int, updated_ns: int | None = None) -> None:
    bucket.put(K.CREATED_AT, encode_time_ns(created_ns))
    bucket.put(K.UPDATED_AT, encode_time_ns(created_ns if updated_ns is None else updated_ns))


def put_map(bucket: BucketTree, name: bytes, mapping: Mapping[str, str]) -> None:
    """containerd ``writeMap``: replace the bucket; omit it when the map is empty; skip empty
    values (a map of only empty values leaves an empty bucket, as in containerd: the unpack
    of a config-only image labels its config with ``gc.ref.snapshot.<sn>=""``)."""
    bucket.entries.pop(name, None)
    if not mapping:
        return
    sub = bucket.bucket(name, create=True)
    assert sub is not None
    for key, value in mapping.items():
        if not value:
            continue
        if len(key) + len(value) > MAX_LABEL_BYTES:
            raise FormatError(f"label {key[:100]!r} is longer than {MAX_LABEL_BYTES} bytes")
        sub.put(key.encode(), value.encode())


def read_map(bucket: BucketTree | None) -> dict[str, str]:
    if bucket is None:
        return {}
    return {
        k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
        for k, v in bucket.entries.items()
        if isinstance(v, bytes)
    }


def namespace_bucket(meta_root: BucketTree, namespace: str) -> BucketTree:
    """``v1/<namespace>``, created when missing."""
    ns = meta_root.bucket(K.V1, namespace.encode(), create=True)
    assert ns is not None
    return ns


# -- content ---------------------------------------------------------------------------------


def recorded_blobs(meta_root: BucketTree, namespace: str) -> frozenset[str]:
    """Digests ``v1/<namespace>/content/blob`` holds: the content containerd shows that
    namespace (a file on disk without a record there is another namespace's, not this one's)."""
    blobs = meta_root.bucket(K.V1, namespace.encode(), K.CONTENT, K.BLOB)
    if blobs is None:
        return frozenset()
    return frozenset(k.decode("utf-8", "surrogateescape") for k, v in blobs.entries.items() if isinstance(v, BucketTree))


def merge_blob(ns: BucketTree, digest: str, size: int, labels: Mapping[str, str], now_ns: int) -> str:
    """Add the ``content/blob/<digest>`` record, or add the missing ``labels`` to it."""
    blobs = ns.bucket(K.CONTENT, K.BLOB, create=True)
    assert blobs is not None
    key = digest.encode()
    record = blobs.bucket(key)
    if record is None:
        record = blobs.bucket(key, create=True)
        assert record is not None
        put_timestamps(record, now_ns)
        record.put(K.SIZE, encode_varint(size))
        put_map(record, K.LABELS, labels)
        return ADDED
    current = read_map(record.bucket(K.LABELS))
    # a distribution source stays the one the blob was first fetched from, as a pull that
    # finds the blob present does not touch it
    wanted = {**current, **{k: v for k, v in labels.items()
                            if v and not (k.startswith(K.LABEL_DISTRIBUTION_SOURCE + ".") and k in current)}}
    # containerd's Update of a label to "" still leaves the labels bucket (see put_map)
    labels_changed = wanted != current or (
        record.bucket(K.LABELS) is None and any(not v for v in labels.values()))
    changed = labels_changed
    if record.get(K.SIZE) != encode_varint(size):
        record.put(K.SIZE, encode_varint(size))
        changed = True
    if not changed:
        return PRESENT
    if labels_changed:
        put_map(record, K.LABELS, {**labels, **wanted})
    record.put(K.UPDATED_AT, encode_time_ns(now_ns))
    return UPDATED


# -- images ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """One image record to write: the name and the index.json entry it comes from."""

    name: str
    target: Mapping[str, Any]
    annotations: Mapping[str, str]
    labels: Mapping[str, str]


def _target_bucket(target: Mapping[str, Any]) -> BucketTree:
    tb = BucketTree()
    tb.put(K.DIGEST, str(target["digest"]).encode())
    tb.put(K.MEDIATYPE, str(target["mediaType"]).encode())
    tb.put(K.SIZE, encode_varint(int(target["size"])))
    return tb


def _same_target(a: BucketTree | None, b: BucketTree) -> bool:
    return a is not None and all(a.get(k) == b.get(k) for k in (K.DIGEST, K.MEDIATYPE, K.SIZE))


def merge_image(ns: BucketTree, spec: ImageSpec, now_ns: int) -> str:
    """Create ``images/<name>``; an existing one is retargeted (``Update(img, "target")``).

    Labels the import asks for (CRI ``managed``/``pinned``) are added to an existing record;
    its annotations are kept, as ``ctr import`` keeps them.
    """
    images = ns.bucket(K.IMAGES, create=True)
    assert images is not None
    key = spec.name.encode()
    target = _target_bucket(spec.target)
    record = images.bucket(key)
    if record is None:
        record = images.bucket(key, create=True)
        assert record is not None
        put_timestamps(record, now_ns)
        put_map(record, K.LABELS, spec.labels)
        put_map(record, K.ANNOTATIONS, spec.annotations)
        record.entries[K.TARGET] = target
        return ADDED
    changed = False
    if not _same_target(record.bucket(K.TARGET), target):
        record.entries[K.TARGET] = target
        changed = True
    current = read_map(record.bucket(K.LABELS))
    wanted = {**current, **{k: v for k, v in spec.labels.items() if v}}
    if wanted != current:
        put_map(record, K.LABELS, wanted)
        changed = True
    if not changed:
        return PRESENT
    record.put(K.UPDATED_AT, encode_time_ns(now_ns))
    return UPDATED


# -- snapshots (meta.db side) ----------------------------------------------------------------


def backend_name(namespace: str, seq: int, key: str) -> str:
    """containerd ``createKey``: ``<namespace>/<seq>/<key>``."""
    return f"{namespace}/{seq}/{key}"


def put_snapshot_record(
    snapshotter_bucket: BucketTree, key: str, name: str, parent: str | None, now_ns: int
) -> None:
    """``snapshots/<sn>/<key>`` as ``Commit`` leaves it; an existing ``children`` list is kept."""
    old = snapshotter_bucket.bucket(key.encode())
    record = BucketTree()
    if old is not None and isinstance(old.entries.get(K.CHILDREN), BucketTree):
        record.entries[K.CHILDREN] = old.entries[K.CHILDREN]
    record.put(K.NAME, name.encode())
    if parent:
        record.put(K.PARENT, parent.encode())
    put_timestamps(record, now_ns)
    snapshotter_bucket.entries[key.encode()] = record


def add_child_link(snapshotter_bucket: BucketTree, parent: str, child: str) -> bool:
    """Put ``<child>=""`` into the parent's ``children``; False if it was already there."""
    record = snapshotter_bucket.bucket(parent.encode())
    if record is None:
        raise KeyError(parent)
    children = record.bucket(K.CHILDREN, create=True)
    assert children is not None
    if children.get(child.encode()) == b"":
        return False
    children.put(child.encode(), b"")
    return True


# -- snapshots (snapshotter metadata.db side) ------------------------------------------------


def parents_key(parent_id: int, child_id: int) -> bytes:
    """``v1/parents`` key: ``uvarint(parent) 0x00 uvarint(child)``."""
    return encode_uvarint(parent_id) + b"\x00" + encode_uvarint(child_id)


def put_backend_snapshot(
    backend_root: BucketTree,
    name: str,
    *,
    snapshot_id: int,
    parent: tuple[str, int] | None,
    inodes: int,
    size: int,
    now_ns: int,
) -> None:
    """A committed backend snapshot (``CommitActive`` result) plus its ``parents`` index entry.

    ``parent`` is the parent's (backend name, id). The ``v1/snapshots`` sequence is raised to
    at least ``snapshot_id`` so containerd never issues the id again.
    """
    snaps = backend_root.bucket(K.V1, K.SNAPSHOTS, create=True)
    assert snaps is not None
    record = BucketTree()
    record.put(K.ID, encode_uvarint(snapshot_id))
    record.put(K.KIND, bytes([KIND_COMMITTED]))
    if parent is not None:
        record.put(K.PARENT, parent[0].encode())
    put_timestamps(record, now_ns)
    record.put(K.INODES, encode_varint(inodes))
    record.put(K.SIZE, encode_varint(size))
    snaps.entries[name.encode()] = record
    snaps.sequence = max(snaps.sequence, snapshot_id)
    if parent is not None:
        parents = backend_root.bucket(K.V1, K.PARENTS, create=True)
        assert parents is not None
        parents.put(parents_key(parent[1], snapshot_id), name.encode())
