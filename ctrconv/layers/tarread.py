"""A lean streaming tar reader for the layer applier (:mod:`.apply`), in place of ``tarfile``.

Why: on the unpack path ``tarfile``'s pure-Python header parsing and its ``_Stream`` buffer
joins were two thirds of the main thread's Python CPU (benchmarks/README.md, issue 17). This
reader takes the decompressed stream in the big chunks it arrives in, parses each 512-byte
header with one ``struct`` call, and hands file data to the applier as ``memoryview`` slices of
those chunks (:meth:`TarReader.write_data`: no copies).

It reads what ``tarfile`` read for the applier - ustar, GNU (long names and links ``L``/``K``,
old sparse ``S``, base-256 numbers), PAX (``path``, ``linkpath``, ``size``, ``uid``, ``gid``,
``mtime``, ``SCHILY.xattr.*``, GNU sparse 0.0/0.1/1.0) - with the same results for well-formed
archives (``tests/unit/layers/test_tarread.py`` compares the two over generated archives), and
fails like Go's ``archive/tar`` (containerd) where ``tarfile`` stopped or guessed silently:

* a damaged header, a truncated stream, a malformed PAX record or a bad PAX number (``size``,
  ``uid``, ``gid``; ``tarfile`` used 0) raise :class:`FormatError`;
* PAX global headers are ignored (``tarfile`` carried them over to later entries) and may end
  the archive;
* the ustar prefix field is not read from GNU-format headers: there it holds the atime and
  ctime, which ``tarfile`` glued in front of the name;
* a header-only entry (directory, link, device, fifo) claiming data is refused (``tarfile``
  failed on a backwards seek; Go skips nothing and then fails on the next header).
"""

from __future__ import annotations

import os
import re
import struct
from typing import Protocol

from ctrconv.errors import FormatError

BLOCK = 512
#: bytes asked of the decompressed stream at a time (it returns its own chunks, often smaller)
READ_SIZE = 1 << 20
#: Go's archive/tar refuses PAX / GNU long-name records above this size
MAX_SPECIAL = 1 << 20

REGTYPE, AREGTYPE, LNKTYPE, SYMTYPE = b"0", b"\0", b"1", b"2"
CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE, CONTTYPE = b"3", b"4", b"5", b"6", b"7"
GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE = b"L", b"K", b"S"
XHDTYPE, XGLTYPE, SOLARIS_XHDTYPE = b"x", b"g", b"X"
#: entries whose data blocks follow the header (tarfile's REGULAR_TYPES, and unknown kinds)
_HEADER_ONLY = frozenset((LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE))
_GNU_MAGIC = b"ustar  \0"
#: name, mode, uid, gid, size, mtime, chksum, type, linkname, magic+version, uname, gname,
#: devmajor, devminor, prefix (ustar layout; GNU's atime lives where the prefix starts)
_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12x")
_PAX_INT = re.compile(rb"[+-]?[0-9]+\Z")


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class TarEntry:
    """One archive member, with the attribute names of ``tarfile.TarInfo`` the applier used."""

    __slots__ = ("name", "linkname", "type", "mode", "uid", "gid", "size", "mtime",
                 "devmajor", "devminor", "pax_headers", "gnu_atime", "sparse", "old_gnu_sparse")

    def __init__(self) -> None:
        self.name = ""
        self.linkname = ""
        self.type = REGTYPE
        self.mode = self.uid = self.gid = self.size = self.mtime = 0
        self.devmajor = self.devminor = 0
        self.pax_headers: dict[str, str] = {}
        self.gnu_atime: int | None = None
        #: (offset, length) data segments of a sparse file; ``size`` is then its full size
        self.sparse: list[tuple[int, int]] | None = None
        #: stored as an old GNU sparse entry (type ``S``, read as a regular file here)
        self.old_gnu_sparse = False


def _nts(field: bytes) -> str:
    """A NUL-terminated string field."""
    end = field.find(0)
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")


