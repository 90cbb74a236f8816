"""Regenerate a layer tar from an unpacked snapshot, the way containerd's differ writes one.

containerd's walking differ (``diff/walking``: ``archive.WriteDiff`` over ``fs.Changes``) turns
the difference between a snapshot and its parent into a layer tar. Two inputs are handled here:

* **overlayfs**: a committed snapshot's ``fs`` directory *is* the layer's diff (the upper
  directory the layer was applied into). Every path in it is an entry; a character device 0/0
  is a whiteout and becomes ``.wh.<name>``; a directory carrying ``trusted.overlay.opaque=y``
  (or ``user.overlay.opaque=y``, rootless/userxattr mounts) is followed by its
  ``.wh..wh..opq`` marker.
* **native** (or any full tree): the snapshot holds the whole root filesystem; it is compared
  with its parent's tree like ``fs.Changes`` (``doubleWalkDiff``): a path only in the parent
  is deleted (``.wh.<name>``, its children are not listed), a path only in the snapshot is
  added, a path in both is modified when mode, owner, device, xattrs, size, mtime or (for
  equal whole-second mtimes) content or link target differ. Unchanged directories above a
  change are written as parents (``includeParents``).

The tar is deterministic: entries in walk order (each directory's names sorted bytewise,
depth first, as Go's ``filepath.Walk``), USTAR headers as Go's ``archive/tar`` writes them for
``tar.FileInfoHeader`` (mode = permission bits + setuid/setgid/sticky, uid/gid, empty owner
names, mtime in whole seconds, device numbers), a PAX extended header only when a field needs
one (a non-ASCII or too long name or link target, a large id or size, xattrs, a sub-second or
negative mtime), whiteouts as empty regular files with mode 0 and mtime 0 owned by the
whiteout device's owner. Hardlinks: the first path of an inode is the file, later ones are
``TypeLink`` entries (containerd's ``inodeSrc``/``inodeRefs``). Sockets are skipped, as
containerd skips them.

Unlike containerd's ``ChangeWriter`` (which keeps only ``security.capability``) every xattr
except ``trusted.*`` (overlayfs' own, and refused by every unpacker) and ``user.overlay.*``
is written as a ``SCHILY.xattr.`` record, and sub-second mtimes are kept (PAX ``mtime``), so
the tree an unpacker makes from the regenerated layer equals the snapshot it came from.

Output streams: :func:`write_layer` writes the tar through a :class:`LayerWriter`, which
hashes the tar (the diff ID), compresses it (gzip or zstd, or not) and writes the blob to a
file descriptor while hashing and counting it. Nothing is held in memory beyond one chunk.
"""

from __future__ import annotations

import hashlib
import os
import sys
import stat
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import zstandard

from ctrconv.errors import CtrconvError, UsageError

Compression = Literal["none", "gzip", "zstd"]
COMPRESSIONS: tuple[Compression, ...] = ("gzip", "zstd", "none")

BLOCK = 512
CHUNK = 1 << 20
_NAME = 100
_PREFIX = 155
_LINK = 100
_MAX_ID = 0o7777777
_MAX_SIZE = 0o77777777777
_MAX_TIME = 0o77777777777
_MAX_DEV = 0o7777777
WHITEOUT_PREFIX = b".wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"
OPAQUE_XATTRS = (b"trusted.overlay.opaque", b"user.overlay.opaque")
#: gzip level of regenerated layers (containerd and Go's gzip.DefaultCompression)
GZIP_LEVEL = 6
#: input bytes per independently deflated gzip block (:class:`ParallelGzip`)
GZIP_BLOCK = 1 << 20
#: zstd level of regenerated layers (containerd's default, zstd.SpeedDefault)
ZSTD_LEVEL = 3

TYPE_REG = b"0"
TYPE_LINK = b"1"
TYPE_SYMLINK = b"2"
TYPE_CHAR = b"3"
TYPE_BLOCK = b"4"
TYPE_DIR = b"5"
TYPE_FIFO = b"6"
TYPE_PAX = b"x"


# -- tar headers ---------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    digits = format(value, "o").encode("ascii")
    return digits.rjust(width - 1, b"0") + b"\0"


