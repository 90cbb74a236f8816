"""Read-only, lazy bbolt reader over ``mmap``.

Opening costs two meta reads; pages are decoded only when a bucket is walked. Every pointer is
checked before it is followed (page id range, header id, page type, element bounds, key order),
and a visited set per walk turns cycles in a damaged file into :class:`PageCycle` instead of a
hang. Damage raises a specific :class:`~ctrconv.bolt.errors.BoltError` naming the page.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator, Union

from ctrconv.bolt import _structs as S
from ctrconv.bolt.errors import (
    CorruptPage,
    FileTooSmall,
    UnreadableFile,
    InvalidMeta,
    KeyOrderError,
    NoValidMeta,
    PageCycle,
)
from ctrconv.bolt.tree import BucketTree

MAX_BUCKET_DEPTH = 64


@dataclass(frozen=True)
class MetaInfo:
    """One decoded meta page, with why it is unusable (``error``) if it is."""

    page: int
    magic: int
    version: int
    page_size: int
    flags: int
    root: int
    root_sequence: int
    freelist: int
    pgid: int
    txid: int
    checksum: int
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def freelist_synced(self) -> bool:
        return self.freelist != S.NO_FREELIST


def _sane_page_size(size: int) -> bool:
    return 512 <= size <= (1 << 20) and size & (size - 1) == 0


def decode_meta(buf: bytes | memoryview, page: int) -> MetaInfo:
    """Decode and validate the meta struct found at ``buf[16:80]`` (two per file)."""
    raw = bytes(buf[S.META_OFFSET : S.META_END])
    if len(raw) < S.META_SIZE:
        return MetaInfo(page, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, error="meta page cut short")
    m = SimpleNamespace(**dict(zip(S.META_FIELDS, S.META.unpack(raw))))
    error = None
    if m.magic != S.MAGIC:
        error = "invalid magic (not a bolt file)" if m.magic != 0xEDDA0CED else "big-endian bolt file"
    elif m.version != S.VERSION:
        error = f"version mismatch ({m.version})"
    elif S.meta_checksum(raw) != m.checksum:
        error = "checksum error"
    elif not _sane_page_size(m.page_size):
        error = f"insane page size {m.page_size}"
    return MetaInfo(
        page=page, magic=m.magic, version=m.version, page_size=m.page_size, flags=m.flags,
        root=m.root, root_sequence=m.sequence, freelist=m.freelist, pgid=m.pgid,
        txid=m.txid, checksum=m.checksum, error=error,
    )


def discover_page_size(buf: bytes | memoryview | mmap.mmap, file_size: int) -> int:
    """The page size from meta 0, else from meta 1 probed at 1 KiB .. 16 MiB (bbolt 1.3.7+); 0 if neither."""
    meta0 = decode_meta(buf[:4096], 0)
    if meta0.valid:
        return meta0.page_size
    for shift in range(15):
        off = 1024 << shift
        if off + S.META_END > file_size:
            break
        probe = decode_meta(buf[off : off + S.META_END], 1)
        if probe.valid and probe.page_size == off:
            return off
    return 0


#: bytes of the file that may have been mapped between two :meth:`BoltFile._trim` calls
TRIM_EVERY_BYTES = 16 << 20
#: what one page fault may map of a file: Linux maps the page-cache pages around a faulting
#: address too (``fault_around_bytes``, 64 KiB by default), so a walk touching one 4 KiB page
#: in 16 can still make the whole range resident (a docker-archive export's label lookups at
#: 10,000 images: 77 MiB of meta.db resident when counting 4 KiB per page)
FAULT_AROUND_BYTES = 64 << 10


class BoltFile:
    """A bolt file opened read-only. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], *, meta: int | None = None) -> None:
        """Open ``path``; ``meta`` forces meta page 0 or 1 (for salvage and verify)."""
        self.path = str(path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise UnreadableFile(f"cannot open: {exc.strerror}", path=self.path) from None
        try:
            self.file_size = os.fstat(fd).st_size
            if self.file_size == 0:
                # bbolt would make it a new empty database: what an interrupted first write
                # into a new root, or a power cut before the first sync, leaves
                raise FileTooSmall("file is empty (0 bytes): no bolt database in it (an import into a new "
                                   "root killed before its commit: run it again; or a lost file: "
                                   "`ctrconv rebuild` makes it again from what the root holds)",
                                   path=self.path)
            if self.file_size < 1024:
                raise FileTooSmall(f"file size too small ({self.file_size} bytes)", path=self.path)
            self._mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._buf = memoryview(self._mm)
        self._mapped_since_trim = 0
        try:
            self._init_metas(meta)
        except BaseException:
            self.close()
            raise

    # -- metas -----------------------------------------------------------------------------

    def _init_metas(self, forced: int | None) -> None:
        meta0 = decode_meta(self._buf[:4096], 0)
        page_size = discover_page_size(self._buf, self.file_size)
        if not page_size:
            raise NoValidMeta(f"no valid meta page ({meta0.error})", path=self.path)
        self.page_size = page_size
        if self.file_size < 2 * page_size:
            raise FileTooSmall(f"file size too small ({self.file_size} bytes)", path=self.path)
        meta1 = decode_meta(self._buf[page_size : page_size + S.META_END], 1)
        if meta0.valid and meta0.page_size != page_size:
            meta0 = _invalid(meta0, "page size differs from the other meta")
        if meta1.valid and meta1.page_size != page_size:
            meta1 = _invalid(meta1, "page size differs from the other meta")
        self.metas = (meta0, meta1)
        if forced is not None:
            chosen = self.metas[forced]
            if not chosen.valid:
                raise InvalidMeta(f"meta {forced}: {chosen.error}", page=forced, path=self.path)
        else:
            valid = [m for m in self.metas if m.valid]
            if not valid:
                raise NoValidMeta(
                    f"both meta pages invalid ({meta0.error}; {meta1.error})", path=self.path
                )
            chosen = max(valid, key=lambda m: (m.txid, -m.page))
        self.meta = chosen
        self.pages_in_file = self.file_size // page_size
        if chosen.pgid > self.pages_in_file:
            raise FileTooSmall(
                f"file is {self.file_size} bytes but its high-water mark is page {chosen.pgid} "
                f"({chosen.pgid * page_size} bytes): truncated",
                path=self.path,
            )
        if chosen.pgid < 2 or not (2 <= chosen.root < chosen.pgid):
            raise InvalidMeta(
                f"meta {chosen.page}: root page {chosen.root} outside 2..{chosen.pgid - 1}",
                page=chosen.page,
                path=self.path,
            )

    # -- pages -----------------------------------------------------------------------------

    def page(self, pgid: int, *, expect: tuple[int, ...] = (S.BRANCH_PAGE, S.LEAF_PAGE)) -> "Page":
        """Return the validated page ``pgid`` (header id, type, span inside the file)."""
        hwm = self.meta.pgid
        if not 2 <= pgid < hwm:
            raise CorruptPage(f"page id out of range (high-water mark {hwm})", page=pgid, path=self.path)
        off = pgid * self.page_size
        hid, flags, count, overflow = S.PAGE_HEADER.unpack_from(self._buf, off)
        if hid != pgid:
            raise CorruptPage(f"page header says it is page {hid}", page=pgid, path=self.path)
        if flags not in expect:
            raise CorruptPage(
                f"unexpected page type {S.page_type_name(flags)} "
                f"(expected {'/'.join(S.page_type_name(e) for e in expect)})",
                page=pgid,
                path=self.path,
            )
        if pgid + overflow >= hwm:
            raise CorruptPage(f"overflow {overflow} runs past the high-water mark", page=pgid, path=self.path)
        span = self._buf[off : off + (overflow + 1) * self.page_size]
        self._mapped_since_trim += max(len(span), FAULT_AROUND_BYTES)
        if self._mapped_since_trim >= TRIM_EVERY_BYTES:
            self._trim()
        return Page(pgid, flags, count, overflow, span, self)

    def leaf_bytes(self, pgid: int) -> tuple[bytes, int] | None:
        """A copy of leaf page ``pgid`` (with its overflow pages) and its element count, when
        :meth:`page` would return it as a leaf page; None for anything else (the caller reads
        it through :meth:`page`, which raises). The leaf readers (:mod:`ctrconv.bolt.leaf`)
        copy each record's page whole: this is :meth:`page`'s checks without a ``Page`` and
        a view made and dropped per record (10,000 image records, 32,000 content records)."""
        hwm = self.meta.pgid
        if not 2 <= pgid < hwm:
            return None
        off = pgid * self.page_size
        hid, flags, count, overflow = S.PAGE_HEADER.unpack_from(self._buf, off)
        if hid != pgid or flags != S.LEAF_PAGE or pgid + overflow >= hwm:
            return None
        size = (overflow + 1) * self.page_size
        if S.PAGE_HEADER_SIZE + S.ELEMENT_SIZE * count > size:
            return None
        self._mapped_since_trim += max(size, FAULT_AROUND_BYTES)
        if self._mapped_since_trim >= TRIM_EVERY_BYTES:
            self._trim()
        return self._mm[off : off + size], count

    def _trim(self) -> None:
        """Let go of the file pages mapped so far (``MADV_DONTNEED``): a walk over a large
        meta.db (10,000 images: 150 MiB) would otherwise keep every page it touched in this
        process's resident set. The mapping is shared and read-only, so nothing is lost: the
        next access maps the page again from the page cache."""
        self._mapped_since_trim = 0
        try:
            self._mm.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):
            pass  # no madvise here: the pages just stay resident

    # -- buckets ---------------------------------------------------------------------------

    @property
    def root(self) -> "Bucket":
        return Bucket(self, root=self.meta.root, sequence=self.meta.root_sequence, path=())

    def bucket(self, *path: bytes) -> "Bucket | None":
        node: Bucket | None = self.root
        for name in path:
            if node is None:
                return None
            node = node.bucket(name)
        return node

    def close(self) -> None:
        self._buf = None  # type: ignore[assignment]
        mm = getattr(self, "_mm", None)
        if mm is not None:
            self._mm = None
            try:
                mm.close()
            except BufferError:
                # Page views are still referenced (e.g. by an exception's traceback);
                # the mapping is released when the last of them is collected.
                pass

    def __enter__(self) -> "BoltFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _invalid(meta: MetaInfo, why: str) -> MetaInfo:
    return MetaInfo(**{**meta.__dict__, "error": why})