def _num(field: bytes) -> int:
    """A number field: base-256 (GNU) or octal text, as ``tarfile.nti`` reads it (text up to
    the first NUL, stripped, octal). Fast path: a field starting with a digit whose NULs are
    all trailing padding reads the same with them as spaces; anything else falls through."""
    first = field[0]
    if 0x30 <= first <= 0x37:
        try:
            return int(field.translate(_NUL_TO_SPACE), 8)
        except ValueError:
            pass
    elif not first:
        return 0
    if first in (0o200, 0o377):
        n = int.from_bytes(field[1:], "big")
        return _int64(n - 256 ** (len(field) - 1) if field[0] == 0o377 else n)
    end = field.find(0)
    try:
        return int((field if end < 0 else field[:end]).decode("ascii").strip() or "0", 8)
    except ValueError:
        raise FormatError("invalid tar header: invalid header") from None


def _pax_int(headers: dict[str, str], key: str) -> int:
    """Go ``strconv.ParseInt`` of a PAX number (``tarfile`` silently used 0 for garbage)."""
    raw = headers[key].encode("utf-8", "surrogateescape")
    if not _PAX_INT.match(raw):
        raise FormatError(f"invalid PAX {key} {headers[key]!r}")
    return _int64(int(raw))


def _int64(n: int) -> int:
    """``n`` when Go's tar reader takes it (``ParseInt(.., 64)``, ``parseNumeric``): beyond an
    int64 it refuses the header, and so does containerd (ctrconv clamped a 2^80 mtime to 0
    and unpacked a layer containerd cannot: a red-team run)."""
    if not -(1 << 63) <= n < (1 << 63):
        raise FormatError("invalid tar header: a number beyond 64 bits")
    return n


def owner_id(n: int) -> int:
    """The uid or gid containerd's ``Lchown`` gives the kernel: Go's int, taken as 32 bits
    (2^32 is root, -2 is 4294967294); ctrconv refused such an entry where containerd unpacks it."""
    return n & 0xFFFFFFFF


def parse_pax(data: bytes) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """PAX records (Go ``parsePAXRecord``: every record well formed, or the header is bad).

    Returns the records by keyword (the last one wins) and the GNU sparse 0.0 offset/numbytes
    records in order (the only keywords that repeat).
    """
    records: dict[str, str] = {}
    sparse00: list[tuple[str, str]] = []
    pos, end = 0, len(data)
    while pos < end:
        space = data.find(b" ", pos, pos + 24)
        length_text = data[pos:space]
        if space < 0 or not length_text.isdigit():
            raise FormatError("invalid tar header: malformed PAX record")
        length = int(length_text)
        stop = pos + length
        if length < 5 or stop > end or stop <= space + 1 or data[stop - 1] != 0x0A:
            raise FormatError("invalid tar header: malformed PAX record")
        key, eq, value = data[space + 1:stop - 1].partition(b"=")
        if not eq or not key:
            raise FormatError("invalid tar header: malformed PAX record")
        name = key.decode("utf-8", "surrogateescape")
        text = value.decode("utf-8", "surrogateescape")
        if name in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
            sparse00.append((name, text))
        records[name] = text
        pos = stop
    return records, sparse00


