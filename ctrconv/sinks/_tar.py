"""A tar writer whose bytes equal Go's ``archive/tar`` for headers holding only Name, Mode,
Size and Typeflag (what ``ctr images export`` writes).

Python's :mod:`tarfile` differs in small ways that break byte equality (it pads the stream to
10240 bytes and fills uid/uname from the caller), so headers are built here directly:

* USTAR block: mode, uid, gid as 7 octal digits + NUL; size and mtime as 11 octal digits + NUL;
  checksum as 6 octal digits + NUL + space; magic ``ustar\\0`` and version ``00``; empty
  uname/gname; devmajor/devminor ``0000000\\0``; mtime 0.
* A name longer than 100 bytes is split into the USTAR prefix field at a ``/`` (Go's
  ``splitUSTARPath``); if that is impossible, or the size exceeds the USTAR limit, a PAX
  extended header (``<dir>/PaxHeaders.0/<file>``) carries ``path``/``size``, as Go does.
* The stream ends with two zero blocks and no further padding.
"""

from __future__ import annotations

from typing import BinaryIO

BLOCK = 512
NAME_SIZE = 100
PREFIX_SIZE = 155
MAX_USTAR_SIZE = 0o77777777777
TYPE_REG = b"0"
TYPE_DIR = b"5"
TYPE_PAX = b"x"
_ZERO_BLOCK = bytes(BLOCK)


def _octal(value: int, width: int) -> bytes:
    """Go ``formatOctal``: zero-padded octal digits followed by one NUL, ``width`` bytes total."""
    digits = format(value, "o").encode("ascii")
    if len(digits) > width - 1:
        raise ValueError(f"value {value} does not fit a {width}-byte octal field")
    return digits.rjust(width - 1, b"0") + b"\0"


def _field(text: bytes, width: int) -> bytes:
    if len(text) > width:
        text = text[:width]
    return text.ljust(width, b"\0")


def split_ustar_path(name: bytes) -> tuple[bytes, bytes] | None:
    """Go ``splitUSTARPath``: (prefix, name) for a long ASCII name, or None when it cannot split."""
    length = len(name)
    if length <= NAME_SIZE or not name.isascii():
        return None
    if length > PREFIX_SIZE + 1:
        length = PREFIX_SIZE + 1
    elif name[length - 1 : length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    suffix_len = len(name) - i - 1
    if i <= 0 or suffix_len > NAME_SIZE or suffix_len == 0 or i > PREFIX_SIZE:
        return None
    return name[:i], name[i + 1 :]


def header_block(name: bytes, mode: int, size: int, typeflag: bytes, prefix: bytes = b"") -> bytes:
    """One 512-byte USTAR header with uid/gid/mtime 0 and empty owner names."""
    block = bytearray(BLOCK)
    block[0:100] = _field(name, 100)
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(0, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[329:337] = _octal(0, 8)
    block[337:345] = _octal(0, 8)
    block[345:500] = _field(prefix, 155)
    checksum = sum(block)
    block[148:156] = _octal(checksum, 7) + b" "
    return bytes(block)


def pax_records(records: dict[str, str]) -> bytes:
    """PAX ``"%d key=value\\n"`` records (the length counts itself), keys sorted like Go."""
    out = bytearray()
    for key in sorted(records):
        body = f" {key}={records[key]}\n".encode("utf-8")
        length = len(body) + 1
        while len(str(length).encode()) + len(body) != length:
            length += 1
        out += str(length).encode() + body
    return bytes(out)


def _pad(size: int) -> int:
    return (-size) % BLOCK


class TarWriter:
    """Writes entries to ``stream``; file content may be streamed in chunks.

    Use :meth:`add_dir`, :meth:`add_bytes`, or :meth:`begin_file` + :meth:`write` +
    :meth:`end_file`; finish with :meth:`close` (which does not close ``stream``).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._out = stream
        self._remaining: int | None = None
        self._pending_pad = 0
        self.bytes_written = 0

    def _emit(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self.bytes_written += len(data)

    def _header(self, name: str, mode: int, size: int, typeflag: bytes) -> None:
        if self._remaining is not None:
            raise RuntimeError("previous tar entry not finished")
        raw = name.encode("utf-8")
        prefix = b""
        pax: dict[str, str] = {}
        if len(raw) > NAME_SIZE:
            split = split_ustar_path(raw)
            if split is None:
                pax["path"] = name
            else:
                prefix, raw = split
        if size > MAX_USTAR_SIZE:
            pax["size"] = str(size)
        if pax:
            data = pax_records(pax)
            head, _, tail = name.rpartition("/")
            pax_name = (f"{head}/PaxHeaders.0/{tail}" if head else f"PaxHeaders.0/{tail}").encode("utf-8")
            self._emit(header_block(pax_name[:NAME_SIZE], 0, len(data), TYPE_PAX))
            self._emit(data + bytes(_pad(len(data))))
            if "path" in pax:
                raw, prefix = raw[:NAME_SIZE], b""
        self._emit(header_block(raw, mode, 0 if "size" in pax else size, typeflag, prefix))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._header(name, mode, 0, TYPE_DIR)

    def add_bytes(self, name: str, data: bytes, mode: int) -> None:
        self.begin_file(name, len(data), mode)
        self.write(data)
        self.end_file()

    def begin_file(self, name: str, size: int, mode: int) -> None:
        self._header(name, mode, size, TYPE_REG)
        self._remaining = size
        self._pending_pad = _pad(size)

    def write(self, data: bytes | memoryview) -> int:
        """Content of the current file; writing more than its declared size is refused."""
        if self._remaining is None:
            raise RuntimeError("no tar entry open")
        if len(data) > self._remaining:
            raise ValueError("write exceeds the tar entry's declared size")
        self._emit(data)
        self._remaining -= len(data)
        return len(data)

    def wrote_directly(self, n: int) -> None:
        """``n`` bytes of the current file went to the output file without :meth:`write`
        (a kernel copy into the same file, after the stream was flushed)."""
        if self._remaining is None:
            raise RuntimeError("no tar entry open")
        if n > self._remaining:
            raise ValueError("write exceeds the tar entry's declared size")
        self._remaining -= n
        self.bytes_written += n

    def end_file(self) -> None:
        if self._remaining is None:
            raise RuntimeError("no tar entry open")
        if self._remaining:
            raise ValueError(f"tar entry short by {self._remaining} bytes")
        self._remaining = None
        if self._pending_pad:
            self._emit(bytes(self._pending_pad))
        self._pending_pad = 0

    def close(self) -> None:
        """The end-of-archive marker: two zero blocks (no padding to a record size)."""
        if self._remaining is not None:
            raise RuntimeError("tar entry not finished")
        self._emit(_ZERO_BLOCK * 2)
