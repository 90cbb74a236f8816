"""Byte layouts of the bbolt file format (little-endian). Nothing else imports construct.

See docs/formats.md and shared/docs/bolt-format.md for the field meanings.
"""

from __future__ import annotations

import struct

from construct import Int16ul, Int32ul, Int64ul, Struct

PAGE_HEADER_SIZE = 16
ELEMENT_SIZE = 16
META_OFFSET = 16
META_CHECKSUMMED = 56
BUCKET_HEADER_SIZE = 16

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

PageHeader = Struct("id" / Int64ul, "flags" / Int16ul, "count" / Int16ul, "overflow" / Int32ul)
BucketHeader = Struct("root" / Int64ul, "sequence" / Int64ul)
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
LeafElement = Struct("flags" / Int32ul, "pos" / Int32ul, "ksize" / Int32ul, "vsize" / Int32ul)
BranchElement = Struct("pos" / Int32ul, "ksize" / Int32ul, "pgid" / Int64ul)

# Hot-loop twins of the construct definitions above (construct copies its input per parse).
PAGE_HEADER = struct.Struct("<QHHI")
LEAF_ELEMENT = struct.Struct("<IIII")
BRANCH_ELEMENT = struct.Struct("<IIQ")
BUCKET_HEADER = struct.Struct("<QQ")
U64 = struct.Struct("<Q")

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64, the meta page checksum."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def page_type_name(flags: int) -> str:
    return {
        BRANCH_PAGE: "branch",
        LEAF_PAGE: "leaf",
        META_PAGE: "meta",
        FREELIST_PAGE: "freelist",
    }.get(flags, f"unknown<{flags:#x}>")
