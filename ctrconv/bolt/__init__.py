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

#: served on first use (PEP 562): readers (``ls``, ``export``, ``verify``) never load the writer
_WRITER_NAMES = ("InvalidTreeError", "write_bolt", "write_bolt_to")


def __getattr__(name: str) -> object:
    if name in _WRITER_NAMES:
        from ctrconv.bolt import writer

        return getattr(writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BoltError", "BoltFile", "Bucket", "BucketTree", "CorruptPage", "FileTooSmall",
    "InvalidMeta", "KeyOrderError", "MetaInfo", "NoValidMeta", "PageCycle", "read_tree", "InvalidTreeError", "write_bolt", "write_bolt_to",
]
