"""Writing tar headers byte for byte as Go's ``archive/tar`` writes them (reading: :mod:`.tarheader`).

One encoder for every tar ctrconv writes: regenerated layers (:mod:`.regenerate`) and the OCI
and docker-archive exports (:mod:`ctrconv.sinks._tar`, whose output must equal
``ctr images export`` byte for byte). Python's :mod:`tarfile` differs in small ways that break
that equality (it pads the stream to 10240 bytes, fills owner names from the caller), so the
blocks are built here directly:

* USTAR block: mode, uid, gid, device numbers as 7 octal digits + NUL; size and mtime as 11
  octal digits + NUL; checksum as 6 octal digits + NUL + space; magic ``ustar\\0``, version
  ``00``; empty owner names; mtime in whole seconds.
* A name longer than 100 bytes is split into the USTAR prefix field at a ``/`` (Go's
  ``splitUSTARPath``). A PAX extended header (``<dir>/PaxHeaders.0/<file>``) comes first only
  when a field needs one: a non-ASCII or unsplittable name, a non-ASCII or too long link
  target, a large id or size, xattrs (``SCHILY.xattr.``), a sub-second or negative mtime.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ctrconv.errors import CtrconvError

BLOCK = 512
NAME_SIZE = 100
PREFIX_SIZE = 155
LINK_SIZE = 100
_MAX_ID = 0o7777777
MAX_USTAR_SIZE = 0o77777777777
_MAX_TIME = 0o77777777777

TYPE_REG = b"0"
TYPE_LINK = b"1"
TYPE_SYMLINK = b"2"
TYPE_CHAR = b"3"
TYPE_BLOCK = b"4"
TYPE_DIR = b"5"
TYPE_FIFO = b"6"
TYPE_PAX = b"x"


def _octal(value: int, width: int) -> bytes:
    """Go ``formatOctal``: zero-padded octal digits followed by one NUL, ``width`` bytes total."""
    digits = format(value, "o").encode("ascii")
    return digits.rjust(width - 1, b"0") + b"\0"


def _fits(value: int, width: int) -> bool:
    return 0 <= value < 8 ** (width - 1)


def _string(text: bytes, width: int) -> bytes:
    """Go ``formatString``: truncated to the field, NUL padded; a truncation ending in ``/``
    has its first trailing slash replaced by NUL (no reader takes a file for a directory)."""
    if len(text) <= width:
        return text.ljust(width, b"\0")
    field = bytearray(text[:width])
    if field.endswith(b"/"):
        field[len(field.rstrip(b"/"))] = 0
    return bytes(field)


def _ascii(text: bytes) -> bytes:
    """Go ``toASCII``: non-ASCII bytes dropped (what a PAX-carried field leaves in USTAR)."""
    return text if text.isascii() else bytes(b for b in text if b < 0x80)


def split_ustar_path(name: bytes) -> tuple[bytes, bytes] | None:
    """Go ``splitUSTARPath``: (prefix, name) for a long ASCII name, or None when it cannot split."""
    length = len(name)
    if length <= NAME_SIZE or not name.isascii():
        return None
    if length > PREFIX_SIZE + 1:
        length = PREFIX_SIZE + 1
    elif name[length - 1:length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    suffix = len(name) - i - 1
    if i <= 0 or suffix > NAME_SIZE or suffix == 0 or i > PREFIX_SIZE:
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


def pax_time(ns: int) -> bytes:
    """Go ``formatPAXTime``: seconds, and a fraction without trailing zeros."""
    sign = b""
    if ns < 0:
        sign, ns = b"-", -ns
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = sign + str(seconds).encode()
    if nanos:
        text += b"." + f"{nanos:09d}".rstrip("0").encode()
    return text


@dataclass
class Header:
    """One tar entry's metadata, as Go's ``tar.Header`` holds it (names as raw bytes)."""

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


def ustar_block(name: bytes, typeflag: bytes, *, mode: int = 0, uid: int = 0, gid: int = 0, size: int = 0,
                mtime: int = 0, linkname: bytes = b"", devmajor: int | None = 0, devminor: int | None = 0,
                prefix: bytes = b"") -> bytes:
    """One 512-byte USTAR header block; every number must fit its field (see :func:`header_bytes`).
    Device numbers None leave their fields empty, as Go's V7-plus-magic PAX header blocks do."""
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
    if devmajor is not None:
        block[329:337] = _octal(devmajor, 8)
    if devminor is not None:
        block[337:345] = _octal(devminor, 8)
    block[345:500] = _string(prefix, 155)
    block[148:156] = _octal(sum(block), 7) + b" "
    return bytes(block)


