"""Pure-Python bbolt: lazy mmap reader, bottom-up writer, structure checks and salvage."""

from ctrconv.bolt.errors import (
    BoltError,
    CorruptPage,
    FileTooSmall,
    InvalidMeta,
    KeyOrderError,
    NoValidMeta,
    PageCycle,
)
from ctrconv.bolt.reader import BoltFile, Bucket, MetaInfo, read_tree
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import InvalidTreeError, write_bolt, write_bolt_to

__all__ = [
    "BoltError", "BoltFile", "Bucket", "BucketTree", "CorruptPage", "FileTooSmall",
    "InvalidMeta", "KeyOrderError", "MetaInfo", "NoValidMeta", "PageCycle", "read_tree", "InvalidTreeError", "write_bolt", "write_bolt_to",
]
