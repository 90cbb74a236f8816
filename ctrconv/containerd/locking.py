"""flock-based detection of a running containerd, and consistent private copies of live files.

containerd holds ``LOCK_EX`` on meta.db (and on each snapshotter metadata.db once used) for its
whole lifetime. We take ``LOCK_SH`` to read and ``LOCK_EX`` to write, never waiting.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ctrconv.bolt.reader import decode_meta
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
                f"{path} is locked by a running containerd",
                hint="stop containerd, or pass --ignore-lock to read a consistent copy",
            ) from None
        yield
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[int]:
    """Hold ``LOCK_EX`` for writing; refuse if anyone (containerd) holds the file."""
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"{path} is locked by a running containerd: refusing to write; stop containerd first"
            ) from None
        yield fd
    finally:
        os.close(fd)


def _current_txid(path: str | os.PathLike[str]) -> int | None:
    with open(path, "rb") as f:
        head = f.read(4096)
        meta0 = decode_meta(head, 0)
        if not meta0.valid:
            return None
        f.seek(meta0.page_size)
        meta1 = decode_meta(f.read(80), 1)
    return max(m.txid for m in (meta0, meta1) if m.valid)


def private_copy(path: str | os.PathLike[str], workdir: str | os.PathLike[str], attempts: int = 5) -> Path:
    """Copy a live bolt file so that the copy is consistent.

    bbolt never rewrites pages reachable from the current meta within one commit, so a copy
    made while the txid advanced by at most one is consistent; otherwise retry.
    """
    dst = Path(tempfile.mkdtemp(prefix="ctrconv-copy-", dir=workdir)) / Path(path).name
    for _ in range(attempts):
        before = _current_txid(path)
        shutil.copyfile(path, dst)
        after = _current_txid(path)
        if before is not None and after is not None and after - before <= 1:
            return dst
    return dst
