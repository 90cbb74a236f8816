"""Getting written data onto the disk before the metadata that points at it.

A write to a root reports success only after everything it names is durable: the blob files
and unpacked snapshot trees first (one ``syncfs`` per filesystem involved: a layer can hold tens
of thousands of small files, and one ``syncfs`` costs about what one ``fsync`` does while
per-file ``fsync`` costs one journal commit each, see ``benchmarks/bench_durability.py``), then
each bolt file (written whole, ``fsync``, renamed, directory ``fsync``), ``meta.db`` last.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Iterable

from ctrconv.streams import fsync_named

#: the C library already loaded into the interpreter (``ctypes.util.find_library`` would run
#: ``ldconfig -p`` in a subprocess on every start)
_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: str | os.PathLike[str]) -> None:
    """``syncfs(2)`` of the filesystem holding ``path``: every dirty page and inode of it,
    and (journalled filesystems) a journal commit covering every earlier metadata change."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


def sync_filesystems(paths: Iterable[str | os.PathLike[str]]) -> int:
    """One :func:`syncfs` per distinct filesystem among ``paths`` (missing ones skipped);
    returns how many filesystems were synced."""
    seen: set[int] = set()
    for path in paths:
        p = Path(path)
        while not p.exists() and p != p.parent:
            p = p.parent
        dev = os.stat(p).st_dev
        if dev in seen:
            continue
        seen.add(dev)
        syncfs(p)
    return len(seen)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """``fsync`` one file by name (a copy made with ordinary writes)."""
    fsync_named(path)
