"""Findings that are reported but not fixed yet, so CI stays green while they stay visible.

Each entry names the bug precisely. The regression corpus replays every saved input; inputs
whose finding is listed here are ``xfail(strict=True)``, so the day the owner fixes the bug
the replay starts passing and the entry must be removed.
"""

from __future__ import annotations

import fnmatch
import zlib

from fuzz.bounds import Finding, signature
from fuzz.mutators import tar_headers

#: signature pattern (fnmatch) -> what is wrong and where (see docs/testing.md, "Open findings")
KNOWN_OPEN: dict[str, str] = {
    "exception:ValueError:apply.py:run": (
        "ctrconv/layers/apply.py _Applier.run: tarfile raises ValueError on an invalid PAX number "
        "(size/uid/mtime/GNU.sparse.* = '1e9'); only tarfile.TarError is turned into FormatError"
    ),
    "exception:OverflowError:apply.py:*": (
        "ctrconv/layers/apply.py _create/_write_file/_whiteout: os.chown with a negative or "
        "> 2**32 uid/gid (GNU base-256 header) raises OverflowError"
    ),
}

#: the sparse-member bomb: a GNU sparse member whose real size is huge is written out as zeros
SPARSE_BOMB = (
    "ctrconv/layers/apply.py _write_file: a GNU sparse member (PAX GNU.sparse.size or "
    "GNU.sparse.realsize = 10**23, empty map) is expanded with os.write of zeros: unbounded "
    "disk and time from a 10 KiB layer"
)


def _plain(data: bytes) -> bytes:
    """The first 16 MiB a gzip layer decodes to (up to any damage), else the bytes themselves."""
    if not data.startswith(b"\x1f\x8b"):
        return data
    decoder = zlib.decompressobj(wbits=31)
    parts: list[bytes] = []
    size = 0
    for start in range(0, len(data), 4096):
        try:
            chunk = decoder.decompress(data[start : start + 4096], (16 << 20) - size)
        except zlib.error:
            break
        parts.append(chunk)
        size += len(chunk)
        if size >= 16 << 20 or decoder.eof:
            break
    return b"".join(parts)


def has_sparse_member(data: bytes) -> bool:
    """True for tars carrying GNU sparse metadata (PAX ``GNU.sparse.*`` or a type ``S`` header)."""
    data = _plain(data)
    if b"GNU.sparse" in data:
        return True
    return any(data[off + 156 : off + 157] == b"S" for off in tar_headers(data))


#: a skipped entry (whiteout, directory, link, device) whose header claims more data than exists
SIZE_LIE_HANG = (
    "ctrconv/layers/apply.py _Applier.run: a whiteout/dir/link entry claiming size 2**63-1 makes "
    "tarfile's stream seek loop 2**48 times over EOF (tarfile._Stream.seek): a CPU hang from a "
    "384-byte gzip layer; the data of skipped entries should be read (EOF = FormatError)"
)


def _size(block: bytes) -> int:
    field = block[124:136]
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value if field[:1] == b"\x80" else -1
    try:
        return int(field.split(b"\0")[0].strip() or b"0", 8)
    except ValueError:
        return 0


def has_lying_size(data: bytes) -> bool:
    """True when a header claims more data than the (decompressed) tar holds."""
    data = _plain(data)
    return any(_size(data[off : off + 512]) > len(data) for off in tar_headers(data))


def layer_hang(data: bytes) -> str | None:
    """The known hang a layer input triggers, if any (sparse bomb, lying size)."""
    if has_sparse_member(data):
        return SPARSE_BOMB
    if has_lying_size(data):
        return SIZE_LIE_HANG
    return None


def known_open(target: str, data: bytes, finding: Finding) -> str | None:
    """Why this finding is already known (and reported), or None for a new one."""
    if target.startswith("layer") and finding.kind == "timeout":
        return layer_hang(data)
    if target.startswith("layer"):
        return known_signature(signature(finding))
    return None


def known_signature(sig: str) -> str | None:
    for pattern, why in KNOWN_OPEN.items():
        if fnmatch.fnmatchcase(sig, pattern):
            return why
    return None
