"""Byte layouts of the bbolt file format, declared once (with construct) for all of ctrconv.bolt.

Every structure the reader, the checker, salvage and the writer decode or encode is one
declaration below (field names as in bbolt's Go structs; meanings in docs/formats.md and
shared/docs/bolt-format.md). Nothing else in ctrconv imports construct.

* The metas (two per file) are parsed and built by construct itself.
* Page headers, bucket headers, leaf and branch elements and freelist ids, decoded once per
  page or per key, go through ``struct.Struct`` codecs *derived* from the declarations by
  :func:`derive` (format string and size computed from construct's fields, as dissect.cstruct
  compiles its definitions): construct takes ~20 µs per parse (~7 µs with ``.compile()``)
  where ``struct`` takes 0.15 µs, and the reader decodes one header per page and one element
  per key. ``benchmarks/bench_bolt.py`` measures the difference.
"""

from __future__ import annotations

import struct

from construct import Construct, FormatField, Int16ul, Int32ul, Int64ul, Renamed, Struct

# bbolt writes the CPU's byte order; ctrconv reads and writes little-endian files only.
BYTE_ORDER = "<"

MAGIC = 0xED0CDAED
VERSION = 2
NO_FREELIST = 0xFFFFFFFFFFFFFFFF
MAX_KEY_SIZE = 32768
MAX_VALUE_SIZE = (1 << 31) - 2

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01
# A freelist page with this many ids or more says 0xFFFF in its header and stores the real
# count as one more u64 (FreelistCount) before the ids.
FREELIST_COUNT_OVERFLOW = 0xFFFF

# -- the declarations -----------------------------------------------------------------------

#: At offset 0 of every page but overflow continuations; inline buckets carry one with id 0.
PageHeader = Struct("id" / Int64ul, "flags" / Int16ul, "count" / Int16ul, "overflow" / Int32ul)
#: The value of a bucket entry; root 0 means an inline leaf page follows it in the value.
BucketHeader = Struct("root" / Int64ul, "sequence" / Int64ul)
#: At page offset 16 of pages 0 and 1; ``checksum`` is FNV-1a 64 of the fields before it.
Meta = Struct(
    "magic" / Int32ul,
    "version" / Int32ul,
    "page_size" / Int32ul,
    "flags" / Int32ul,
    "root" / BucketHeader,
    "freelist" / Int64ul,
    "pgid" / Int64ul,
    "txid" / Int64ul,
    "checksum" / Int64ul,
)
#: The element arrays start right after the page header; ``pos`` counts from the element itself.
LeafElement = Struct("flags" / Int32ul, "pos" / Int32ul, "ksize" / Int32ul, "vsize" / Int32ul)
BranchElement = Struct("pos" / Int32ul, "ksize" / Int32ul, "pgid" / Int64ul)
#: A freelist page holds ``count`` of these after its header (FreelistCount first on overflow).
FreelistCount = Int64ul
FreelistId = Int64ul


# -- codecs derived from them -----------------------------------------------------------------


def _int_fields(layout: Construct) -> list[FormatField]:
    """The fixed-size integer fields of ``layout`` in byte order, nested structs flattened."""
    if isinstance(layout, FormatField):
        return [layout]
    if isinstance(layout, Renamed):
        return _int_fields(layout.subcon)
    if isinstance(layout, Struct):
        return [field for sub in layout.subcons for field in _int_fields(sub)]
    raise TypeError(f"{layout!r} is not made of fixed-size integer fields; it has no struct format")


def derive(layout: Construct) -> struct.Struct:
    """The ``struct.Struct`` that reads and writes exactly what ``layout`` does, flattened."""
    fields = _int_fields(layout)
    orders = {field.fmtstr[0] for field in fields}
    if orders != {BYTE_ORDER}:
        raise TypeError(f"{layout!r} mixes byte order {sorted(orders)}; bolt layouts are {BYTE_ORDER!r}")
    codec = struct.Struct(BYTE_ORDER + "".join(field.fmtstr[1:] for field in fields))
    if codec.size != layout.sizeof():
        raise TypeError(f"struct format {codec.format!r} is {codec.size} bytes, {layout!r} {layout.sizeof()}")
    return codec


def array(layout: Construct, count: int) -> struct.Struct:
    """A codec for ``count`` consecutive ``layout`` items (e.g. a freelist's ids) in one call."""
    item = derive(layout).format[len(BYTE_ORDER) :]
    return struct.Struct(BYTE_ORDER + (f"{count}{item}" if len(item) == 1 else item * count))


def _offset_of(layout: Struct, name: str) -> int:
    offset = 0
    for sub in layout.subcons:
        if sub.name == name:
            return offset
        offset += sub.sizeof()
    raise KeyError(name)


PAGE_HEADER = derive(PageHeader)
BUCKET_HEADER = derive(BucketHeader)
LEAF_ELEMENT = derive(LeafElement)
BRANCH_ELEMENT = derive(BranchElement)
FREELIST_COUNT = derive(FreelistCount)
FREELIST_ID = derive(FreelistId)

PAGE_HEADER_SIZE = PAGE_HEADER.size
BUCKET_HEADER_SIZE = BUCKET_HEADER.size
ELEMENT_SIZE = LEAF_ELEMENT.size
if BRANCH_ELEMENT.size != ELEMENT_SIZE:
    raise TypeError("leaf and branch elements must share one stride")
META_OFFSET = PAGE_HEADER_SIZE
META_SIZE = Meta.sizeof()
META_END = META_OFFSET + META_SIZE  # a meta page is read up to here
META_CHECKSUMMED = _offset_of(Meta, "checksum")

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64, the meta page checksum."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def meta_checksum(meta: bytes) -> int:
    """The checksum a meta struct (``Meta`` bytes, checksum field ignored) must carry."""
    return fnv1a64(meta[:META_CHECKSUMMED])


def page_type_name(flags: int) -> str:
    return {
        BRANCH_PAGE: "branch",
        LEAF_PAGE: "leaf",
        META_PAGE: "meta",
        FREELIST_PAGE: "freelist",
    }.get(flags, f"unknown<{flags:#x}>")
