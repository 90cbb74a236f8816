"""Merge an import's records into a meta.db / snapshotter db tree, the way containerd updates.

Everything here works on the in-memory tree of a bolt file, never on disk, and the bytes of
every record come from :mod:`ctrconv.containerd.records`. Merging follows one rule: an
existing record is left exactly as it is unless the import needs a field it lacks (a GC label,
a retargeted image), and then only that field and ``updatedat`` change, which is what
containerd's own ``Update(..., fieldpaths)`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import (
    KIND_COMMITTED,
    BackendSnapshot,
    BlobRecord,
    ImageRecord,
    SnapshotRecord,
    Target,
    add_child,
    go_time,
    key_bytes,
    read_map,
    same_target,
    text,
    write_backend_snapshot,
    write_blob,
    write_blob_size,
    write_image,
    write_map,
    write_parent_link,
    write_snapshot,
    write_target,
    write_updated_at,
)
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

#: outcome of a merge, as reported to the user
ADDED, UPDATED, PRESENT = "added", "updated", "present"

#: a record's namespace/snapshotter as the writers see it: they fill the bucket their caller
#: found for it, and where that bucket sits is only read back (``read_x`` takes it as arguments)
_PLACED_BY_CALLER = ""


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


def namespace_bucket(meta_root: BucketTree, namespace: str) -> BucketTree:
    """``v1/<namespace>``, created when missing."""
    ns = meta_root.bucket(K.V1, key_bytes(namespace), create=True)
    assert ns is not None
    return ns


# -- content ---------------------------------------------------------------------------------


def recorded_blobs(meta_root: BucketTree, namespace: str) -> frozenset[str]:
    """Digests ``v1/<namespace>/content/blob`` holds: the content containerd shows that
    namespace (a file on disk without a record there is another namespace's, not this one's)."""
    blobs = meta_root.bucket(K.V1, key_bytes(namespace), K.CONTENT, K.BLOB)
    if blobs is None:
        return frozenset()
    return frozenset(text(k) for k, _ in blobs.buckets())


def append_sources(current: str, added: str) -> str:
    """containerd's ``appendDistributionSourceLabel``: the repositories of both comma lists,
    sorted, each once (a pull that finds a blob present still adds its repository)."""
    return ",".join(sorted({r for r in (*current.split(","), *added.split(",")) if r}))


def merge_blob(ns: BucketTree, digest: str, size: int, labels: Mapping[str, str], now_ns: int,
               append_distribution: bool = False) -> str:
    """Add the ``content/blob/<digest>`` record, or add the missing ``labels`` to it.

    ``append_distribution``: the blob was pulled from a registry, so its
    ``distribution.source`` labels add the repositories to the recorded ones, as every
    ``ctr images pull`` does; otherwise a recorded source stays as it is."""
    blobs = ns.bucket(K.CONTENT, K.BLOB, create=True)
    assert blobs is not None
    key = key_bytes(digest)
    record = blobs.bucket(key)
    now = go_time(now_ns)
    if record is None:
        record = blobs.bucket(key, create=True)
        assert record is not None
        write_blob(record, BlobRecord(_PLACED_BY_CALLER, digest, size, dict(labels), now, now))
        return ADDED
    current = read_map(record.bucket(K.LABELS))
    labels = _keeping_content_references(current, labels)
    # a distribution source stays the one the blob was first fetched from, as a pull that
    # finds the blob present does not touch it
    wanted = {**current, **{k: v for k, v in labels.items()
                            if v and not (k.startswith(K.LABEL_DISTRIBUTION_SOURCE + ".") and k in current)}}
    if append_distribution:
        wanted.update({k: append_sources(current[k], v) for k, v in labels.items()
                       if v and k.startswith(K.LABEL_DISTRIBUTION_SOURCE + ".") and k in current})
    # containerd's Update of a label to "" still leaves the labels bucket (see write_map)
    labels_changed = wanted != current or (
        record.bucket(K.LABELS) is None and any(not v for v in labels.values()))
    changed = write_blob_size(record, size) or labels_changed
    if not changed:
        return PRESENT
    if labels_changed:
        write_map(record, K.LABELS, {**labels, **wanted})
    write_updated_at(record, now)
    return UPDATED


def _keeping_content_references(current: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` for a record that has ``current`` ones, none of whose content references
    (``containerd.io/gc.ref.content.*``) is written over: a reference the record lacks gets a
    key its prefix has free instead. An archive import with ``--platform`` of an index a pull
    had recorded numbered its selected children ``m.0``, ``m.1`` over the pull's, and the
    host's manifest, nothing referencing it any more, went with containerd's next GC, its
    snapshots too (a red-team run on 2.x, whose own import keeps every reference; 1.6's ctr
    loses it as ctrconv did). Existing records only ever gain references."""
    prefix = K.LABEL_GC_CONTENT + "."
    if not any(k.startswith(prefix) and k in current and current[k] != v for k, v in labels.items()):
        return dict(labels)
    taken = {**current, **labels}  # (a free key is free in both: the new labels keep theirs)
    referenced = {v for k, v in current.items() if k.startswith(prefix)}
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not key.startswith(prefix) or key not in current or current[key] == value:
            out[key] = value
            taken[key] = value
            continue
        if value in referenced:
            continue  # (already referenced under another key)
        stem = key.rstrip("0123456789")
        n = 0 if stem.endswith(".") else 1  # (containerd's numbering: m.0, m.1; config, config1)
        while f"{stem}{n}" in taken:
            n += 1
        out[f"{stem}{n}"] = taken[f"{stem}{n}"] = value
        referenced.add(value)
    return out