class Page:
    """A branch, leaf or freelist page (or an inline page inside a bucket value); elements are
    bound-checked."""

    __slots__ = ("pgid", "flags", "count", "overflow", "data", "db")

    def __init__(self, pgid: int, flags: int, count: int, overflow: int, data: memoryview, db: BoltFile) -> None:
        self.pgid, self.flags, self.count, self.overflow, self.data, self.db = pgid, flags, count, overflow, data, db
        # A freelist's ids are 8 bytes each: at 16 a page of 300 free ids would not "fit".
        stride = S.FREELIST_ID.size if flags == S.FREELIST_PAGE else S.ELEMENT_SIZE
        if S.PAGE_HEADER_SIZE + stride * count > len(data):
            raise CorruptPage(f"{count} elements do not fit in the page", page=pgid, path=db.path)

    def _elements(self, codec: struct.Struct) -> Iterator[tuple[int, ...]]:
        """The element array decoded with ``codec`` (bounds checked in ``__init__``)."""
        start = S.PAGE_HEADER_SIZE
        return codec.iter_unpack(self.data[start : start + S.ELEMENT_SIZE * self.count])

    def _outside(self, what: str) -> CorruptPage:
        return CorruptPage(f"{what} runs outside the page", page=self.pgid, path=self.db.path)

    def leaf_elements(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(flags, key, value) in stored order."""
        # one copy of the page, then a slice per key and value: slicing the mapped memoryview
        # costs an object more per field
        data, end = bytes(self.data), len(self.data)
        off = S.PAGE_HEADER_SIZE
        for i, (flags, pos, ksize, vsize) in enumerate(self._elements(S.LEAF_ELEMENT)):
            if flags & ~S.BUCKET_LEAF_FLAG:
                raise CorruptPage(f"leaf element {i} has flags {flags:#x}", page=self.pgid, path=self.db.path)
            key_at = off + pos  # the fields are unsigned: only the ends can fall outside
            value_at = key_at + ksize
            if value_at > end:
                raise self._outside(f"leaf element {i} key")
            if value_at + vsize > end:
                raise self._outside(f"leaf element {i} value")
            yield flags, data[key_at:value_at], data[value_at : value_at + vsize]
            off += S.ELEMENT_SIZE

    def find_leaf(self, key: bytes) -> tuple[int, bytes] | None:
        """(flags, value) of the element whose key is ``key``, as :meth:`leaf_elements` would
        find it (the same checks on every element up to it), without copying the keys and values
        of the others: a record's fields are looked up one by one, thousands of records in a row."""
        data, end, size = self.data, len(self.data), len(key)
        off = S.PAGE_HEADER_SIZE
        for i, (flags, pos, ksize, vsize) in enumerate(self._elements(S.LEAF_ELEMENT)):
            if flags & ~S.BUCKET_LEAF_FLAG:
                raise CorruptPage(f"leaf element {i} has flags {flags:#x}", page=self.pgid, path=self.db.path)
            key_at = off + pos
            value_at = key_at + ksize
            if value_at > end:
                raise self._outside(f"leaf element {i} key")
            if value_at + vsize > end:
                raise self._outside(f"leaf element {i} value")
            if ksize == size and data[key_at:value_at] == key:
                return flags, bytes(data[value_at : value_at + vsize])
            off += S.ELEMENT_SIZE
        return None

    def branch_elements(self) -> Iterator[tuple[bytes, int]]:
        """(key, child pgid) in stored order."""
        data, end = self.data, len(self.data)
        off = S.PAGE_HEADER_SIZE
        for i, (pos, ksize, child) in enumerate(self._elements(S.BRANCH_ELEMENT)):
            key_at = off + pos
            if key_at + ksize > end:
                raise self._outside(f"branch element {i} key")
            yield bytes(data[key_at : key_at + ksize]), child
            off += S.ELEMENT_SIZE


class _LeafIndex:
    """A leaf page's elements by key, read in one pass: :meth:`find` answers as
    :meth:`Page.find_leaf` would, the first element with the key, and the error of the first
    bad element for any key not found before it."""

    __slots__ = ("found", "page", "pgid", "bad_at")

    def __init__(self, page: Page | None) -> None:
        self.found: dict[bytes, tuple[int, bytes]] = {}
        self.page = page
        self.bad_at: int | None = None  # the first element that does not decode
        if page is None:  # the marker of a bucket rooted at a branch page: nothing indexed
            self.pgid = 0
            return
        self.pgid = page.pgid
        data, end = bytes(page.data), len(page.data)  # one copy, then plain slices
        off = S.PAGE_HEADER_SIZE
        for i, (flags, pos, ksize, vsize) in enumerate(page._elements(S.LEAF_ELEMENT)):
            key_at = off + pos
            value_at = key_at + ksize
            if flags & ~S.BUCKET_LEAF_FLAG or value_at + vsize > end:
                self.bad_at = i
                return
            key = data[key_at:value_at]
            if key not in self.found:
                self.found[key] = (flags, data[value_at : value_at + vsize])
            off += S.ELEMENT_SIZE
        self.page = None  # type: ignore[assignment]  # every element read: the page is not needed again

    def find(self, key: bytes) -> tuple[int, bytes] | None:
        found = self.found.get(key)
        if found is None and self.bad_at is not None:
            self.page.find_leaf(key)  # raises the error of the bad element, worded as always
            raise AssertionError("unreachable: the element found bad decodes")  # pragma: no cover
        return found


#: the index of a bucket whose root is a branch page (looked up by a walk from the root)
_BRANCH_ROOT = _LeafIndex(None)

BucketValue = Union[bytes, "Bucket"]


class Bucket:
    """A bucket: page-rooted (``root`` pgid) or inline (``inline`` page bytes)."""

    __slots__ = ("db", "root", "sequence", "inline", "path", "_index")

    def __init__(
        self,
        db: BoltFile,
        *,
        root: int,
        sequence: int,
        path: tuple[bytes, ...],
        inline: memoryview | None = None,
    ) -> None:
        self.db, self.root, self.sequence, self.inline, self.path = db, root, sequence, inline, path
        self._index: _LeafIndex | None = None

    @property
    def name(self) -> str:
        return "/".join(p.decode("utf-8", "backslashreplace") for p in self.path) or "<root>"

    def _inline_page(self) -> Page:
        assert self.inline is not None
        where = self.db.path
        if len(self.inline) < S.PAGE_HEADER_SIZE:
            raise CorruptPage(f"inline bucket {self.name} too short", path=where)
        _, flags, count, _ = S.PAGE_HEADER.unpack_from(self.inline, 0)
        if flags != S.LEAF_PAGE:
            raise CorruptPage(f"inline bucket {self.name} is not a leaf page ({flags:#x})", path=where)
        return Page(0, flags, count, 0, self.inline, self.db)

    def _leaves(self, visited: set[int]) -> Iterator[Page]:
        """Leaf pages of this bucket in key order; ``visited`` catches cycles."""
        if self.inline is not None:
            yield self._inline_page()
            return
        stack = [self.root]
        while stack:
            pgid = stack.pop()
            if pgid in visited:
                raise PageCycle(f"page reached twice in bucket {self.name}", page=pgid, path=self.db.path)
            visited.add(pgid)
            page = self.db.page(pgid)
            if page.flags == S.LEAF_PAGE:
                yield page
            else:
                children = [child for _, child in page.branch_elements()]
                if not children:
                    raise CorruptPage("empty branch page", page=pgid, path=self.db.path)
                stack.extend(reversed(children))

    def items(self) -> Iterator[tuple[bytes, BucketValue]]:
        """Every entry in key order: plain values as bytes, sub-buckets as :class:`Bucket`."""
        for flags, key, value, pgid in self.elements():
            if flags & S.BUCKET_LEAF_FLAG:
                yield key, self._child(key, value, pgid)
            else:
                yield key, value

    def elements(self) -> Iterator[tuple[int, bytes, bytes, int]]:
        """Every entry in key order as stored: (flags, key, value, leaf pgid); a sub-bucket's
        value is its header (:func:`~ctrconv.bolt.leaf.leaf_record` reads it without a :class:`Bucket`)."""
        previous: bytes | None = None
        for page in self._leaves(set()):
            for flags, key, value in page.leaf_elements():
                if previous is not None and key <= previous:
                    raise self._out_of_order(key, previous, page.pgid)
                previous = key
                yield flags, key, value, page.pgid

    def _out_of_order(self, key: bytes, previous: bytes, pgid: int) -> KeyOrderError:
        return KeyOrderError(f"key {key[:40]!r} not above previous key {previous[:40]!r} in bucket {self.name}",
                             page=pgid or None, path=self.db.path)

    def bucket_keys(self) -> list[bytes]:
        """The keys of the sub-buckets in key order, as :meth:`buckets` names them and with
        the errors it raises, element by element, without a :class:`Bucket` (or a value) for
        each: ``content/blob`` holds 32,000 records at 10,000 images."""
        keys: list[bytes] = []
        previous: bytes | None = None
        too_deep = len(self.path) >= MAX_BUCKET_DEPTH
        for page in self._leaves(set()):
            data, end, off = bytes(page.data), len(page.data), S.PAGE_HEADER_SIZE
            for i, (flags, pos, ksize, vsize) in enumerate(page._elements(S.LEAF_ELEMENT)):
                key_at = off + pos  # Page.leaf_elements' checks, then elements', then _child's
                value_at = key_at + ksize
                if flags & ~S.BUCKET_LEAF_FLAG or value_at + vsize > end:
                    for _ in page.leaf_elements():  # raises at element i, worded as always
                        pass
                    raise AssertionError(f"leaf element {i} read as bad and as good")  # pragma: no cover
                key = data[key_at:value_at]
                if previous is not None and key <= previous:
                    raise self._out_of_order(key, previous, page.pgid)
                previous = key
                if flags:
                    if vsize < S.BUCKET_HEADER_SIZE or too_deep:
                        self._child(key, data[value_at : value_at + vsize], page.pgid)  # raises
                    keys.append(key)
                off += S.ELEMENT_SIZE
        return keys

    def _child(self, key: bytes, value: bytes, pgid: int) -> "Bucket":
        path = self.path + (key,)
        if len(path) > MAX_BUCKET_DEPTH:
            raise CorruptPage(f"buckets nested deeper than {MAX_BUCKET_DEPTH}", page=pgid, path=self.db.path)
        if len(value) < S.BUCKET_HEADER_SIZE:
            raise CorruptPage(f"bucket header of {key[:40]!r} is {len(value)} bytes", page=pgid, path=self.db.path)
        root, sequence = S.BUCKET_HEADER.unpack_from(value, 0)
        if root == 0:
            return Bucket(self.db, root=0, sequence=sequence, path=path, inline=memoryview(value)[S.BUCKET_HEADER_SIZE:])
        return Bucket(self.db, root=root, sequence=sequence, path=path)

    def get(self, key: bytes) -> bytes | None:
        """The plain value of ``key``; ``None`` when absent or when ``key`` is a bucket."""
        found = self._find(key)
        return found if isinstance(found, bytes) else None

    def bucket(self, *path: bytes) -> "Bucket | None":
        """The sub-bucket at ``path`` (one name or several); ``None`` when any step is absent
        or a plain value. Same call as :meth:`BucketTree.bucket`, so decoders take either."""
        node = self
        for key in path:
            found = node._find(key)
            if not isinstance(found, Bucket):
                return None
            node = found
        return node

    def _find(self, key: bytes) -> BucketValue | None:
        # a record is a bucket of one leaf page (inline, or page-rooted when it holds a labels
        # bucket) whose fields are looked up one by one: the page is indexed once, not parsed
        # again for every field; a bucket rooted at a branch is searched from its root
        if self._index is None:
            self._index = self._root_index()
        if self._index is not _BRANCH_ROOT:
            found = self._index.find(key)
            if found is None:
                return None
            flags, value = found
            return self._child(key, value, self._index.pgid) if flags & S.BUCKET_LEAF_FLAG else value
        page = self._inline_page() if self.inline is not None else None
        visited: set[int] = set()
        pgid = self.root
        while page is None:
            if pgid in visited:
                raise PageCycle(f"page reached twice in bucket {self.name}", page=pgid, path=self.db.path)
            visited.add(pgid)
            candidate = self.db.page(pgid)
            if candidate.flags == S.LEAF_PAGE:
                page = candidate
                break
            chosen = None
            for bkey, child in candidate.branch_elements():
                if chosen is not None and bkey > key:
                    break
                chosen = child
            if chosen is None:
                raise CorruptPage("empty branch page", page=pgid, path=self.db.path)
            pgid = chosen
        found = page.find_leaf(key)
        if found is None:
            return None
        flags, value = found
        return self._child(key, value, page.pgid) if flags & S.BUCKET_LEAF_FLAG else value

    def _root_index(self) -> "_LeafIndex":
        """The index of this bucket's page when it is a leaf (a damaged root page raises here,
        as every lookup would, and is looked at again next time)."""
        if self.inline is not None:
            return _LeafIndex(self._inline_page())
        page = self.db.page(self.root)
        return _LeafIndex(page) if page.flags == S.LEAF_PAGE else _BRANCH_ROOT

    def buckets(self) -> Iterator[tuple[bytes, "Bucket"]]:
        for key, value in self.items():
            if isinstance(value, Bucket):
                yield key, value

    def values(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.items():
            if isinstance(value, bytes):
                yield key, value

    def pages(self) -> Iterator[Page]:
        """Every page (branch and leaf) of a page-rooted bucket, for structure checks."""
        if self.inline is not None:
            return
        stack, seen = [self.root], set()
        while stack:
            pgid = stack.pop()
            if pgid in seen:
                raise PageCycle(f"page reached twice in bucket {self.name}", page=pgid, path=self.db.path)
            seen.add(pgid)
            page = self.db.page(pgid)
            yield page
            if page.flags == S.BRANCH_PAGE:
                stack.extend(child for _, child in page.branch_elements())

    def to_tree(self) -> BucketTree:
        """Materialise this bucket and everything below it (used for merge-and-rewrite)."""
        tree = BucketTree(sequence=self.sequence)
        for key, value in self.items():
            tree.entries[key] = value.to_tree() if isinstance(value, Bucket) else value
        return tree


def read_tree(path: str | os.PathLike[str]) -> BucketTree:
    """Read a whole bolt file into a :class:`BucketTree` (root sequence included)."""
    with BoltFile(path) as db:
        return db.root.to_tree()