def pax_header_name(name: bytes) -> bytes:
    """Go's name for an entry's PAX header: ``path.Join(dir, "PaxHeaders.0", file)`` of
    ``path.Split(name)`` (so ``a/b/`` gives ``a/b/PaxHeaders.0``), ASCII only, at most 100
    bytes, no trailing slash (``writeRawFile``)."""
    cut = name.rfind(b"/") + 1
    directory, file = name[:cut], name[cut:]
    joined = directory + b"PaxHeaders.0/" + file if file else directory + b"PaxHeaders.0"
    if b"//" in joined or b"/." in joined or joined.startswith(b"."):  # else already clean
        joined = posixpath.normpath(joined)
        if joined.startswith(b"//"):  # POSIX keeps a leading "//"; Go's path.Clean does not
            joined = b"/" + joined.lstrip(b"/")
    return _ascii(joined)[:NAME_SIZE].rstrip(b"/")


def _pax_block(name: bytes, records: dict[bytes, bytes]) -> bytes:
    """The PAX extended header of the entry ``name`` (Go's ``writePAXHeader``), padded."""
    data = pax_records(records)
    block = ustar_block(pax_header_name(name), TYPE_PAX, size=len(data), devmajor=None, devminor=None)
    return block + data + bytes(-len(data) % BLOCK)


def header_bytes(h: Header) -> bytes:
    """The header block(s) of one entry: a PAX extended header first when a field needs it.

    As Go's ``Writer.WriteHeader`` with ``Format: FormatPAX``: fields that fit stay in the
    USTAR block; a long ASCII name goes into the prefix field only when no other field needs
    PAX (else the PAX ``path`` carries it and the block holds its first 100 bytes)."""
    pax: dict[bytes, bytes] = {}
    linkname = h.linkname
    if len(linkname) > LINK_SIZE or not linkname.isascii():
        pax[b"linkpath"] = linkname
        linkname = _ascii(linkname)
    uid, gid, size = h.uid, h.gid, h.size
    if not 0 <= uid <= _MAX_ID:
        pax[b"uid"] = str(uid).encode()
        uid = 0
    if not 0 <= gid <= _MAX_ID:
        pax[b"gid"] = str(gid).encode()
        gid = 0
    if not 0 <= size <= MAX_USTAR_SIZE:
        pax[b"size"] = str(size).encode()
        size = 0
    seconds, nanos = divmod(h.mtime_ns, 1_000_000_000)
    mtime = seconds
    if nanos or not 0 <= seconds <= _MAX_TIME:
        pax[b"mtime"] = pax_time(h.mtime_ns)
        mtime = seconds if 0 <= seconds <= _MAX_TIME else 0
    if not _fits(h.devmajor, 8) or not _fits(h.devminor, 8):
        raise CtrconvError(f"device number {h.devmajor}:{h.devminor} of {h.name!r} does not fit a tar header")
    for key, value in (h.xattrs or {}).items():
        pax[b"SCHILY.xattr." + key] = value
    name, prefix = h.name, b""
    if len(name) > NAME_SIZE or not name.isascii():
        split = None if pax else split_ustar_path(name)
        if split is None:
            pax[b"path"] = name
            name = _ascii(name)
        else:
            prefix, name = split
    block = ustar_block(name, h.typeflag, mode=h.mode, uid=uid, gid=gid, size=size, mtime=mtime,
                        linkname=linkname, devmajor=h.devmajor, devminor=h.devminor, prefix=prefix)
    return _pax_block(h.name, pax) + block if pax else block


__all__: list[str] = [
    "BLOCK", "Header", "MAX_USTAR_SIZE", "NAME_SIZE", "PREFIX_SIZE", "TYPE_BLOCK", "TYPE_CHAR", "TYPE_DIR",
    "TYPE_FIFO", "TYPE_LINK", "TYPE_PAX", "TYPE_REG", "TYPE_SYMLINK", "header_bytes", "pax_header_name", "pax_records",
    "pax_time",
    "split_ustar_path", "ustar_block",
]