def _fits(value: int, width: int) -> bool:
    return 0 <= value < 8 ** (width - 1)


def _string(text: bytes, width: int) -> bytes:
    return text[:width].ljust(width, b"\0")


def _ascii(text: bytes) -> bytes:
    """Go ``toASCII``: non-ASCII bytes dropped (what a PAX-carried field leaves in USTAR)."""
    return bytes(b for b in text if b < 0x80)


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """Go ``splitUSTARPath``: (prefix, name) for a long ASCII name, or None."""
    length = len(name)
    if length <= _NAME or not name.isascii():
        return None
    if length > _PREFIX + 1:
        length = _PREFIX + 1
    elif name[length - 1:length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    suffix = len(name) - i - 1
    if i <= 0 or suffix > _NAME or suffix == 0 or i > _PREFIX:
        return None
    return name[:i], name[i + 1:]


def pax_records(records: dict[bytes, bytes]) -> bytes:
    """``"%d key=value\\n"`` records, keys sorted as Go sorts them; the length counts itself."""
    out = bytearray()
    for key in sorted(records):
        body = b" " + key + b"=" + records[key] + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length += 1
        out += str(length).encode("ascii") + body
    return bytes(out)


@dataclass
class Header:
    name: bytes
    typeflag: bytes
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[bytes, bytes] | None = None


def _ustar_block(name: bytes, prefix: bytes, *, size: int, mtime: int, uid: int, gid: int,
                 linkname: bytes, devmajor: int, devminor: int, typeflag: bytes, mode: int) -> bytes:
    block = bytearray(BLOCK)
    block[0:100] = _string(name, 100)
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(uid, 8)
    block[116:124] = _octal(gid, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157:257] = _string(linkname, 100)
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[329:337] = _octal(devmajor, 8)
    block[337:345] = _octal(devminor, 8)
    block[345:500] = _string(prefix, 155)
    block[148:156] = _octal(sum(block), 7) + b" "
    return bytes(block)


def header_bytes(h: Header) -> bytes:
    """The header block(s) of one entry: a PAX extended header first when a field needs it."""
    pax: dict[bytes, bytes] = {}
    name, prefix = h.name, b""
    if len(name) > _NAME or not name.isascii():
        split = _split_ustar(name)
        if split is None:
            pax[b"path"] = name
            name = _ascii(name)[:_NAME]
        else:
            prefix, name = split
    linkname = h.linkname
    if len(linkname) > _LINK or not linkname.isascii():
        pax[b"linkpath"] = linkname
        linkname = _ascii(linkname)[:_LINK]
    uid, gid, size = h.uid, h.gid, h.size
    if not 0 <= uid <= _MAX_ID:
        pax[b"uid"] = str(uid).encode()
        uid = 0
    if not 0 <= gid <= _MAX_ID:
        pax[b"gid"] = str(gid).encode()
        gid = 0
    if not 0 <= size <= _MAX_SIZE:
        pax[b"size"] = str(size).encode()
        size = 0
    seconds, nanos = divmod(h.mtime_ns, 1_000_000_000)
    mtime = seconds
    if nanos or not 0 <= seconds <= _MAX_TIME:
        pax[b"mtime"] = _pax_time(h.mtime_ns)
        mtime = seconds if 0 <= seconds <= _MAX_TIME else 0
    devmajor, devminor = h.devmajor, h.devminor
    if not _fits(devmajor, 8) or not _fits(devminor, 8):
        raise CtrconvError(f"device number {devmajor}:{devminor} of {h.name!r} does not fit a tar header")
    for key, value in sorted((h.xattrs or {}).items()):
        pax[b"SCHILY.xattr." + key] = value
    out = bytearray()
    if pax:
        data = pax_records(pax)
        head, _, tail = h.name.rstrip(b"/").rpartition(b"/")
        pax_name = (head + b"/PaxHeaders.0/" + tail) if head else (b"PaxHeaders.0/" + tail)
        pax_name = _ascii(pax_name)[:_NAME].rstrip(b"/")
        block = bytearray(BLOCK)
        block[0:100] = _string(pax_name, 100)
        block[100:108] = _octal(0, 8)
        block[108:116] = _octal(0, 8)
        block[116:124] = _octal(0, 8)
        block[124:136] = _octal(len(data), 12)
        block[136:148] = _octal(0, 12)
        block[148:156] = b" " * 8
        block[156:157] = TYPE_PAX
        block[257:263] = b"ustar\0"
        block[263:265] = b"00"
        block[148:156] = _octal(sum(block), 7) + b" "
        out += block
        out += data + bytes(-len(data) % BLOCK)
    out += _ustar_block(name, prefix, size=size, mtime=mtime, uid=uid, gid=gid, linkname=linkname,
                        devmajor=devmajor, devminor=devminor, typeflag=h.typeflag, mode=h.mode)
    return bytes(out)


def _pax_time(ns: int) -> bytes:
    """Go ``formatPAXTime``: seconds, and a fraction without trailing zeros."""
    sign = b""
    if ns < 0:
        sign, ns = b"-", -ns
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = sign + str(seconds).encode()
    if nanos:
        text += b"." + f"{nanos:09d}".rstrip("0").encode()
    return text


# -- the output: diff ID, compression, blob digest ------------------------------------------


class ParallelGzip:
    """One gzip member whose deflate blocks are compressed side by side, like ``pigz``.

    The input is cut into blocks of exactly :data:`GZIP_BLOCK` bytes; each is deflated on its
    own (primed with the previous block's last 32 KiB as dictionary) and ended with a sync
    flush, and an empty final block closes the stream. The bytes depend only on the input, the
    level and the block size, never on the number of workers or on how the input arrived, so
    the output is deterministic; zlib releases the GIL, so the workers use several cores.
    At most ``2 * workers`` blocks are in flight (bounded memory). Header: no name, mtime 0,
    OS 255 (unknown), as Go's ``gzip.Writer`` writes it.
    """

    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, level: int, workers: int | None = None) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.level = level
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gzip")
        self._inflight: "deque" = deque()
        self._buf = bytearray()
        self._dict = b""
        self._crc = 0
        self._size = 0
        self._started = False

    def _submit(self, block: bytes) -> None:
        self._inflight.append(self._pool.submit(_deflate_block, block, self._dict, self.level))
        self._dict = block[-32768:]

    def _ready(self, wait_all: bool = False) -> bytes:
        out = []
        if not self._started:
            out.append(self.HEADER)
            self._started = True
        while self._inflight and (wait_all or len(self._inflight) > 2 * self.workers or self._inflight[0].done()):
            out.append(self._inflight.popleft().result())
        return b"".join(out)

    def compress(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buf += data
        while len(self._buf) >= GZIP_BLOCK:
            self._submit(bytes(self._buf[:GZIP_BLOCK]))
            del self._buf[:GZIP_BLOCK]
        return self._ready()

    def flush(self) -> bytes:
        if self._buf:
            self._submit(bytes(self._buf))
            self._buf.clear()
        body = self._ready(wait_all=True)
        final = zlib.compressobj(self.level, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
        return body + final + (self._crc & 0xFFFFFFFF).to_bytes(4, "little") + (self._size & 0xFFFFFFFF).to_bytes(4, "little")

    def close(self) -> None:
        for future in self._inflight:
            future.cancel()
        self._inflight.clear()
        self._pool.shutdown(wait=True)


def _deflate_block(block: bytes, zdict: bytes, level: int) -> bytes:
    if zdict:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(block) + comp.flush(zlib.Z_SYNC_FLUSH)


class LayerWriter:
    """Takes tar bytes: hashes them (diff ID), compresses them, writes the blob to ``fd``
    while hashing and counting it. :meth:`finish` flushes and returns the result."""

    def __init__(self, fd: int, compression: Compression, on_data: Callable[[int], object] | None = None) -> None:
        if compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compression!r} (choose from {', '.join(COMPRESSIONS)})")
        self._fd = fd
        #: told the bytes of file contents as they are written (a progress display)
        self.on_data = on_data
        self.compression = compression
        self._diff = hashlib.sha256()
        self._blob = hashlib.sha256()
        self.tar_bytes = 0
        self.blob_bytes = 0
        self._pending: list[bytes] = []
        self._pending_len = 0
        if compression == "gzip":
            self._comp: object | None = ParallelGzip(GZIP_LEVEL)
        elif compression == "zstd":
            self._comp = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        else:
            self._comp = None

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        self._pending_len += len(data)
        if self._pending_len >= CHUNK:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending, self._pending_len = [], 0
        self._diff.update(data)
        self.tar_bytes += len(data)
        self._emit(data if self._comp is None else self._comp.compress(data))  # type: ignore[attr-defined]

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self._blob.update(data)
        self.blob_bytes += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        """Stop any compression workers (after :meth:`finish`, or on an error)."""
        close = getattr(self._comp, "close", None)
        if close is not None:
            close()

    def finish(self) -> "WrittenLayer":
        self._flush_pending()
        if self._comp is not None:
            self._emit(self._comp.flush())  # type: ignore[attr-defined]
        self.close()
        return WrittenLayer(
            diff_id="sha256:" + self._diff.hexdigest(), digest="sha256:" + self._blob.hexdigest(),
            size=self.blob_bytes, tar_size=self.tar_bytes, compression=self.compression,
        )


@dataclass(frozen=True)
class WrittenLayer:
    diff_id: str
    digest: str
    size: int
    tar_size: int
    compression: Compression


# -- walking trees -------------------------------------------------------------------------


def _listdir(path: bytes) -> list[bytes]:
    return sorted(os.listdir(path))


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    """Every xattr an unpacker would set from the archive (not ``trusted.*``, not overlay's)."""
    out: dict[bytes, bytes] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        raw = name.encode("utf-8", "surrogateescape")
        if raw.startswith(b"trusted.") or raw.startswith(b"user.overlay."):
            continue
        try:
            out[raw] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _is_opaque(path: bytes) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _TarEmitter:
    """Writes entries for host paths, tracking hardlinks like containerd's ChangeWriter."""

    def __init__(self, out: LayerWriter) -> None:
        self.out = out
        self.inode_src: dict[tuple[int, int], bytes] = {}
        self.inode_refs: dict[tuple[int, int], list[bytes]] = {}
        self.entries = 0

    def _write(self, h: Header) -> None:
        self.out.write(header_bytes(h))
        self.entries += 1

    def whiteout(self, rel: bytes, uid: int = 0, gid: int = 0) -> None:
        parent, _, base = rel.rpartition(b"/")
        name = (parent + b"/" if parent else b"") + WHITEOUT_PREFIX + base
        self._write(Header(name=name, typeflag=TYPE_REG, uid=uid, gid=gid))

    def opaque(self, rel_dir: bytes) -> None:
        self._write(Header(name=rel_dir + b"/" + WHITEOUT_OPAQUE, typeflag=TYPE_REG))

    def unchanged_link(self, st: os.stat_result, rel: bytes) -> None:
        """An unchanged file sharing its inode: linked to the inode's first written path."""
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in self.inode_src:
                self._write(Header(name=rel, typeflag=TYPE_LINK, linkname=self.inode_src[key],
                                   mode=_tar_mode(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                                   mtime_ns=_mtime(st)))
            else:
                self.inode_refs.setdefault(key, []).append(rel)

    def path(self, path: bytes, rel: bytes, st: os.stat_result) -> None:
        """One entry for the host ``path`` stored as ``rel`` (no leading slash)."""
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFSOCK:
            return
        h = Header(name=rel, typeflag=TYPE_REG, mode=_tar_mode(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                   mtime_ns=_mtime(st), xattrs=_xattrs(path) or None)
        if fmt == stat.S_IFDIR:
            h.typeflag, h.name = TYPE_DIR, rel + b"/"
        elif fmt == stat.S_IFLNK:
            h.typeflag, h.linkname = TYPE_SYMLINK, os.readlink(path)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            h.typeflag = TYPE_CHAR if fmt == stat.S_IFCHR else TYPE_BLOCK
            h.devmajor, h.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif fmt == stat.S_IFIFO:
            h.typeflag = TYPE_FIFO
        elif fmt != stat.S_IFREG:
            raise CtrconvError(f"cannot put {path!r} in a layer: unknown file type {fmt:o}")
        extra: list[bytes] = []
        if fmt != stat.S_IFDIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in self.inode_src:
                h.typeflag, h.linkname, h.xattrs = TYPE_LINK, self.inode_src[key], None
                self._write(h)
                return
            self.inode_src[key] = rel
            extra = self.inode_refs.pop(key, [])
        if h.typeflag == TYPE_REG:
            h.size = st.st_size
            self._write(h)
            self._copy(path, st.st_size)
        else:
            self._write(h)
        for other in extra:
            self._write(Header(name=other, typeflag=TYPE_LINK, linkname=rel, mode=h.mode, uid=h.uid,
                               gid=h.gid, mtime_ns=h.mtime_ns))

    def _copy(self, path: bytes, size: int) -> None:
        remaining = size
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while remaining > 0:
                data = os.read(fd, min(CHUNK, remaining))
                if not data:
                    raise CtrconvError(f"{path!r} shrank while it was read ({remaining} bytes short)")
                self.out.write(data)
                if self.out.on_data is not None:
                    self.out.on_data(len(data))
                remaining -= len(data)
        finally:
            os.close(fd)
        if size % BLOCK:
            self.out.write(bytes(BLOCK - size % BLOCK))

    def close(self) -> None:
        self.out.write(bytes(BLOCK * 2))


def _tar_mode(mode: int) -> int:
    return stat.S_IMODE(mode)


def _mtime(st: os.stat_result) -> int:
    return st.st_mtime_ns


def _overlay_walk(emit: _TarEmitter, top: bytes) -> None:
    """Depth first, each directory's names sorted; iterative, so nesting depth is no limit."""
    stack: list[tuple[bytes, Iterator[bytes]]] = [(b"", iter(_listdir(top)))]
    while stack:
        rel, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        child_rel = rel + b"/" + name if rel else name
        path = top + b"/" + child_rel
        st = os.lstat(path)
        if _is_whiteout(st):
            emit.whiteout(child_rel, st.st_uid, st.st_gid)
            continue
        emit.path(path, child_rel, st)
        if stat.S_ISDIR(st.st_mode):
            if _is_opaque(path):
                emit.opaque(child_rel)
            stack.append((child_rel, iter(_listdir(path))))


def _same_file(lower: bytes, lst: os.stat_result, upper: bytes, ust: os.stat_result) -> bool:
    """``fs.Changes``' ``sameFile``, comparing every exported xattr instead of capabilities only."""
    if (lst.st_mode, lst.st_uid, lst.st_gid, lst.st_rdev) != (ust.st_mode, ust.st_uid, ust.st_gid, ust.st_rdev):
        return False
    if _xattrs(lower) != _xattrs(upper):
        return False
    if stat.S_ISDIR(ust.st_mode):
        return True
    if lst.st_size != ust.st_size:
        return False
    l_sec, l_ns = divmod(lst.st_mtime_ns, 1_000_000_000)
    u_sec, u_ns = divmod(ust.st_mtime_ns, 1_000_000_000)
    if l_sec != u_sec:
        return False
    if l_ns == 0 and u_ns == 0:
        if stat.S_ISLNK(ust.st_mode):
            return os.readlink(lower) == os.readlink(upper)
        if not stat.S_ISREG(ust.st_mode) or ust.st_size == 0:
            return True
        return _same_content(lower, upper)
    return l_ns == u_ns


def _same_content(a: bytes, b: bytes) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


class _NativeDiff:
    """``doubleWalkDiff`` of two full trees, written through ``emit`` with parents included."""

    def __init__(self, emit: _TarEmitter, lower: bytes, upper: bytes) -> None:
        self.emit = emit
        self.lower = lower
        self.upper = upper
        #: unchanged directories above the current position, not written yet
        self.pending: list[tuple[bytes, bytes, os.stat_result]] = []

    def _flush_parents(self) -> None:
        for path, rel, st in self.pending:
            self.emit.path(path, rel, st)
        self.pending.clear()

    def _added(self, path: bytes, rel: bytes, st: os.stat_result) -> None:
        self._flush_parents()
        self.emit.path(path, rel, st)
        if stat.S_ISDIR(st.st_mode):
            for name in _listdir(path):
                child = path + b"/" + name
                self._added(child, rel + b"/" + name, os.lstat(child))

    def walk(self, rel: bytes = b"") -> None:
        lower_dir = self.lower + (b"/" + rel if rel else b"")
        upper_dir = self.upper + (b"/" + rel if rel else b"")
        lower_names = set(_listdir(lower_dir))
        upper_names = _listdir(upper_dir)
        for name in sorted(lower_names | set(upper_names)):
            child_rel = rel + b"/" + name if rel else name
            lpath, upath = self.lower + b"/" + child_rel, self.upper + b"/" + child_rel
            if name not in upper_names:
                self._flush_parents()
                self.emit.whiteout(child_rel)
                continue
            ust = os.lstat(upath)
            if name not in lower_names:
                self._added(upath, child_rel, ust)
                continue
            lst = os.lstat(lpath)
            same = _same_file(lpath, lst, upath, ust)
            if stat.S_ISDIR(ust.st_mode) and stat.S_ISDIR(lst.st_mode):
                depth = len(self.pending)
                if same:
                    self.pending.append((upath, child_rel, ust))
                else:
                    self._flush_parents()
                    self.emit.path(upath, child_rel, ust)
                self.walk(child_rel)
                del self.pending[depth:]
            elif stat.S_ISDIR(ust.st_mode):
                self._added(upath, child_rel, ust)  # a file became a directory: all of it is new
            elif same:
                self.emit.unchanged_link(ust, child_rel)
            else:
                self._flush_parents()
                self.emit.path(upath, child_rel, ust)


def write_overlay_diff(fs_dir: str | os.PathLike[str], out: LayerWriter) -> int:
    """The layer of an overlayfs snapshot (its ``fs`` directory); returns the entry count."""
    emit = _TarEmitter(out)
    _overlay_walk(emit, os.fsencode(fs_dir))
    emit.close()
    return emit.entries


def write_tree_diff(tree: str | os.PathLike[str], parent: str | os.PathLike[str] | None, out: LayerWriter) -> int:
    """The layer that turns ``parent`` (a full tree, or nothing) into ``tree`` (native snapshots)."""
    emit = _TarEmitter(out)
    upper = os.fsencode(tree)
    if parent is None:
        for name in _listdir(upper):
            path = upper + b"/" + name
            _NativeDiff(emit, b"", upper)._added(path, name, os.lstat(path))
    else:
        _NativeDiff(emit, os.fsencode(parent), upper).walk()
    emit.close()
    return emit.entries


def write_layer(
    fd: int,
    compression: Compression,
    *,
    overlay_fs: str | os.PathLike[str] | None = None,
    tree: str | os.PathLike[str] | None = None,
    parent_tree: str | os.PathLike[str] | None = None,
    on_data: Callable[[int], object] | None = None,
) -> WrittenLayer:
    """Write one regenerated layer blob to ``fd``: from an overlayfs ``fs`` directory, or as
    the difference of a full ``tree`` against ``parent_tree`` (None: the first layer).
    ``on_data(n)`` hears of each chunk of file contents written (progress)."""
    out = LayerWriter(fd, compression, on_data)
    try:
        return _write_tree(out, overlay_fs, tree, parent_tree)
    finally:
        out.close()


def _write_tree(out: LayerWriter, overlay_fs: str | os.PathLike[str] | None, tree: str | os.PathLike[str] | None,
                parent_tree: str | os.PathLike[str] | None) -> WrittenLayer:
    try:
        if overlay_fs is not None:
            write_overlay_diff(overlay_fs, out)
        elif tree is not None:
            write_tree_diff(tree, parent_tree, out)
        else:
            raise UsageError("write_layer needs an overlay fs directory or a tree")
    except OSError as exc:
        raise CtrconvError(f"cannot read the snapshot to regenerate its layer: {exc}") from exc
    except RecursionError:
        raise CtrconvError("cannot regenerate a layer from a native snapshot nested this deep "
                           f"(more than about {sys.getrecursionlimit() // 2} directory levels)") from None
    return out.finish()


__all__: list[str] = [
    "COMPRESSIONS", "Compression", "Header", "LayerWriter", "WrittenLayer", "header_bytes", "pax_records",
    "write_layer", "write_overlay_diff", "write_tree_diff",
]
