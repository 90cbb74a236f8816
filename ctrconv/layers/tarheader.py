"""Reading tar headers the way Go's ``archive/tar`` does, for :mod:`.apply`.

Python's ``tarfile`` stops silently at a damaged header, carries PAX global headers over to
later entries and drops GNU atimes; containerd (Go) fails, does not, and keeps them.
"""

from __future__ import annotations

import os
import re
import tarfile
from typing import Any

from ctrconv.errors import FormatError

#: Go's archive/tar refuses PAX / GNU long-name records above this size
_MAX_SPECIAL = 1 << 20
_MAX_TIME_NS = (1 << 63) - 1
_PAX_TIME = re.compile(r"([+-]?[0-9]+)(?:\.([0-9]*))?\Z")
_SPECIAL_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                  tarfile.GNUTYPE_LONGLINK, tarfile.SOLARIS_XHDTYPE)


class NoGlobalPax(dict):  # type: ignore[type-arg]
    """Go's tar reader does not carry PAX global headers over to later entries; neither do we."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class Member(tarfile.TarInfo):
    """TarInfo that fails on damaged headers (Python would stop silently) and keeps GNU atime."""

    gnu_atime: int | None = None

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> "Member":
        try:
            obj = super().frombuf(buf, encoding, errors)
        except (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as exc:
            raise FormatError(f"invalid tar header: {exc}") from None
        if obj.type in _SPECIAL_TYPES and obj.size > _MAX_SPECIAL:
            raise FormatError(f"tar extended header of {obj.size} bytes is too large")
        if buf[257:265] == tarfile.GNU_MAGIC and buf[345]:
            try:
                obj.gnu_atime = tarfile.nti(buf[345:357])
            except tarfile.HeaderError:
                pass  # Go ignores unparsable GNU atime fields too
        return obj  # type: ignore[return-value]


def pax_time_ns(text: str) -> int:
    """Go ``parsePAXTime``: seconds, optional fraction truncated to nanoseconds."""
    match = _PAX_TIME.match(text)
    if not match:
        raise FormatError(f"invalid PAX time {text!r}")
    secs = int(match.group(1))
    frac = int((match.group(2) or "")[:9].ljust(9, "0"))
    return secs * 1_000_000_000 + (-frac if match.group(1).startswith("-") else frac)


def entry_times(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in ns: atime = max(atime, mtime), both clamped like ``boundTime``."""
    pax = member.pax_headers
    mtime = pax_time_ns(pax["mtime"]) if "mtime" in pax else int(member.mtime) * 1_000_000_000
    if "atime" in pax:
        atime: int | None = pax_time_ns(pax["atime"])
    else:
        gnu = getattr(member, "gnu_atime", None)
        atime = None if gnu is None else gnu * 1_000_000_000
    latest = mtime if atime is None or atime < mtime else atime

    def bound(ns: int) -> int:
        return ns if 0 <= ns <= _MAX_TIME_NS else 0

    return bound(latest), bound(mtime)


def device_number(member: tarfile.TarInfo) -> int:
    """``makedev`` of a device entry (0 for a fifo); refuses numbers beyond 32 bits."""
    if member.type == tarfile.FIFOTYPE:
        return 0
    major, minor = member.devmajor, member.devminor
    if not (0 <= major <= 0xFFFFFFFF and 0 <= minor <= 0xFFFFFFFF):
        raise FormatError(f"device number {major}:{minor} of {member.name!r} is out of range")
    return os.makedev(major, minor)
