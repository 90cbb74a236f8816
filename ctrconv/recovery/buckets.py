"""Reading the in-memory meta.db tree a rebuild repairs: namespaces, image targets, content
records, backend ids; shared by the stages so none decodes a record its own way."""

from __future__ import annotations

from typing import Any

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import read_backend_id, read_target, target_digest
from ctrconv.errors import FormatError


def text(raw: bytes) -> str:
    """A bucket key as text; bytes that are no UTF-8 survive (surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def namespaces(meta: BucketTree) -> list[tuple[str, BucketTree]]:
    """(name, ``v1/<ns>`` bucket) for every namespace of a meta.db tree, sorted."""
    v1 = meta.bucket(K.V1)
    if v1 is None:
        return []
    return [(text(k), b) for k, b in sorted(v1.entries.items()) if isinstance(b, BucketTree)]


def target_descriptor(record: BucketTree | bytes) -> dict[str, Any] | None:
    """An image record's ``target`` as a descriptor; None when the record has none, or one
    too damaged to decode (the image is then dropped, not the rebuild)."""
    try:
        target = read_target(record) if isinstance(record, BucketTree) else None
    except FormatError:
        return None
    if target is None:
        return None
    return target.descriptor()


def image_descriptors(ns: BucketTree) -> list[dict[str, Any]]:
    """Target descriptors of one namespace's image records."""
    images = ns.bucket(K.IMAGES)
    found = (target_descriptor(rec) for rec in (images.entries.values() if images else []))
    return [desc for desc in found if desc is not None]


def image_targets(ns: BucketTree) -> dict[str, list[str]]:
    """target digest -> image names in one namespace."""
    out: dict[str, list[str]] = {}
    images = ns.bucket(K.IMAGES)
    for name, rec in (images.entries.items() if images else []):
        digest = target_digest(rec) if isinstance(rec, BucketTree) else None
        if digest is not None:
            out.setdefault(digest, []).append(text(name))
    return out


def has_blob_record(ns: BucketTree, digest: str) -> bool:
    """The namespace has a content record for ``digest``."""
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    return blobs is not None and digest.encode() in blobs.entries


def backend_id(record: BucketTree) -> int | None:
    """A salvaged backend record's id; ``None`` when absent or undecodable (not reusable)."""
    try:
        return read_backend_id(record)
    except FormatError:
        return None
