"""Content records decoded straight from their leaf pages, without a ``Bucket`` per record.

verify and ``ls`` read every content record of a namespace (32,000 at 10,000 images); a
:class:`~ctrconv.bolt.reader.Bucket` per record and per labels bucket, each indexed on its first
lookup, cost about a second. :func:`blobs` reads each record's page once into a dict and decodes
the same fields with the same functions as :func:`~ctrconv.containerd.records.read_blob`, in the
same order (size, labels, times), so a bad field raises the same error. A record that is not one
sound leaf page (damage, keys out of order, a labels bucket rooted at a branch) is read through
``read_blob`` as before, which words its error as it always did.
"""

from __future__ import annotations

from typing import Iterator

from ctrconv.bolt import _structs as S
from ctrconv.bolt.leaf import leaf_record
from ctrconv.bolt.reader import BoltFile, Bucket
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_time, decode_varint
from ctrconv.containerd.records import BlobRecord, read_blob, text
from ctrconv.errors import FormatError


def blobs(db: BoltFile, bucket: Bucket, namespace: str) -> Iterator[BlobRecord]:
    """The records of ``content/blob`` (``bucket``) in key order, as ``read_blob`` decodes them."""
    for flags, key, value, pgid in bucket.elements():
        if not flags & S.BUCKET_LEAF_FLAG:
            continue  # a plain value is no record (``buckets()`` skips it too)
        digest = text(key)
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
            yield read_blob(bucket._child(key, value, pgid), namespace, digest)
            continue
        try:
            record = _decode(fields, labels, namespace, digest)
        except FormatError as exc:  # ``guarded``'s wording, without a closure and a name per record
            raise FormatError(f"content {namespace}/{digest}: {exc}") from None
        yield record


def _plain(fields: dict[bytes, tuple[int, bytes]], key: bytes) -> bytes | None:
    """``Bucket.get``: the plain value of ``key``, ``None`` when absent or a bucket."""
    found = fields.get(key)
    return None if found is None or found[0] & S.BUCKET_LEAF_FLAG else found[1]


def _decode(fields: dict[bytes, tuple[int, bytes]], labels: dict[bytes, tuple[int, bytes]],
            namespace: str, digest: str) -> BlobRecord:
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