class TarReader:
    """Entries of one uncompressed tar stream, strictly in order, read in big chunks.

    :meth:`next` returns the next entry (``None`` at the end marker or end of stream); the
    current entry's data can be written with :meth:`write_data` before the next call, and is
    skipped otherwise. :meth:`check_end` then enforces Go's rule for what follows the end.
    """

    def __init__(self, source: Readable) -> None:
        self._src = source
        self._buf = b""
        self._view = memoryview(b"")
        self._pos = 0
        #: data bytes of the current entry not consumed yet, then its padding
        self._data = 0
        self._pad = 0
        self._name = ""

    # -- buffer ----------------------------------------------------------------------------

    def _load(self) -> bool:
        data = self._src.read(READ_SIZE)
        if not data:
            return False
        self._buf, self._view, self._pos = data, memoryview(data), 0
        return True

    def _take(self, n: int) -> bytes:
        """``n`` bytes, fewer only at the end of the stream."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        parts = [self._buf[pos:]]
        want = n - len(parts[0])
        self._pos = len(self._buf)
        while want > 0 and self._load():
            piece = self._buf[:want]
            self._pos = len(piece)
            parts.append(piece)
            want -= len(piece)
        return b"".join(parts)

    def _skip(self, n: int) -> bool:
        """Skip ``n`` bytes; False if the stream ended first."""
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail >= n:
                self._pos += n
                return True
            n -= avail
            self._pos = len(self._buf)
            if not self._load():
                return False
        return True

    def _finish_entry(self) -> bool:
        """Skip what is left of the current entry's data and its padding; False when the stream
        ends inside the padding, which Go's reader (``tryReadFull`` of the padding) takes as the
        end of the archive: containerd unpacks a layer whose last file is not padded."""
        if self._data and not self._skip(self._data):
            raise FormatError(f"tar stream ends inside {self._name!r}")
        self._data = 0
        pad, self._pad = self._pad, 0
        return not pad or self._skip(pad)

    # -- data ------------------------------------------------------------------------------

    def write_data(self, fd: int, count: int | None = None) -> None:
        """Write the next ``count`` data bytes of the current entry (default: all) to ``fd``,
        as slices of the stream's own chunks."""
        remaining = self._data if count is None else count
        if remaining > self._data:
            raise FormatError(f"sparse map of {self._name!r} runs past its data")
        self._data -= remaining
        while remaining > 0:
            pos = self._pos
            avail = len(self._buf) - pos
            if not avail:
                if not self._load():
                    raise FormatError(f"tar stream ends inside {self._name!r}")
                continue
            take = remaining if remaining < avail else avail
            view = self._view[pos:pos + take]
            self._pos = pos + take
            remaining -= take
            while view:
                view = view[os.write(fd, view):]

    def write_sparse(self, fd: int, entry: TarEntry) -> None:
        """A sparse file: each data segment at its offset, holes left as holes (Go's
        ``WriteTo`` seeks over them too), the full size set at the end."""
        assert entry.sparse is not None
        for offset, length in entry.sparse:
            os.lseek(fd, offset, os.SEEK_SET)
            self.write_data(fd, length)
        if self._data:
            raise FormatError(f"sparse file {entry.name!r} has more data than its map")
        os.ftruncate(fd, entry.size)

    # -- headers ---------------------------------------------------------------------------

    def next(self) -> TarEntry | None:
        """The next entry, its PAX and GNU long-name headers applied; None at the end."""
        if not self._finish_entry():
            return None
        # (kind, payload) of extended headers, applied innermost first like tarfile's recursion
        pending: list[tuple[bytes, bytes]] = []
        while True:
            block = self._take(BLOCK)
            if not block:
                if pending:
                    raise FormatError("corrupt layer tar stream: empty header")
                return None
            entry, magic = self._header(block, bool(pending))
            if entry is None:
                return None
            kind = entry.type
            if kind in (GNU_LONGNAME, GNU_LONGLINK, XHDTYPE, XGLTYPE, SOLARIS_XHDTYPE):
                if entry.size > MAX_SPECIAL:
                    raise FormatError(f"tar extended header of {entry.size} bytes is too large")
                payload = self._take(entry.size)
                if len(payload) < entry.size:
                    raise FormatError("corrupt layer tar stream: unexpected end of data")
                if not self._skip(-entry.size % BLOCK):
                    return None  # (Go: the end of the archive, as after a file's data)
                if kind != XGLTYPE:  # Go does not carry global headers over; neither do we
                    pending.append((kind, payload))
                continue
            return self._complete(entry, magic, block, pending)

    def _header(self, block: bytes, inner: bool) -> tuple[TarEntry | None, bytes]:
        """Parse one header block (``tarfile.TarInfo.frombuf``); None for a zero block."""
        if len(block) < BLOCK:
            raise FormatError("invalid tar header: truncated header")
        (name, mode, uid, gid, size, mtime, chksum, kind, linkname, magic, _uname, _gname,
         devmajor, devminor, prefix) = _HEADER.unpack(block)
        if block.count(0) == BLOCK:
            if inner:
                raise FormatError("corrupt layer tar stream: end of file header")
            return None, magic
        stored = _num(chksum)
        unsigned = 256 + sum(block) - sum(chksum)
        if stored != unsigned and stored != unsigned - 256 * sum(
                1 for b in block[:148] + block[156:] if b > 127):
            raise FormatError("invalid tar header: bad checksum")
        entry = TarEntry()
        entry.mode, entry.uid, entry.gid = _num(mode), _num(uid), _num(gid)
        entry.size, entry.mtime = _num(size), _num(mtime)
        entry.devmajor, entry.devminor = _num(devmajor), _num(devminor)
        entry.type = kind
        entry.linkname = _nts(linkname)
        text = _nts(name)
        if kind == AREGTYPE and text.endswith("/"):
            entry.type = kind = DIRTYPE
        if kind == DIRTYPE:
            text = text.rstrip("/")
        if magic == _GNU_MAGIC:
            if prefix[0]:
                try:
                    entry.gnu_atime = _num(prefix[:12])
                except FormatError:
                    pass  # Go ignores unparsable GNU atime fields too
        elif prefix[0] and kind not in (GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE):
            text = _nts(prefix) + "/" + text
            if kind == DIRTYPE:
                text = text.rstrip("/")
        entry.name = text
        if entry.size < 0:
            raise FormatError(f"tar entry {text!r} has a negative size")
        return entry, magic

    def _complete(self, entry: TarEntry, magic: bytes, block: bytes,
                  pending: list[tuple[bytes, bytes]]) -> TarEntry:
        """Apply extended headers (outermost last, so the first in the stream wins, as in
        tarfile), read sparse maps, and set up the entry's data."""
        stored = entry.size
        pax: dict[str, str] | None = None
        sparse00: list[tuple[str, str]] = []
        if entry.type == GNU_SPARSE:
            entry.sparse = self._old_gnu_sparse(block)
            entry.size = _num(block[483:495])
        for kind, payload in reversed(pending):
            if kind == GNU_LONGNAME:
                entry.name = _nts(payload)
                if entry.type == DIRTYPE:
                    entry.name = entry.name.rstrip("/")
            elif kind == GNU_LONGLINK:
                entry.linkname = _nts(payload)
            else:
                pax, sparse00 = parse_pax(payload)
                stored = self._apply_pax(entry, pax, stored)
        if pax is not None:
            entry.pax_headers = pax
            if entry.type != GNU_SPARSE:
                stored = self._pax_sparse(entry, pax, sparse00, stored)
        if entry.type in _HEADER_ONLY and stored:
            raise FormatError(f"tar entry {entry.name!r} of type {entry.type!r} claims {stored} bytes of data")
        self._name = entry.name
        self._data, self._pad = stored, -stored % BLOCK
        if entry.type == GNU_SPARSE:
            entry.type = REGTYPE
            entry.old_gnu_sparse = True
        if entry.sparse is not None:
            self._check_sparse(entry)
        return entry

    @staticmethod
    def _apply_pax(entry: TarEntry, pax: dict[str, str], stored: int) -> int:
        """``tarfile._apply_pax_info`` for the fields the applier uses; returns the data size."""
        if "path" in pax:
            entry.name = pax["path"].rstrip("/")
        if "linkpath" in pax:
            entry.linkname = pax["linkpath"]
        if "uid" in pax:
            entry.uid = _pax_int(pax, "uid")
        if "gid" in pax:
            entry.gid = _pax_int(pax, "gid")
        if "size" in pax:
            stored = entry.size = _pax_int(pax, "size")
            if stored < 0:
                raise FormatError(f"tar entry {entry.name!r} has a negative size")
        return stored

    def _pax_sparse(self, entry: TarEntry, pax: dict[str, str],
                    sparse00: list[tuple[str, str]], stored: int) -> int:
        """GNU PAX sparse formats 0.0, 0.1 and 1.0; returns the data size left to read."""
        if "GNU.sparse.name" in pax:
            entry.name = pax["GNU.sparse.name"]
        real_key = "GNU.sparse.realsize" if "GNU.sparse.realsize" in pax else "GNU.sparse.size"
        if "GNU.sparse.map" in pax:
            numbers = [n.strip() for n in pax["GNU.sparse.map"].split(",")] if pax["GNU.sparse.map"] else []
        elif sparse00 or "GNU.sparse.size" in pax:  # 0.0 (tarfile's rule: the size alone says so)
            numbers = [value for _, value in sparse00]
            if [k for k, _ in sparse00] != ["GNU.sparse.offset", "GNU.sparse.numbytes"] * (len(sparse00) // 2):
                raise FormatError(f"sparse map of {entry.name!r} is malformed")
        elif pax.get("GNU.sparse.major") == "1" and pax.get("GNU.sparse.minor") == "0":
            numbers, used = self._sparse_10_map(entry, stored)
            stored -= used
        else:
            return stored
        if real_key not in pax:
            raise FormatError(f"sparse file {entry.name!r} has no real size")
        entry.size = _pax_int(pax, real_key)
        entry.sparse = _pairs(entry.name, numbers)
        return stored

    def _sparse_10_map(self, entry: TarEntry, stored: int) -> tuple[list[str], int]:
        """The 1.0 map at the start of the data: decimal numbers, one a line, block padded."""
        text = b""
        used = 0
        while True:
            if used + BLOCK > stored or used >= MAX_SPECIAL:
                raise FormatError(f"sparse map of {entry.name!r} is malformed")
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                raise FormatError(f"tar stream ends inside {entry.name!r}")
            text += block
            used += BLOCK
            lines = text.split(b"\n")
            if len(lines) > 1 and lines[0].isdigit() and len(lines) - 1 >= 1 + 2 * int(lines[0]):
                count = int(lines[0])
                return [x.decode("ascii") for x in lines[1:1 + 2 * count]], used

    def _old_gnu_sparse(self, block: bytes) -> list[tuple[int, int]]:
        """Old GNU sparse map: four slots in the header, 21 per extension block."""
        pairs: list[tuple[int, int]] = []
        area, extended = block[386:482], block[482]
        while True:
            for pos in range(0, len(area) - 23, 24):
                if not area[pos]:
                    break
                pairs.append((_num(area[pos:pos + 12]), _num(area[pos + 12:pos + 24])))
            if not extended:
                break
            ext = self._take(BLOCK)
            if len(ext) < BLOCK:
                raise FormatError("corrupt layer tar stream: unexpected end of data")
            area, extended = ext[:504], ext[504]
        return pairs

    def _check_sparse(self, entry: TarEntry) -> None:
        """Go ``validateSparseEntries``: segments in order, inside the file, data all used."""
        end = 0
        for offset, length in entry.sparse or ():
            if offset < end or length < 0 or offset + length > entry.size:
                raise FormatError(f"sparse map of {entry.name!r} is invalid")
            end = offset + length
        if sum(length for _, length in entry.sparse or ()) != self._data:
            raise FormatError(f"sparse map of {entry.name!r} does not match its data")

    def check_end(self) -> None:
        """Go: after one zero block only the end of the stream or a second zero block."""
        block = self._take(BLOCK)
        if block and (len(block) < BLOCK or block.count(0) != BLOCK):
            raise FormatError("tar stream has a zero block followed by data")


def _pairs(name: str, numbers: list[str]) -> list[tuple[int, int]]:
    """(offset, length) pairs of a sparse map given as decimal strings."""
    if len(numbers) % 2:
        raise FormatError(f"sparse map of {name!r} has an odd number of fields")
    values = []
    for text in numbers:
        if not text.isdigit() or not text.isascii():
            raise FormatError(f"sparse map of {name!r} has a bad number {text!r}")
        values.append(int(text))
    return list(zip(values[::2], values[1::2]))
