"""Write a fresh, compact bolt file from a :class:`BucketTree` in one bottom-up pass.

Rewriting the whole file (instead of replaying transactions like ``bbolt compact``) gives a
file with no free pages, no stale roots and two metas that both describe the same tree, so a
torn meta later can only fall back to identical data. The layout follows the rules of
shared/docs/bolt-format.md §6:

* page ids are handed out in emission order from 2 (3 when an empty freelist page sits at 2);
  every page is written as soon as it is built, children before parents;
* a node is cut into pages with bbolt's own split rule (``node.splitTwo``), so every page
  looks like one Go could have produced; the fill factor defaults to 1.0 (like
  ``bbolt compact``), which gives the smallest file; Go's later commits split full pages as
  usual;
* a branch key is exactly the first key of its child (a smaller separator passes ``Check``
  but corrupts the file at Go's next commit);
* a bucket is stored inline when bbolt would inline it: no sub-buckets and
  ``16 + Σ(16 + len(key) + len(value)) <= pageSize / 4``;
* meta with txid ``T`` goes to page ``T % 2``, ``T - 1`` to the other, so Go's next commit
  overwrites the older one.

Locking is the caller's job: hold ``LOCK_EX`` on the old file and make sure containerd is
stopped before replacing it (the rename gives the path a new inode).
"""

from __future__ import annotations

import mmap
import os

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from ctrconv.bolt._structs import (
    BRANCH_ELEMENT,
    BRANCH_PAGE,
    BUCKET_HEADER,
    BUCKET_LEAF_FLAG,
    ELEMENT_SIZE,
    FREELIST_PAGE,
    LEAF_ELEMENT,
    LEAF_PAGE,
    MAGIC,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    META_PAGE,
    NO_FREELIST,
    PAGE_HEADER,
    PAGE_HEADER_SIZE,
    VERSION,
    meta_checksum,
)
from ctrconv import tempfiles
from ctrconv.bolt.tree import BucketTree
from ctrconv.errors import FormatError

DEFAULT_FILL_PERCENT = 1.0
MIN_PAGE_SIZE = 1024
MAX_PAGE_SIZE = 65536
# Every bbolt version reads the first 4 KiB at open and calls a shorter file invalid, so an
# empty tree with 1 KiB pages (3-4 pages) is padded; bytes past the HWM are ignored.
MIN_FILE_SIZE = 0x1000
_MIN_KEYS_PER_PAGE = 2
_U64_LIMIT = 1 << 64

# A leaf item: (element flags, key, value); a branch item: (first key of child, child pgid).
_LeafItem = tuple[int, bytes, bytes]
_BranchItem = tuple[bytes, int]


class InvalidTreeError(FormatError, ValueError):
    """The tree cannot be stored as bolt: empty/oversized key, plain value at the root, ..."""


@dataclass(frozen=True)
class BoltLayout:
    """Where things landed in a written file (for callers that report or check it)."""

    page_size: int
    hwm: int
    root_pgid: int
    freelist_pgid: int
    txid: int

    @property
    def file_size(self) -> int:
        return max(self.hwm * self.page_size, MIN_FILE_SIZE)


def write_bolt(
    path: str | os.PathLike[str],
    root: BucketTree,
    *,
    page_size: int | None = None,
    txid: int = 2,
    freelist: bool = True,
    fill_percent: float = DEFAULT_FILL_PERCENT,
    mode: int = 0o600,
    before_rename: Callable[[int], None] | None = None,
) -> BoltLayout:
    """Atomically replace ``path`` with a bolt file holding ``root``.

    Pages go to a temporary file in the same directory, which is fsynced, chmodded to ``mode``
    and renamed over ``path``; the directory is fsynced afterwards. On any error the temporary
    file is removed and ``path`` is untouched. ``before_rename`` gets the new file's descriptor
    once it is whole, before its rename (a caller that must hold its lock from the start).

    Raises:
        InvalidTreeError: the tree breaks a bolt limit (nothing is replaced).
        ValueError: a bad ``page_size``, ``txid`` or ``fill_percent``.
    """
    return prepare_bolt(path, root, page_size=page_size, txid=txid, freelist=freelist, fill_percent=fill_percent,
                        mode=mode, before_rename=before_rename).publish()


