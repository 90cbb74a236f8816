"""Image records decoded straight from their leaf pages, without a ``Bucket`` per record.

``ls`` and verify read every image record of a namespace (10,000 at 10,000 images); a
:class:`~ctrconv.bolt.reader.Bucket` per record and per target, labels and annotations bucket,
each indexed on its first lookup, cost about half a second, serially. As
:mod:`~ctrconv.containerd.blobrecords` does for content records, :func:`decode` reads each
record's page (and its target's) once into a dict and decodes the fields ``read_image`` decodes,
with the same functions, in the same order (target, labels, annotations, times), so a bad field
raises the same error. A record that is not one sound leaf page (damage, keys out of order, a
bucket among its labels, a sub-bucket rooted at a branch) is read by ``read_image`` as before,
which words its error as it always did.

:func:`stored` takes the records as stored, undecoded, so a caller can split them between two
processes before decoding (``ls``): the elements up to the first the walk cannot read, and that
error, which comes after every record before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ctrconv.bolt import _structs as S
from ctrconv.bolt.reader import BoltFile, Bucket, leaf_record
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_time, decode_varint
from ctrconv.containerd.records import ImageRecord, Target, guarded, read_image, text
from ctrconv.errors import CtrconvError, FormatError

#: (flags, key, value, leaf pgid) of one entry of ``images``, as ``Bucket.elements`` gives it
Element = tuple[int, bytes, bytes, int]
Fields = dict[bytes, tuple[int, bytes]]


@dataclass
class StoredImages:
    """A namespace's image records as stored: ``elements`` (sub-buckets only, in key order) up
    to the first the walk of ``images`` could not read, and that error (``None`` when whole)."""

    db: BoltFile
    bucket: Bucket | None
    namespace: str
    elements: list[Element]
    error: CtrconvError | None = None

    def decode(self, element: Element) -> ImageRecord:
        """One record, as ``read_image`` of its ``Bucket`` reads it (errors included)."""
        assert self.bucket is not None  # no elements without the bucket
        return decode(self.db, self.bucket, element, self.namespace)


def stored(db: BoltFile, bucket: Bucket | None, namespace: str) -> StoredImages:
    """The undecoded records of ``images`` (``bucket``; ``None`` when the namespace has none)."""
    found = StoredImages(db, bucket, namespace, [])
    if bucket is None:
        return found
    try:
        for element in bucket.elements():
            if element[0] & S.BUCKET_LEAF_FLAG:  # a plain value is no record (``buckets()`` skips it)
                found.elements.append(element)
    except CtrconvError as exc:
        found.error = exc
    return found


def images(db: BoltFile, bucket: Bucket, namespace: str) -> Iterator[ImageRecord]:
    """The records of ``images`` (``bucket``) in key order, as ``read_image`` decodes them."""
    for element in bucket.elements():
        if element[0] & S.BUCKET_LEAF_FLAG:
            yield decode(db, bucket, element, namespace)


def decode(db: BoltFile, bucket: Bucket, element: Element, namespace: str) -> ImageRecord:
    """One record of ``images``: from its leaf pages when they are sound, else ``read_image``."""
    _, key, value, pgid = element
    name = text(key)
    fields = leaf_record(db, value)
    parts = None if fields is None else _parts(db, fields)
    if parts is None:
        return read_image(bucket._child(key, value, pgid), namespace, name)
    target, labels, annotations = parts
    return guarded(f"image {namespace}/{name}", lambda: _decode(fields, target, labels, annotations, namespace, name))


def _parts(db: BoltFile, fields: Fields) -> tuple[Fields | None, Fields, Fields] | None:
    """The record's target (``None`` when it has none), labels and annotations, each one sound
    leaf page with no bucket among the entries it is read for; ``None`` for anything else (and
    for a time stored as a bucket: ``Bucket.get`` makes a ``Bucket`` of it, which may raise)."""
    if any(_is_bucket(fields, k) for k in (K.CREATED_AT, K.UPDATED_AT)):
        return None
    target = _sub(db, fields, K.TARGET)
    labels = _sub(db, fields, K.LABELS)
    annotations = _sub(db, fields, K.ANNOTATIONS)
    if target is False or labels is False or annotations is False:
        return None
    return target, labels or {}, annotations or {}


def _is_bucket(fields: Fields, key: bytes) -> bool:
    found = fields.get(key)
    return found is not None and bool(found[0] & S.BUCKET_LEAF_FLAG)


def _sub(db: BoltFile, fields: Fields, key: bytes) -> Fields | None | bool:
    """``Bucket.bucket(key)`` read whole: its entries, ``None`` when absent or a plain value,
    ``False`` when it is not one sound leaf page of plain values (read the old way)."""
    found = fields.get(key)
    if found is None or not found[0] & S.BUCKET_LEAF_FLAG:
        return None
    entries = leaf_record(db, found[1])
    if entries is None or any(flags & S.BUCKET_LEAF_FLAG for flags, _ in entries.values()):
        return False
    return entries


def _plain(fields: Fields, key: bytes) -> bytes | None:
    """``Bucket.get``: the plain value of ``key``, ``None`` when absent (buckets were excluded)."""
    found = fields.get(key)
    return None if found is None else found[1]


def _decode(fields: Fields, target: Fields | None, labels: Fields, annotations: Fields,
            namespace: str, name: str) -> ImageRecord:
    """``read_image``'s decoding, field for field and in its order."""
    if target is None:
        raise FormatError("no target")
    size_raw = _plain(target, K.SIZE)
    created = _plain(fields, K.CREATED_AT)
    updated = _plain(fields, K.UPDATED_AT)
    return ImageRecord(
        namespace=namespace,
        name=name,
        target=Target(
            media_type=text(_plain(target, K.MEDIATYPE)) or "",
            digest=text(_plain(target, K.DIGEST)) or "",
            size=decode_varint(size_raw) if size_raw is not None else 0,
        ),
        labels={text(k): text(v) for k, (_, v) in labels.items()},
        annotations={text(k): text(v) for k, (_, v) in annotations.items()},
        created_at=None if created is None else decode_time(created),
        updated_at=None if updated is None else decode_time(updated),
    )
