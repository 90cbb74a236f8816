"""The writers' lock of a containerd root: ``flock`` on the root directory itself.

Why the directory: it exists before ``meta.db`` does (a new root is locked from its first
byte), nothing is added to the root (containerd never sees a file it does not know), and
containerd itself never locks the root directory (it holds ``LOCK_EX`` on ``meta.db`` and on
each snapshotter ``metadata.db``), so the lock neither disturbs nor is disturbed by it. The
kernel drops the lock when its holder dies (``kill -9``): no stale lock files.

Writers hold ``LOCK_EX`` from before their first byte until their last rename; readers that
need one consistent view (``ls``, ``export``, ``verify``) hold ``LOCK_SH``. A refusal names the
holder (from ``/proc/locks``). :func:`waiting` makes the lock calls of a block wait instead of
refusing (``--wait[=SECONDS]``).

A new root is created with one ``mkdir`` (exactly one creator wins) and locked; the lock is
then checked to be on the directory that is still at that path (a failed creator removes the
root it made while holding the lock, and a waiter that then gets the lock of the removed
directory starts over). "Created by this writer" means: this process made the directory and it
was still empty when the lock was taken, so a failing writer never removes another's work.
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ctrconv.errors import LockedError, UsageError

ROOT_MODE = 0o711
_POLL = 0.05

#: seconds to wait for a conflicting holder: None = refuse at once, inf = no limit
_wait: contextvars.ContextVar[float | None] = contextvars.ContextVar("ctrconv_lock_wait", default=None)


@contextmanager
def waiting(seconds: float | None) -> Iterator[None]:
    """Lock calls inside the block wait up to ``seconds`` (None: refuse, ``inf``: forever)."""
    token = _wait.set(seconds)
    try:
        yield
    finally:
        _wait.reset(token)


# -- who holds a lock -----------------------------------------------------------------------

@dataclass(frozen=True)
class Holder:
    """A process holding a flock, as far as ``/proc`` tells."""

    pid: int
    command: str

    @property
    def is_containerd(self) -> bool:
        return os.path.basename(self.command.split(" ", 1)[0]).startswith("containerd")

    @property
    def is_ctrconv(self) -> bool:
        return self.command.startswith("ctrconv")

    def describe(self) -> str:
        if self.is_containerd:
            return f"a running containerd (pid {self.pid})"
        if self.is_ctrconv:
            return f"ctrconv pid {self.pid} ({self.command})"
        return f"pid {self.pid} ({self.command})" if self.command else f"pid {self.pid}"


def _command_of(pid: int) -> str:
    """``ctrconv import --root R ...`` for a ctrconv process (interpreter and ``-m`` dropped),
    else the command line as is."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    for i, arg in enumerate(args):
        if os.path.basename(arg) == "ctrconv" or (arg == "-m" and args[i + 1:i + 2] == ["ctrconv"]):
            rest = args[i + 2:] if arg == "-m" else args[i + 1:]
            return " ".join(["ctrconv", *rest])
    return " ".join(args)


def holders(path: str | os.PathLike[str]) -> list[Holder]:
    """Processes holding a flock on ``path`` (empty when ``/proc/locks`` does not say)."""
    try:
        st = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return []
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found: list[Holder] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or "->" in fields[1] or fields[1] != "FLOCK" or fields[5] != wanted:
            continue
        pid = int(fields[4])
        if pid > 0 and pid != os.getpid() and all(h.pid != pid for h in found):
            found.append(Holder(pid, _command_of(pid)))
    return found


def describe_holders(path: str | os.PathLike[str], found: list[Holder] | None = None) -> str:
    """``a running containerd (pid 12)`` / ``ctrconv pid 34 (ctrconv import ...)`` / a fallback."""
    found = holders(path) if found is None else found
    if not found:
        return "another process (a running containerd or another ctrconv)"
    return " and ".join(h.describe() for h in found)


def refusal(path: str | os.PathLike[str], what: str, waited: float | None,
            found: list[Holder] | None = None) -> LockedError:
    """The one-line refusal for a lock on ``path`` that someone else holds (``found``: the
    holders already read, so the message names the ones seen when the lock was refused)."""
    found = holders(path) if found is None else found
    who = describe_holders(path, found)
    after = f" (waited {waited:g} s)" if waited else ""
    if found and all(h.is_containerd for h in found):
        hint = "stop containerd first"
    elif what.startswith("refusing to read"):
        hint = "pass --wait[=SECONDS] to wait for it, or --ignore-lock to read the last committed state"
    else:
        hint = "pass --wait[=SECONDS] to wait for it"
    return LockedError(f"{what}: {path} is locked by {who}{after}", hint=hint)


# -- taking a lock --------------------------------------------------------------------------

def flock_waiting(fd: int, operation: int, path: str | os.PathLike[str], what: str) -> None:
    """``flock(fd, operation)``, waiting as :func:`waiting` says; refuses naming the holder."""
    limit = _wait.get()
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        waited = time.monotonic() - started
        if limit is None or waited >= limit:
            seen = _holders_unless_free(fd, operation, path)
            if seen is None:
                return
            raise refusal(path, what, limit if limit else None, seen)
        seen = holders(path)
        if any(h.is_containerd for h in seen):
            # containerd holds its files for its whole life: --wait is for another ctrconv.
            # Waiting on it held the root's writers' lock meanwhile, took meta.db the moment a
            # restart let it go, and left the restarted containerd without its metadata plugin
            # ("invalid database") until a second restart (a red-team run)
            raise refusal(path, what, None, seen)
        time.sleep(min(_POLL, max(0.0, limit - waited)))