@dataclass
class PreparedBolt:
    """A new bolt file written whole and synced beside ``target``, not yet in its place: a
    writer of several files writes them all first (where a full disk fails), then renames
    them in its order (which cannot fail for lack of space)."""

    target: Path
    temp: str
    layout: BoltLayout

    def publish(self) -> BoltLayout:
        """Rename it over ``target`` and sync the directory; on an error it is removed."""
        try:
            os.replace(self.temp, self.target)
            tempfiles.forget(self.temp)
        except BaseException:
            self.discard()
            raise
        _fsync_dir(self.target.parent)
        return self.layout

    def discard(self) -> None:
        """Remove it (``target`` stays as it was)."""
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass
        tempfiles.forget(self.temp)


def prepare_bolt(
    path: str | os.PathLike[str],
    root: BucketTree,
    *,
    page_size: int | None = None,
    txid: int = 2,
    freelist: bool = True,
    fill_percent: float = DEFAULT_FILL_PERCENT,
    mode: int = 0o600,
    before_rename: Callable[[int], None] | None = None,
) -> PreparedBolt:
    """The first half of :func:`write_bolt`: the new file written, fsynced and chmodded to
    ``mode`` under a temporary name in ``path``'s directory (``before_rename`` gets its
    descriptor once it is whole); removed again on any error."""
    target = Path(path)
    fd, tmp_name = tempfiles.temp_file(target.parent, f".{target.name}.", ".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            layout = write_bolt_to(
                fh,
                root,
                page_size=page_size,
                txid=txid,
                freelist=freelist,
                fill_percent=fill_percent,
            )
            fh.flush()
            os.fsync(fh.fileno())
            if before_rename is not None:
                before_rename(fh.fileno())
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        tempfiles.forget(tmp_name)
        raise
    return PreparedBolt(target, tmp_name, layout)


def write_bolt_to(
    fh: BinaryIO,
    root: BucketTree,
    *,
    page_size: int | None = None,
    txid: int = 2,
    freelist: bool = True,
    fill_percent: float = DEFAULT_FILL_PERCENT,
) -> BoltLayout:
    """Write a complete bolt file to the seekable binary ``fh``, starting at offset 0.

    Data pages are written in id order as they are built; the two metas are written last
    (seeking back to 0), and the file is cut to ``HWM * page_size`` (at least 4 KiB).
    """
    size = mmap.PAGESIZE if page_size is None else page_size
    if size < MIN_PAGE_SIZE or size > MAX_PAGE_SIZE or size & (size - 1):
        raise ValueError(f"page size must be a power of two in [1024, 65536], not {size}")
    if not 1 <= txid < _U64_LIMIT:
        raise ValueError(f"txid must be in [1, 2^64), not {txid}")
    if not 0.1 <= fill_percent <= 1.0:
        raise ValueError(f"fill_percent must be in [0.1, 1.0], not {fill_percent}")
    _check_sequence(root.sequence, ())

    fh.seek(0)
    fh.write(bytes(2 * size))  # meta placeholders, filled in once the tree is written
    pages = _PageWriter(fh, size, first_pgid=2)
    freelist_pgid = pages.emit(FREELIST_PAGE, 0, b"") if freelist else NO_FREELIST
    builder = _TreeBuilder(pages, fill_percent)
    root_pgid = builder.write_root(root)
    hwm = pages.next_pgid

    fh.seek(0)
    for pgid in (0, 1):
        meta_txid = txid if pgid == txid % 2 else txid - 1
        fh.write(
            meta_page(
                pgid,
                page_size=size,
                root_pgid=root_pgid,
                root_sequence=root.sequence,
                freelist_pgid=freelist_pgid,
                hwm=hwm,
                txid=meta_txid,
            )
        )
    layout = BoltLayout(size, hwm, root_pgid, freelist_pgid, txid)
    fh.truncate(layout.file_size)
    return layout


