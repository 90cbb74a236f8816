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
from ctrconv.bolt.leaf import leaf_fields
from ctrconv.bolt.reader import BoltFile, Bucket
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_time, decode_varint
from ctrconv.containerd.records import ImageRecord, Target, read_image, text
from ctrconv.errors import CtrconvError, FormatError

#: (flags, key, value, leaf pgid) of one entry of ``images``, as ``Bucket.elements`` gives it
Element = tuple[int, bytes, bytes, int]
#: the plain values of a sub-bucket, by key
Values = dict[bytes, bytes]


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
    parts = _parts(db, value)
    if parts is None:
        return read_image(bucket._child(key, value, pgid), namespace, name)
    try:
        return _decode(*parts, namespace, name)
    except FormatError as exc:  # ``guarded``'s wording, without a closure per record
        raise FormatError(f"image {namespace}/{name}: {exc}") from None


def _parts(db: BoltFile, header: bytes) -> tuple[Values, Values | None, Values, Values] | None:
    """The record's plain fields, its target's (``None`` when it has none), labels and
    annotations, each one sound leaf page without a bucket among the entries read from it;
    ``None`` for anything else: a time stored as a bucket too (``Bucket.get`` makes a
    ``Bucket`` of it, which may raise), and a bucket among a target's entries."""
    record = leaf_fields(db, header)
    if record is None:
        return None
    fields, subs = record
    if not subs:  # no target, labels or annotations (``read_image``: "no target")
        return fields, None, {}, {}
    if K.CREATED_AT in subs or K.UPDATED_AT in subs:
        return None
    target = labels = annotations = None
    for name, sub in subs.items():
        if name in _SUBS:
            read = leaf_fields(db, sub)
            if read is None or read[1]:
                return None
            if name == K.TARGET:
                target = read[0]
            elif name == K.LABELS:
                labels = read[0]
            else:
                annotations = read[0]
    return fields, target, labels or {}, annotations or {}


_SUBS = frozenset((K.TARGET, K.LABELS, K.ANNOTATIONS))


def _decode(fields: Values, target: Values | None, labels: Values, annotations: Values,
            namespace: str, name: str) -> ImageRecord:
    """``read_image``'s decoding, field for field and in its order."""
    if target is None:
        raise FormatError("no target")
    size_raw = target.get(K.SIZE)
    created = fields.get(K.CREATED_AT)
    updated = fields.get(K.UPDATED_AT)
    return ImageRecord(
        namespace=namespace,
        name=name,
        target=Target(
            media_type=text(target.get(K.MEDIATYPE)) or "",
            digest=text(target.get(K.DIGEST)) or "",
            size=decode_varint(size_raw) if size_raw is not None else 0,
        ),
        labels={text(k): text(v) for k, v in labels.items()} if labels else {},
        annotations={text(k): text(v) for k, v in annotations.items()} if annotations else {},
        created_at=None if created is None else decode_time(created),
        updated_at=None if updated is None else decode_time(updated),
    )