def _holders_unless_free(fd: int, operation: int, path: str | os.PathLike[str]) -> list[Holder] | None:
    """Before refusing: a holder that ``/proc/locks`` no longer shows has just released the
    lock (it finished between our attempt and the look-up). Try again then, a few times, so a
    refusal always names a holder that is really there, or falls back only when the holder is
    invisible to us (another PID namespace). A holder without a command line is exiting (the
    kernel lets go of its memory before its files: a CI run named the holder as a bare "pid N"
    just as it finished): looked at again too. None when the lock was taken after all."""
    found: list[Holder] = []
    for attempt in range(50):  # (an exiting holder frees its memory first: up to 0.5 s)
        found = holders(path)
        if found and all(h.command for h in found):
            return found
        if not found and attempt >= 5:
            return []
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return None
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        time.sleep(0.01)
    return found


@dataclass
class _Held:
    fd: int
    modes: list[int]


#: locks this process holds, by (st_dev, st_ino) of the root directory (re-entrant: rebuild
#: locks a root and re-imports into it; export to the same root reads and writes it)
_held: dict[tuple[int, int], _Held] = {}


@dataclass
class RootLock:
    """A held root lock; ``created`` is True when this writer made the (then empty) root."""

    path: Path
    key: tuple[int, int]
    created: bool
    was_empty: bool


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _take(path: Path, exclusive: bool, create: bool, what: str) -> RootLock:
    operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    if create and path.is_symlink():
        path = Path(os.path.realpath(path))  # a dangling link: the root is made where it points
    while True:
        made = False
        if create:
            if path.exists() and not path.is_dir():
                raise UsageError(f"{path} is not a directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(path, ROOT_MODE)
                made = True
            except FileExistsError:
                pass
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                continue  # removed by a failed creator between our mkdir and open
            raise
        except NotADirectoryError:
            raise UsageError(f"{path} is not a directory") from None
        fst = os.fstat(fd)
        key = (fst.st_dev, fst.st_ino)
        held = _held.get(key)
        if held is not None:
            os.close(fd)
            if exclusive and fcntl.LOCK_EX not in held.modes:
                _upgrade(held.fd, path, what)
            held.modes.append(operation)
            return RootLock(path, key, created=False, was_empty=False)
        try:
            flock_waiting(fd, operation, path, what)
        except BaseException:
            os.close(fd)
            raise
        if _identity(path) != key:  # removed (and maybe made again) while we waited
            os.close(fd)
            if not create:
                raise LockedError(f"{what}: {path} was removed while waiting for its lock")
            continue
        _held[key] = _Held(fd, [operation])
        was_empty = exclusive and not os.listdir(path)
        return RootLock(path, key, created=made and was_empty, was_empty=was_empty)


def _upgrade(fd: int, path: Path, what: str) -> None:
    """Turn this process's shared hold into the exclusive one (export into the root it reads).

    Without ``--wait`` the upgrade is tried once and refused naming the other holders. With it,
    the shared hold is dropped before waiting, so two processes that both hold the shared lock
    and both upgrade take the exclusive one in turn. (Linux's ``flock`` already removes the old
    lock when a non-blocking conversion fails; the explicit unlock states it rather than relying
    on it.) Whatever the caller read before the upgrade may have changed by the time the
    exclusive lock is held; writers copy verified content only, so a blob removed meanwhile
    fails the write instead of corrupting it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
    if _wait.get() is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    flock_waiting(fd, fcntl.LOCK_EX, path, what)


def _release(lock: RootLock) -> None:
    held = _held.get(lock.key)
    if held is None:
        return
    held.modes.pop()
    if held.modes:
        if fcntl.LOCK_EX not in held.modes:
            fcntl.flock(held.fd, fcntl.LOCK_SH)  # back to what the outer holder asked for
        return
    del _held[lock.key]
    os.close(held.fd)


@contextmanager
def write_lock(root: str | os.PathLike[str], *, create: bool = True, what: str = "refusing to write") -> Iterator[RootLock]:
    """Hold ``LOCK_EX`` on ``root`` (created when missing and ``create``) for a whole write."""
    lock = _take(Path(root), True, create, what)
    try:
        yield lock
    finally:
        _release(lock)


@contextmanager
def read_lock(root: str | os.PathLike[str], *, what: str = "refusing to read") -> Iterator[RootLock | None]:
    """Hold ``LOCK_SH`` on ``root`` while reading it; a missing root yields None (the reader
    reports it in its own words)."""
    path = Path(root)
    if not path.is_dir():
        yield None
        return
    lock = _take(path, False, False, what)
    try:
        yield lock
    finally:
        _release(lock)


def holds_write_lock(root: str | os.PathLike[str]) -> bool:
    """Whether this process holds ``root``'s writers' lock (a re-entrant caller)."""
    key = _identity(Path(root))
    held = _held.get(key) if key else None
    return held is not None and fcntl.LOCK_EX in held.modes