def meta_page(
    pgid: int,
    *,
    page_size: int,
    root_pgid: int,
    root_sequence: int,
    freelist_pgid: int,
    hwm: int,
    txid: int,
) -> bytes:
    """One full meta page (header, 64-byte meta with FNV-1a checksum, zero padding).

    Built by construct from the declarations themselves: two per file, so speed is no concern
    (and only writers pay for importing construct).
    """
    from ctrconv.bolt.layouts import Meta, PageHeader

    fields = {
        "magic": MAGIC,
        "version": VERSION,
        "page_size": page_size,
        "flags": 0,
        "root": {"root": root_pgid, "sequence": root_sequence},
        "freelist": freelist_pgid,
        "pgid": hwm,
        "txid": txid,
        "checksum": 0,
    }
    fields["checksum"] = meta_checksum(Meta.build(fields))
    header = PageHeader.build({"id": pgid, "flags": META_PAGE, "count": 0, "overflow": 0})
    page = header + Meta.build(fields)
    return page + bytes(page_size - len(page))


def split_points(
    sizes: Sequence[int], page_size: int, fill_percent: float
) -> list[tuple[int, int]]:
    """Cut a node's elements into pages the way bbolt's ``node.split`` does.

    ``sizes`` are element sizes (16 + key + value). Returns ``(start, end)`` ranges covering all
    of them. A node stays whole if it has at most 4 elements or is smaller than a page;
    otherwise the first piece ends before the first element (index >= 2) that would push it
    past ``page_size * fill_percent``, at the latest leaving 3 elements for the remainder,
    which is split again.
    """
    threshold = int(page_size * fill_percent)
    total = len(sizes)
    remaining_size = PAGE_HEADER_SIZE + sum(sizes)
    pieces: list[tuple[int, int]] = []
    start = 0
    while True:
        remaining = total - start
        if remaining <= 2 * _MIN_KEYS_PER_PAGE or remaining_size < page_size:
            pieces.append((start, total))
            return pieces
        used = PAGE_HEADER_SIZE
        index = 0
        for index in range(remaining - _MIN_KEYS_PER_PAGE):
            elsize = sizes[start + index]
            if index >= _MIN_KEYS_PER_PAGE and used + elsize > threshold:
                break
            used += elsize
        pieces.append((start, start + index))
        remaining_size -= sum(sizes[start : start + index])
        start += index


