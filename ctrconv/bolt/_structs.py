"""The constants and ``struct`` codecs every part of ctrconv.bolt reads and writes pages with.

The byte layouts themselves are declared once, with construct, in :mod:`ctrconv.bolt.layouts`
(field names as in bbolt's Go structs; meanings in docs/formats.md). The codecs below are
*derived* from those declarations and written into this file by
``python3 -m ctrconv.bolt.layouts --write`` (a test fails when they drift), so reading a root
never imports construct (~40 ms of start-up, pdb included) and decodes a header in 0.15 µs
where construct takes ~20 µs (``benchmarks/bench_bolt.py``).
"""

from __future__ import annotations

import struct


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

# -- codecs derived from ctrconv.bolt.layouts ------------------------------------------------

# BEGIN GENERATED: python3 -m ctrconv.bolt.layouts --write
PAGE_HEADER = struct.Struct("<QHHL")
BUCKET_HEADER = struct.Struct("<QQ")
LEAF_ELEMENT = struct.Struct("<LLLL")
BRANCH_ELEMENT = struct.Struct("<LLQ")
FREELIST_COUNT = struct.Struct("<Q")
FREELIST_ID = struct.Struct("<Q")
META = struct.Struct("<LLLLQQQQQQ")
META_FIELDS = ("magic", "version", "page_size", "flags", "root", "sequence", "freelist", "pgid", "txid", "checksum")
META_CHECKSUMMED = 56
# END GENERATED

PAGE_HEADER_SIZE = PAGE_HEADER.size
BUCKET_HEADER_SIZE = BUCKET_HEADER.size
ELEMENT_SIZE = LEAF_ELEMENT.size
if BRANCH_ELEMENT.size != ELEMENT_SIZE:
    raise TypeError("leaf and branch elements must share one stride")
META_OFFSET = PAGE_HEADER_SIZE
META_SIZE = META.size
META_END = META_OFFSET + META_SIZE  # a meta page is read up to here


def freelist_ids(count: int) -> struct.Struct:
    """A codec for ``count`` consecutive freelist ids, read or written in one call."""
    return struct.Struct(f"{BYTE_ORDER}{count}{FREELIST_ID.format[len(BYTE_ORDER):]}")


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
