"""Interpreting tar entry fields the way Go's ``archive/tar`` and containerd do, for :mod:`.apply`.

Times (PAX fractions, GNU atime, containerd's ``boundTime``) and device numbers of the entries
:mod:`.tarread` parses.
"""

from __future__ import annotations

import os
import re

from ctrconv.errors import FormatError
from ctrconv.layers.tarread import FIFOTYPE, TarEntry

_MAX_TIME_NS = (1 << 63) - 1
_PAX_TIME = re.compile(r"([+-]?[0-9]+)(?:\.([0-9]*))?\Z")


def pax_time_ns(text: str) -> int:
    """Go ``parsePAXTime``: seconds, optional fraction truncated to nanoseconds."""
    match = _PAX_TIME.match(text)
    if not match:
        raise FormatError(f"invalid PAX time {text!r}")
    secs = int(match.group(1))
    if not -(1 << 63) <= secs < (1 << 63):  # Go's ParseInt(.., 64): the header is refused
        raise FormatError(f"invalid tar header: PAX time {text!r} beyond 64 bits")
    frac = int((match.group(2) or "")[:9].ljust(9, "0"))
    return secs * 1_000_000_000 + (-frac if match.group(1).startswith("-") else frac)


def entry_times(member: TarEntry) -> tuple[int, int]:
    """(atime, mtime) in ns: atime = max(atime, mtime), both clamped like ``boundTime``."""
    pax = member.pax_headers
    mtime = pax_time_ns(pax["mtime"]) if "mtime" in pax else int(member.mtime) * 1_000_000_000
    if "atime" in pax:
        atime: int | None = pax_time_ns(pax["atime"])
    else:
        atime = None if member.gnu_atime is None else member.gnu_atime * 1_000_000_000
    latest = mtime if atime is None or atime < mtime else atime

    def bound(ns: int) -> int:
        return ns if 0 <= ns <= _MAX_TIME_NS else 0

    return bound(latest), bound(mtime)


def device_number(member: TarEntry) -> int:
    """``makedev`` of a device entry (0 for a fifo); refuses numbers beyond 32 bits."""
    if member.type == FIFOTYPE:
        return 0
    major, minor = member.devmajor, member.devminor
    if not (0 <= major <= 0xFFFFFFFF and 0 <= minor <= 0xFFFFFFFF):
        raise FormatError(f"device number {major}:{minor} of {member.name!r} is out of range")
    return os.makedev(major, minor)