class _PageWriter:
    """Hands out page ids in order and writes each page, overflow included, when built."""

    def __init__(self, fh: BinaryIO, page_size: int, *, first_pgid: int) -> None:
        self._fh = fh
        self.page_size = page_size
        self.next_pgid = first_pgid
        self._zeros = memoryview(bytes(page_size))

    def emit(self, flags: int, count: int, body: bytes) -> int:
        pgid = self.next_pgid
        used = PAGE_HEADER_SIZE + len(body)
        npages = -(-used // self.page_size)
        self._fh.write(PAGE_HEADER.pack(pgid, flags, count, npages - 1))
        self._fh.write(body)
        self._fh.write(self._zeros[: npages * self.page_size - used])
        self.next_pgid += npages
        return pgid


class _TreeBuilder:
    """Post-order walk of a :class:`BucketTree` emitting leaf and branch pages."""

    def __init__(self, pages: _PageWriter, fill_percent: float) -> None:
        self._pages = pages
        self._fill = fill_percent
        self._inline_limit = pages.page_size // 4

    def write_root(self, root: BucketTree) -> int:
        items: list[_LeafItem] = []
        for key in _sorted_keys(root, ()):
            child = root.entries[key]
            if not isinstance(child, BucketTree):
                raise InvalidTreeError(
                    f"top-level key {key!r} is a plain value; the root may hold only buckets"
                )
            items.append((BUCKET_LEAF_FLAG, key, self._write_bucket(child, (key,))))
        return self._write_tree(items)

    def _write_bucket(self, bucket: BucketTree, path: tuple[bytes, ...]) -> bytes:
        """Emit the pages of ``bucket`` (children first) and return its bucket value."""
        _check_sequence(bucket.sequence, path)
        items: list[_LeafItem] = []
        has_buckets = False
        size = PAGE_HEADER_SIZE
        for key in _sorted_keys(bucket, path):
            child = bucket.entries[key]
            if isinstance(child, BucketTree):
                has_buckets = True
                item = (BUCKET_LEAF_FLAG, key, self._write_bucket(child, path + (key,)))
            else:
                item = (0, key, _check_value(child, path, key))
            items.append(item)
            size += ELEMENT_SIZE + len(key) + len(item[2])
        if not has_buckets and size <= self._inline_limit:
            return (
                BUCKET_HEADER.pack(0, bucket.sequence)
                + PAGE_HEADER.pack(0, LEAF_PAGE, len(items), 0)
                + _leaf_body(items)
            )
        return BUCKET_HEADER.pack(self._write_tree(items), bucket.sequence)

    def _write_tree(self, items: list[_LeafItem]) -> int:
        """Emit leaves, then branch levels until one page remains; return the root pgid."""
        if not items:
            return self._pages.emit(LEAF_PAGE, 0, b"")
        sizes = [ELEMENT_SIZE + len(key) + len(value) for _, key, value in items]
        level: list[_BranchItem] = []
        for start, end in split_points(sizes, self._pages.page_size, self._fill):
            piece = items[start:end]
            level.append((piece[0][1], self._pages.emit(LEAF_PAGE, len(piece), _leaf_body(piece))))
        while len(level) > 1:
            sizes = [ELEMENT_SIZE + len(key) for key, _ in level]
            upper: list[_BranchItem] = []
            for start, end in split_points(sizes, self._pages.page_size, self._fill):
                piece = level[start:end]
                upper.append(
                    (piece[0][0], self._pages.emit(BRANCH_PAGE, len(piece), _branch_body(piece)))
                )
            level = upper
        return level[0][1]


def _leaf_body(items: Sequence[_LeafItem]) -> bytes:
    """Element array then key/value data; ``pos`` counts from each element's own start."""
    elements: list[bytes] = []
    data: list[bytes] = []
    pos = ELEMENT_SIZE * len(items)
    for flags, key, value in items:
        elements.append(LEAF_ELEMENT.pack(flags, pos, len(key), len(value)))
        data.append(key)
        data.append(value)
        pos += len(key) + len(value) - ELEMENT_SIZE
    return b"".join(elements) + b"".join(data)


def _branch_body(items: Sequence[_BranchItem]) -> bytes:
    elements: list[bytes] = []
    keys: list[bytes] = []
    pos = ELEMENT_SIZE * len(items)
    for key, pgid in items:
        elements.append(BRANCH_ELEMENT.pack(pos, len(key), pgid))
        keys.append(key)
        pos += len(key) - ELEMENT_SIZE
    return b"".join(elements) + b"".join(keys)


def _sorted_keys(bucket: BucketTree, path: tuple[bytes, ...]) -> list[bytes]:
    for key in bucket.entries:
        if not isinstance(key, bytes):
            raise InvalidTreeError(f"{_where(path)}: key {key!r} is not bytes")
        if not key:
            raise InvalidTreeError(f"{_where(path)}: empty key (bolt keys must not be empty)")
        if len(key) > MAX_KEY_SIZE:
            raise InvalidTreeError(
                f"{_where(path)}: key of {len(key)} bytes exceeds the bolt limit {MAX_KEY_SIZE}"
            )
    return sorted(bucket.entries)


def _check_value(value: object, path: tuple[bytes, ...], key: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        kind = type(value).__name__
        raise InvalidTreeError(f"{_where(path + (key,))}: value is {kind}, not bytes")
    value = bytes(value)
    if len(value) > MAX_VALUE_SIZE:
        raise InvalidTreeError(
            f"{_where(path + (key,))}: value of {len(value)} bytes exceeds the bolt limit"
        )
    return value


def _check_sequence(sequence: object, path: tuple[bytes, ...]) -> None:
    if not isinstance(sequence, int) or not 0 <= sequence < _U64_LIMIT:
        raise InvalidTreeError(f"{_where(path)}: sequence {sequence!r} is not a uint64")


def _where(path: tuple[bytes, ...]) -> str:
    return "bucket " + "/".join(repr(part) for part in path) if path else "root bucket"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
