"""flock-based detection of a running containerd, and consistent private copies of live files.

containerd holds ``LOCK_EX`` on meta.db (and on each snapshotter metadata.db once used) for its
whole lifetime. We take ``LOCK_SH`` to read and ``LOCK_EX`` to write; a refusal names the holder
(:mod:`ctrconv.containerd.rootlock`, which also holds the writers' lock of a whole root).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ctrconv.bolt.reader import decode_meta
from ctrconv.containerd.rootlock import describe_holders, flock_waiting
from ctrconv.errors import LockedError


def is_locked(path: str | os.PathLike[str]) -> bool:
    """True when another process holds an exclusive flock on ``path`` (a running containerd)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextmanager
def shared_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``LOCK_SH`` while reading; refuse (exit 1) if containerd holds the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"{path} is locked by {describe_holders(path)}",
                hint="stop containerd, or pass --ignore-lock to read a consistent copy",
            ) from None
        yield
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[int]:
    """Hold ``LOCK_EX`` for writing; refuse (naming the holder: containerd, a ctrconv reader)
    if anyone holds the file, after waiting as :func:`ctrconv.containerd.rootlock.waiting` says."""
    fd = os.open(path, os.O_RDWR)
    try:
        flock_waiting(fd, fcntl.LOCK_EX, path, "refusing to write")
        yield fd
    finally:
        os.close(fd)


#: page sizes tried for the second meta page when the first one is damaged
_PAGE_SIZES = (4096, 8192, 16384, 65536)


def _current_txid(path: str | os.PathLike[str]) -> int | None:
    """The highest txid of a valid meta page; None when neither is valid (a damaged file)."""
    with open(path, "rb") as f:
        meta0 = decode_meta(f.read(4096), 0)
        sizes = (meta0.page_size,) if meta0.valid else _PAGE_SIZES
        txids = [meta0.txid] if meta0.valid else []
        for size in sizes:
            f.seek(size)
            meta1 = decode_meta(f.read(80), 1)
            if meta1.valid:
                txids.append(meta1.txid)
                break
    return max(txids) if txids else None


def private_copy(path: str | os.PathLike[str], workdir: str | os.PathLike[str], attempts: int = 10) -> Path:
    """Copy a live bolt file so that the copy is consistent.

    bbolt never rewrites pages reachable from the newest committed meta during the next commit
    (copy on write), and the meta pages are copied first, so a copy made while the txid advanced
    by at most one is consistent. Otherwise it is retried; a file whose metas are both damaged
    is copied as it is (the reader and salvage report the damage).

    Raises:
        LockedError: the file changed by two commits or more during every attempt.
    """
    dst = Path(tempfile.mkdtemp(prefix="ctrconv-copy-", dir=workdir)) / Path(path).name
    for attempt in range(attempts):
        before = _current_txid(path)
        shutil.copyfile(path, dst)
        after = _current_txid(path)
        if before is None and after is None:
            return dst
        if before is not None and after is not None and after - before <= 1:
            return dst
        time.sleep(0.01 * (attempt + 1))
    raise LockedError(
        f"{path} kept changing while it was copied ({attempts} attempts): containerd is busy writing; "
        "retry, or stop containerd"
    )
    return dst
