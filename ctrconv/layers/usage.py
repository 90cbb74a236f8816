"""Snapshot usage as containerd records it (continuity ``fs.DiskUsage``, ``du_unix.go``).

Committed snapshots store ``inodes`` and ``size`` in the snapshotter's metadata.db: the walk
includes the root itself, counts each (device, inode) once, and sums ``st_blocks * 512``.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple


class Usage(NamedTuple):
    inodes: int
    size: int


def disk_usage(path: str | os.PathLike[str]) -> Usage:
    """Unique inodes under ``path`` (itself included) and their allocated bytes; never follows links."""
    top = os.fspath(path)
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [top]
    while stack:
        current = stack.pop()
        st = os.lstat(current)
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            size += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(current) as it:
                stack.extend(entry.path for entry in it)
    return Usage(len(seen), size)
