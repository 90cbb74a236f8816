"""Content records and snapshotter records decoded straight from their leaf pages, without a
``Bucket`` per record.

verify and ``ls`` read every content record of a namespace (32,000 at 10,000 images), and verify
and rebuild every record of a snapshotter's metadata.db (5,000); a
:class:`~ctrconv.bolt.reader.Bucket` per record and per labels bucket, each indexed on its first
lookup, cost about a second for the first and a quarter of one for the second. :func:`blobs`
and :func:`backend_snapshots` read each record's page once into a dict and decode the same
fields with the same functions as :func:`~ctrconv.containerd.records.read_blob` and
:func:`~ctrconv.containerd.records.read_backend_snapshot`, in the same order, so a bad field
raises the same error. A record that is not one sound leaf page (damage, keys out of order, a
labels bucket rooted at a branch) is read through those functions as before, which word its
error as they always did.
"""

from __future__ import annotations

from typing import Callable, Iterator, TypeVar

from ctrconv.bolt import _structs as S
from ctrconv.bolt.leaf import leaf_record
from ctrconv.bolt.reader import BoltFile, Bucket
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_time, decode_uvarint_exact, decode_varint
from ctrconv.containerd.records import (
    BackendSnapshot,
    BlobRecord,
    kind_name,
    kept_time,
    read_backend_snapshot,
    name_text,
    read_blob,
    text,
)
from ctrconv.errors import FormatError

T = TypeVar("T")
#: a record's entries (key -> (flags, value)) as :func:`leaf_record` reads them
Fields = dict[bytes, tuple[int, bytes]]


def blobs(db: BoltFile, bucket: Bucket, namespace: str) -> Iterator[BlobRecord]:
    """The records of ``content/blob`` (``bucket``) in key order, as ``read_blob`` decodes them."""
    return _records(db, bucket, f"content {namespace}/",
                    lambda fields, labels, digest: _blob(fields, labels, namespace, digest),
                    lambda sub, digest: read_blob(sub, namespace, digest))


def backend_snapshots(db: BoltFile, bucket: Bucket, *, times: bool = True) -> Iterator[BackendSnapshot]:
    """The records of a snapshotter's ``v1/snapshots`` (``bucket``) in key order, as
    ``read_backend_snapshot`` decodes them."""
    return _records(db, bucket, "backend snapshot ",
                    lambda fields, labels, key: _backend_snapshot(fields, labels, key, times),
                    lambda found, key: read_backend_snapshot(found, key, times=times))


def _records(db: BoltFile, bucket: Bucket, context: str, decode: Callable[[Fields, Fields, str], T],
             read: Callable[[Bucket, str], T]) -> Iterator[T]:
    """Each sub-bucket of ``bucket`` in key order: ``decode`` of its fields and labels when it
    is one sound leaf page with a sound labels page (or none), else ``read`` of it as a
    ``Bucket``; an error of ``decode`` is worded as ``records.guarded`` words it (``context``
    and the record's name)."""
    for flags, key, value, pgid in bucket.elements():
        if not flags & S.BUCKET_LEAF_FLAG:
            continue  # a plain value is no record (``buckets()`` skips it too)
        name = name_text(key)
        fields = leaf_record(db, value)
        labels = None
        if fields is not None:
            found = fields.get(K.LABELS)
            if found is not None and found[0] & S.BUCKET_LEAF_FLAG:
                labels = leaf_record(db, found[1])
                if labels is None or any(f & S.BUCKET_LEAF_FLAG for f, _ in labels.values()):
                    fields = None  # a bucket among the labels: the reading that meets it words any error
            else:
                labels = {}
        if fields is None:
            yield read(bucket._child(key, value, pgid), name)
            continue
        try:
            record = decode(fields, labels, name)  # type: ignore[arg-type]
        except FormatError as exc:  # ``guarded``'s wording, without a closure and a name per record
            raise FormatError(f"{context}{name}: {exc}") from None
        yield record


def _plain(fields: dict[bytes, tuple[int, bytes]], key: bytes) -> bytes | None:
    """``Bucket.get``: the plain value of ``key``, ``None`` when absent or a bucket."""
    found = fields.get(key)
    return None if found is None or found[0] & S.BUCKET_LEAF_FLAG else found[1]


def _blob(fields: Fields, labels: Fields, namespace: str, digest: str) -> BlobRecord:
    size_raw = _plain(fields, K.SIZE)
    size = decode_varint(size_raw) if size_raw is not None else 0
    label_map = {text(k): text(v) for k, (_, v) in labels.items()}
    created = _plain(fields, K.CREATED_AT)
    updated = _plain(fields, K.UPDATED_AT)
    return BlobRecord(
        namespace=namespace,
        digest=digest,
        size=size,
        labels=label_map,
        created_at=None if created is None else decode_time(created),
        updated_at=None if updated is None else decode_time(updated),
    )


def _backend_snapshot(fields: Fields, labels: Fields, key: str, times: bool = True) -> BackendSnapshot:
    """``read_backend_snapshot``'s decoding, field for field and in its order."""
    id_raw = _plain(fields, K.ID)
    if id_raw is None:
        raise FormatError("no id")
    inodes, size = _plain(fields, K.INODES), _plain(fields, K.SIZE)
    snapshot_id = decode_uvarint_exact(id_raw)
    kind = kind_name(_plain(fields, K.KIND))
    parent = name_text(_plain(fields, K.PARENT))
    label_map = {text(k): text(v) for k, (_, v) in labels.items()}
    created = _plain(fields, K.CREATED_AT)
    updated = _plain(fields, K.UPDATED_AT)
    created_at = kept_time(None if created is None else decode_time(created), times)
    updated_at = kept_time(None if updated is None else decode_time(updated), times)
    return BackendSnapshot(
        key=key, id=snapshot_id, kind=kind, parent=parent, labels=label_map, created_at=created_at,
        updated_at=updated_at, inodes=decode_varint(inodes) if inodes is not None else None,
        size=decode_varint(size) if size is not None else None,
    )