# -- images ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """One image record to write: the name and the index.json entry it comes from."""

    name: str
    target: Mapping[str, Any]
    annotations: Mapping[str, str]
    labels: Mapping[str, str]


def merge_image(ns: BucketTree, spec: ImageSpec, now_ns: int) -> str:
    """Create ``images/<name>``; an existing one is retargeted (``Update(img, "target")``).

    Labels the import asks for (CRI ``managed``/``pinned``) are added to an existing record.
    Its annotations are the target's (containerd's ``writeImage`` stores
    ``image.Target.Annotations``), and ``Update(img, "target")`` replaces the target as a unit:
    they become the new entry's (kept, the record and every later export's ``index.json``
    described the previous version of the image: a red-team run).
    """
    images = ns.bucket(K.IMAGES, create=True)
    assert images is not None
    key = key_bytes(spec.name)
    target = Target(str(spec.target["mediaType"]), str(spec.target["digest"]), int(spec.target["size"]))
    record = images.bucket(key)
    now = go_time(now_ns)
    if record is None:
        record = images.bucket(key, create=True)
        assert record is not None
        write_image(record, ImageRecord(_PLACED_BY_CALLER, spec.name, target, dict(spec.labels),
                                        dict(spec.annotations), now, now))
        return ADDED
    changed = False
    if not same_target(record, target):
        write_target(record, target)
        changed = True
    annotations = {k: v for k, v in spec.annotations.items() if v}
    if read_map(record.bucket(K.ANNOTATIONS)) != annotations:
        write_map(record, K.ANNOTATIONS, annotations, labels=False)
        changed = True
    current = read_map(record.bucket(K.LABELS))
    wanted = {**current, **{k: v for k, v in spec.labels.items() if v}}
    if wanted != current:
        write_map(record, K.LABELS, wanted)
        changed = True
    if not changed:
        return PRESENT
    write_updated_at(record, now)
    return UPDATED


# -- snapshots (meta.db side) ----------------------------------------------------------------


def put_snapshot_record(
    snapshotter_bucket: BucketTree, key: str, name: str, parent: str | None, now_ns: int
) -> None:
    """``snapshots/<sn>/<key>`` as ``Commit`` leaves it; an existing ``children`` list is kept."""
    old = snapshotter_bucket.bucket(key_bytes(key))
    record = BucketTree()
    now = go_time(now_ns)
    write_snapshot(record, SnapshotRecord(_PLACED_BY_CALLER, _PLACED_BY_CALLER, key, name, parent,
                                          created_at=now, updated_at=now))
    if old is not None and isinstance(old.entries.get(K.CHILDREN), BucketTree):
        record.entries[K.CHILDREN] = old.entries[K.CHILDREN]
    snapshotter_bucket.entries[key_bytes(key)] = record


def add_child_link(snapshotter_bucket: BucketTree, parent: str, child: str) -> bool:
    """Put ``<child>=""`` into the parent's ``children``; False if it was already there."""
    record = snapshotter_bucket.bucket(key_bytes(parent))
    if record is None:
        raise KeyError(parent)
    return add_child(record, child)


# -- snapshots (snapshotter metadata.db side) ------------------------------------------------


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
    now = go_time(now_ns)
    write_backend_snapshot(record, BackendSnapshot(
        name, snapshot_id, K.SNAPSHOT_KINDS[KIND_COMMITTED], parent[0] if parent else None,
        created_at=now, updated_at=now, inodes=inodes, size=size))
    snaps.entries[key_bytes(name)] = record
    snaps.sequence = max(snaps.sequence, snapshot_id)
    if parent is not None:
        parents = backend_root.bucket(K.V1, K.PARENTS, create=True)
        assert parents is not None
        write_parent_link(parents, parent[1], snapshot_id, name)
