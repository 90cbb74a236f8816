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
from typing import Callable, Iterator

from ctrconv.bolt.reader import decode_meta
from ctrconv.containerd.rootlock import describe_holders, flock_waiting, holders
from ctrconv.errors import LockedError


class _KeptLocks:
    """The bolt-file locks one operation keeps from its start to its end, by inode."""

    def __init__(self) -> None:
        self._fds: dict[tuple[int, int], int] = {}

    def fd_of(self, path: str | os.PathLike[str]) -> int | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return self._fds.get((st.st_dev, st.st_ino))

    def keep(self, fd: int) -> None:
        """Keep ``fd``'s lock (a duplicate of it) until :meth:`close`."""
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) not in self._fds:
            self._fds[(st.st_dev, st.st_ino)] = os.dup(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


#: the locks kept by :func:`keeping_bolt_locks`, while it runs
_kept: _KeptLocks | None = None


@contextmanager
def keeping_bolt_locks() -> Iterator[None]:
    """Keep every bolt file this process locks, and every file written over one, locked until
    the end: an operation of several commits (an in-place rebuild) whose intermediate states
    no containerd may run on.

    containerd opens meta.db by path and waits for its lock. An in-place rebuild used to
    release its locks between its steps, and its first step kept the replaced meta.db as a
    hard link: a containerd started during the rebuild ran on the old metadata, and its GC
    deleted every blob the rebuild wrote (found by a red-team run). While this runs, every
    inode named like one of the root's bolt files is locked by this process: one written over
    another is locked before its rename (:func:`new_inode_hook`), the replaced one retired by
    its writer; a containerd waiting on the last one gets it once this ends, on the finished
    root, and one waiting on a replaced one fails to open it ("invalid database"). Within the
    process the kept locks count as its own: :func:`is_locked`, :func:`shared_lock` and
    :func:`exclusive_lock` pass them."""
    global _kept
    if _kept is not None:  # (nested: the outer one keeps them)
        yield
        return
    _kept = _KeptLocks()
    try:
        yield
    finally:
        kept, _kept = _kept, None
        kept.close()


def kept_lock(path: str | os.PathLike[str]) -> int | None:
    """The descriptor of ``path``'s current inode when :func:`keeping_bolt_locks` keeps it locked."""
    return _kept.fd_of(path) if _kept is not None else None


def new_inode_hook() -> Callable[[int], None] | None:
    """For a writer about to rename a new bolt file into place: while locks are kept, a hook
    that locks the new file's descriptor before its rename, and keeps it locked (no moment
    where a containerd could take the file first); None otherwise."""
    kept = _kept
    if kept is None:
        return None

    def lock_and_keep(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (a file nobody else has opened yet)
        kept.keep(fd)

    return lock_and_keep


def is_locked(path: str | os.PathLike[str]) -> bool:
    """True when another process holds an exclusive flock on ``path`` (a running containerd)."""
    if kept_lock(path) is not None:
        return False  # this process's own, kept
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
    if kept_lock(path) is not None:  # held exclusively by this process already
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            found = holders(path)
            hint = ("stop containerd, or pass --ignore-lock to read a consistent copy"
                    if not found or any(h.is_containerd for h in found) else
                    "let it finish, or pass --ignore-lock to read the last committed state")
            raise LockedError(f"{path} is locked by {describe_holders(path, found)}", hint=hint) from None
        yield
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[int]:
    """Hold ``LOCK_EX`` for writing; refuse (naming the holder: containerd, a ctrconv reader)
    if anyone holds the file, after waiting as :func:`ctrconv.containerd.rootlock.waiting` says."""
    held = kept_lock(path)
    if held is not None:  # kept by this process (:func:`keeping_bolt_locks`)
        yield held
        return
    fd = os.open(path, os.O_RDWR)
    try:
        flock_waiting(fd, fcntl.LOCK_EX, path, "refusing to write")
        if _kept is not None:
            _kept.keep(fd)
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
