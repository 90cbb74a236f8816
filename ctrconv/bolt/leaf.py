"""A sub-bucket that is one sound leaf page, read whole into dicts without a ``Bucket``.

Records are small buckets of one leaf page (inline, or page-rooted when they hold a bucket);
``ls`` and verify read tens of thousands in a row, and a :class:`~ctrconv.bolt.reader.Bucket`
per record, indexed on its first lookup, cost more than the decoding. These readers answer
what a ``Bucket`` of such a record answers, and ``None`` for anything else (damage included):
the caller then reads that record as a ``Bucket``, which raises the error it always raised.
"""

from __future__ import annotations

from ctrconv.bolt import _structs as S
from ctrconv.bolt.reader import BoltFile


def leaf_record(db: BoltFile, header: bytes) -> dict[bytes, tuple[int, bytes]] | None:
    """The entries (key -> (flags, value)) of the sub-bucket whose stored value is ``header``
    when it is one sound leaf page, inline or page-rooted, with keys strictly ascending: what a
    :class:`Bucket` of it answers, without one (32,000 content records in a row). ``None`` for
    anything else, damage included: the caller reads that one as a :class:`Bucket`, which
    raises the error it always raised."""
    if len(header) < S.BUCKET_HEADER_SIZE:
        return None
    root, _ = S.BUCKET_HEADER.unpack_from(header, 0)
    try:
        if root == 0:
            if len(header) < S.BUCKET_HEADER_SIZE + S.PAGE_HEADER_SIZE:
                return None
            _, flags, count, _ = S.PAGE_HEADER.unpack_from(header, S.BUCKET_HEADER_SIZE)
            data = header[S.BUCKET_HEADER_SIZE:]
            if flags != S.LEAF_PAGE or S.PAGE_HEADER_SIZE + S.ELEMENT_SIZE * count > len(data):
                return None
        else:
            leaf = db.leaf_bytes(root)
            if leaf is None:
                return None
            data, count = leaf
        # Page.leaf_elements' checks, inlined: a generator step per element cost a third
        end, off = len(data), S.PAGE_HEADER_SIZE
        entries: dict[bytes, tuple[int, bytes]] = {}
        previous = None
        for flags, pos, ksize, vsize in S.LEAF_ELEMENT.iter_unpack(data[off : off + S.ELEMENT_SIZE * count]):
            key_at = off + pos
            value_at = key_at + ksize
            if flags & ~S.BUCKET_LEAF_FLAG or value_at + vsize > end:
                return None
            key = data[key_at:value_at]
            if previous is not None and key <= previous:
                return None
            entries[key] = (flags, data[value_at : value_at + vsize])
            previous = key
            off += S.ELEMENT_SIZE
    except Exception:  # noqa: BLE001 -- whatever it is, the Bucket reading meets and raises it
        return None
    return entries


def leaf_fields(db: BoltFile, header: bytes) -> tuple[dict[bytes, bytes], dict[bytes, bytes]] | None:
    """:func:`leaf_record` as two dicts, the plain values and the sub-buckets' headers (a
    record's fields are looked up by kind: one dict lookup each, no flags to test): ``None``
    whenever ``leaf_record`` is ``None``, and the same entries otherwise."""
    if len(header) < S.BUCKET_HEADER_SIZE:
        return None
    root, _ = S.BUCKET_HEADER.unpack_from(header, 0)
    try:
        if root == 0:  # inline: the page follows the header (``Page``'s check, without one)
            if len(header) < S.BUCKET_HEADER_SIZE + S.PAGE_HEADER_SIZE:
                return None
            _, flags, count, _ = S.PAGE_HEADER.unpack_from(header, S.BUCKET_HEADER_SIZE)
            data = header[S.BUCKET_HEADER_SIZE:]
            if flags != S.LEAF_PAGE or S.PAGE_HEADER_SIZE + S.ELEMENT_SIZE * count > len(data):
                return None
        else:
            leaf = db.leaf_bytes(root)
            if leaf is None:
                return None
            data, count = leaf
        end, off = len(data), S.PAGE_HEADER_SIZE
        values: dict[bytes, bytes] = {}
        buckets: dict[bytes, bytes] = {}
        previous = b""
        for flags, pos, ksize, vsize in S.LEAF_ELEMENT.iter_unpack(data[off : off + S.ELEMENT_SIZE * count]):
            key_at = off + pos
            value_at = key_at + ksize
            key = data[key_at:value_at]
            if value_at + vsize > end or (key <= previous and off > S.PAGE_HEADER_SIZE):
                return None
            if flags == 0:
                values[key] = data[value_at : value_at + vsize]
            elif flags == S.BUCKET_LEAF_FLAG:
                buckets[key] = data[value_at : value_at + vsize]
            else:
                return None
            previous = key
            off += S.ELEMENT_SIZE
    except Exception:  # noqa: BLE001 -- whatever it is, the Bucket reading meets and raises it
        return None
    return values, buckets
