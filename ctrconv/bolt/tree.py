"""An in-memory bucket tree: what the writer takes and what a reader can materialise.

Used to merge new records into an existing meta.db without losing anything: read the
file into a :class:`BucketTree`, add records, write a fresh compact file from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Union

Value = Union[bytes, "BucketTree"]


class ReadBucket(Protocol):
    """What record decoders need of a bucket, whether it lives in an mmap'ed file
    (:class:`ctrconv.bolt.reader.Bucket`) or in memory (:class:`BucketTree`): one codec
    then serves ``ls``/``export`` (file) and ``import``/``rebuild`` (tree) alike."""

    sequence: int

    def get(self, key: bytes) -> bytes | None:
        """The plain value of ``key``; ``None`` when absent or a bucket."""
        ...

    def bucket(self, *path: bytes) -> "ReadBucket | None":
        """The sub-bucket at ``path``; ``None`` when any step is absent or a plain value."""
        ...

    def items(self) -> Iterator[tuple[bytes, "bytes | ReadBucket"]]:
        """Every entry in key order (bolt's order): values as bytes, sub-buckets as buckets."""
        ...

    def buckets(self) -> Iterator[tuple[bytes, "ReadBucket"]]:
        """Sub-buckets only, in key order."""
        ...

    def values(self) -> Iterator[tuple[bytes, bytes]]:
        """Plain values only, in key order."""
        ...


#: keys and values up to these lengths are shared by :meth:`BucketTree.load` (digests, the
#: long unique keys, are not: sharing them would only cost the lookup table)
SHARED_KEY_LENGTH = 48
SHARED_VALUE_LENGTH = 16


@dataclass(slots=True)
class BucketTree:
    """A bucket: its sequence and its entries (plain values are ``bytes``, sub-buckets trees).

    Slotted: a 10,000-image meta.db is ~88,000 buckets, and a ``__dict__`` each was ~9 MiB of
    a rebuild's peak (the re-import holds the whole target meta.db as one tree)."""

    sequence: int = 0
    entries: dict[bytes, Value] = field(default_factory=dict)

    @classmethod
    def load(cls, bucket: ReadBucket) -> "BucketTree":
        """Materialise ``bucket`` and everything below it, sharing one ``bytes`` object among
        equal short keys and values (label names, ``createdat``, sizes, ``managed``): a
        10,000-image meta.db holds ~600,000 keys and values, most of them repeats, and an
        import into it keeps the whole tree until its commit."""
        shared: dict[bytes, bytes] = {}

        def walk(source: ReadBucket) -> "BucketTree":
            tree = cls(sequence=source.sequence)
            entries = tree.entries
            for key, value in source.items():
                if len(key) <= SHARED_KEY_LENGTH:
                    key = shared.setdefault(key, key)
                if isinstance(value, bytes):
                    entries[key] = shared.setdefault(value, value) if len(value) <= SHARED_VALUE_LENGTH else value
                else:
                    entries[key] = walk(value)
            return tree

        return walk(bucket)

    def bucket(self, *path: bytes, create: bool = False) -> "BucketTree | None":
        """Walk ``path`` of sub-bucket names; with ``create`` make missing ones."""
        node: BucketTree = self
        for name in path:
            child = node.entries.get(name)
            if child is None and create:
                child = node.entries[name] = BucketTree()
            if not isinstance(child, BucketTree):
                return None
            node = child
        return node

    def put(self, key: bytes, value: bytes) -> None:
        if not key:
            raise ValueError("bolt keys must not be empty")
        if isinstance(self.entries.get(key), BucketTree):
            raise ValueError(f"key {key!r} is a bucket")
        self.entries[key] = value

    def get(self, key: bytes) -> bytes | None:
        value = self.entries.get(key)
        return value if isinstance(value, bytes) else None

    def sorted_items(self) -> Iterator[tuple[bytes, Value]]:
        for key in sorted(self.entries):
            yield key, self.entries[key]

    def items(self) -> Iterator[tuple[bytes, Value]]:
        """Entries in key order, as the file reader yields them (:class:`ReadBucket`)."""
        return self.sorted_items()

    def buckets(self) -> Iterator[tuple[bytes, "BucketTree"]]:
        for key, value in self.sorted_items():
            if isinstance(value, BucketTree):
                yield key, value

    def values(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.sorted_items():
            if isinstance(value, bytes):
                yield key, value

    def value_count(self) -> int:
        """Plain values anywhere below this bucket (how much a tree holds)."""
        return sum(v.value_count() if isinstance(v, BucketTree) else 1 for v in self.entries.values())

    def to_plain(self) -> dict:
        """JSON-friendly form used by dumps and tests: hex keys, hex values, sequences."""
        out: dict = {"sequence": self.sequence, "entries": {}}
        for key, value in self.sorted_items():
            out["entries"][key.hex()] = (
                value.to_plain() if isinstance(value, BucketTree) else value.hex()
            )
        return out
