"""Temp files and directories that a Ctrl-C, SIGTERM or SIGHUP cannot orphan.

Every temp output (an export's ``.x.tar.*.ctrconv-tmp``, a root's ``.ctrconv-tmp-*`` dirs, a
bolt file's ``.meta.db.*.tmp``) is created through this module: the name is recorded *before*
the signal that would interrupt the caller can be delivered (delivery is deferred around the
creation), and forgotten once the file has been renamed into place or removed. Whatever is
still recorded when a command ends by a signal or an error is removed by
:func:`remove_leftovers`, so no window between "created" and "the caller can clean it up"
leaves litter behind.

A process killed outright (SIGKILL, the OOM killer, a power cut) removes nothing: each temp
file and directory is therefore read-locked by the process that made it for as long as it is
recorded (an open-file-description lock: inherited by forked workers, gone with the process, and
apart from the flocks that mean "in use" to containerd and to ctrconv's root lock, which a
staging root takes too), and :func:`remove_abandoned`, called by the
next run writing the same output (a temp of the same name pattern in the same directory) removes
those nobody holds that were not touched for a minute, before it makes its own.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ctrconv.interrupts import SIGNALS

_DEFERRED = set(SIGNALS)
_tracked: dict[str, int | None] = {}  # name -> the descriptor holding its lock; insertion order: removed newest first
#: a temp name nobody holds is someone's only when it is this fresh (between its creation and
#: the lock, or a temp file closed before its rename)
ABANDONED_AFTER_SECONDS = 60.0
_swept: set[tuple[str, str, str]] = set()  # (directory, prefix, suffix) already cleaned by this process


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold the :data:`~ctrconv.interrupts.SIGNALS` back in the main thread (they are delivered
    right after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


#: public name: other steps that must not be cut in half by a signal use it too
signals_deferred = _signals_deferred


#: bytes of a file name (``NAME_MAX`` of Linux filesystems)
NAME_MAX = 255
#: what ``mkstemp``/``mkdtemp`` put between the prefix and the suffix
_RANDOM_PART = 8


def _fitting(prefix: str, suffix: str) -> str:
    """``prefix`` cut so that prefix, random part and suffix make a valid file name: an output
    named near the limit (a 250-byte ``-o``) was refused for its temp name's length alone."""
    room = NAME_MAX - _RANDOM_PART - len(os.fsencode(suffix))
    encoded = os.fsencode(prefix)
    if len(encoded) <= room:
        return prefix
    return os.fsdecode(encoded[:room])  # (a cut character's bytes are still a valid name)


def temp_file(directory: str | os.PathLike[str], prefix: str, suffix: str = "", *,
              sweep: bool = False) -> tuple[int, Path]:
    """``mkstemp`` in ``directory``, recorded for :func:`remove_leftovers`: (fd, path).

    ``sweep``: first remove the abandoned temps of this name pattern (:func:`remove_abandoned`),
    for a temp output beside the user's output (the others live in a root, cleaned under its
    lock, or in the system's temp directory, listed by no one)."""
    prefix = _fitting(prefix, suffix)
    if sweep:
        _sweep(directory, prefix, suffix)
    with _signals_deferred():
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        _tracked[name] = None
        # (its own descriptor: the caller may close its own before the rename)
        _tracked[name] = _locked(name, os.O_RDONLY)
    return fd, Path(name)


def temp_dir(directory: str | os.PathLike[str], prefix: str, suffix: str = "", *, sweep: bool = False) -> Path:
    """``mkdtemp`` in ``directory``, recorded for :func:`remove_leftovers` (``sweep``: as for
    :func:`temp_file`)."""
    prefix = _fitting(prefix, suffix)
    if sweep:
        _sweep(directory, prefix, suffix)
    with _signals_deferred():
        name = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory)
        _tracked[name] = None
        _tracked[name] = _locked(name, os.O_RDONLY | os.O_DIRECTORY)
    return Path(name)


def sweep(directory: str | os.PathLike[str], prefix: str, suffix: str = "") -> None:
    """:func:`remove_abandoned`, for a run refused because its output exists: the temp a killed
    run left beside an output that a re-run then wrote was otherwise never removed (every later
    run was refused before it made a temp of its own)."""
    remove_abandoned(directory, prefix, suffix)


def _sweep(directory: str | os.PathLike[str], prefix: str, suffix: str) -> None:
    """:func:`remove_abandoned` once per process for each name pattern and directory."""
    key = (os.fspath(directory), prefix, suffix)
    if key not in _swept:
        _swept.add(key)
        remove_abandoned(directory, prefix, suffix)


#: ``struct flock`` (type, whence, start, len, pid) with the platform's alignment
_FLOCK = "@hhqqi0q"


def _lock_request(kind: int) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0)


def _locked(name: str, flags: int) -> int | None:
    """A descriptor of the temp ``name`` made here holding a read lock on it, kept until it
    is forgotten or removed: in use, so :func:`remove_abandoned` of another process leaves it."""
    try:
        fd = os.open(name, flags | os.O_CLOEXEC)
    except OSError:
        return None  # (the age rule alone protects it)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _lock_request(fcntl.F_RDLCK))
    except OSError:
        pass  # (a filesystem without such locks: likewise)
    return fd


def _held_elsewhere(fd: int) -> bool:
    """Whether a lock of :func:`_locked` (in any process) is on the file ``fd`` opens."""
    try:
        found = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _lock_request(fcntl.F_WRLCK))
    except OSError:
        return True  # (cannot tell: treated as in use)
    return struct.unpack(_FLOCK, found)[0] != fcntl.F_UNLCK


def _release(name: str) -> None:
    fd = _tracked.pop(name, None)
    if fd is not None:
        os.close(fd)


def forget(path: str | os.PathLike[str]) -> None:
    """``path`` was renamed into place or removed: no longer ours to clean up."""
    _release(os.fspath(path))


def remove_abandoned(directory: str | os.PathLike[str], prefix: str, suffix: str = "") -> list[str]:
    """Remove the temp files and directories :func:`temp_file`/:func:`temp_dir` made in
    ``directory`` with ``prefix`` and ``suffix`` whose process is gone: no one holds their lock
    and they were not touched for :data:`ABANDONED_AFTER_SECONDS`. A process killed outright
    left them (an export's whole temp archive, a rebuild's staging root); returns their paths."""
    prefix = _fitting(prefix, suffix)
    head, tail = os.fsencode(prefix), os.fsencode(suffix)
    try:
        entries = os.listdir(os.fsencode(directory))  # (bytes: nothing decoded for the many other names)
    except OSError:
        return []
    removed = []
    length = len(head) + _RANDOM_PART + len(tail)
    for raw in entries:
        if len(raw) != length or not raw.startswith(head) or not raw.endswith(tail):
            continue
        path = os.path.join(os.fspath(directory), os.fsdecode(raw))
        if path not in _tracked and _removed_if_abandoned(path):
            removed.append(path)
    return removed


def _removed_if_abandoned(path: str) -> bool:
    """Remove ``path`` if it is a file or directory nobody holds, untouched for a minute;
    whether it went (it stays when in use, fresh, or not a file or directory)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    is_dir = stat.S_ISDIR(st.st_mode)
    if not (is_dir or stat.S_ISREG(st.st_mode)) or time.time() - st.st_mtime < ABANDONED_AFTER_SECONDS:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if is_dir else 0))
    except OSError:
        return False
    try:
        if _held_elsewhere(fd):
            return False  # its process is running
        if is_dir:
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError:
        return False  # (not removable, or another run removed it first)
    finally:
        os.close(fd)
    return True


def remove_leftovers() -> list[str]:
    """Remove every recorded temp file and directory that still exists; return their names."""
    removed = []
    for name in reversed(list(_tracked)):
        try:
            if os.path.isdir(name) and not os.path.islink(name):
                shutil.rmtree(name, ignore_errors=True)
            else:
                os.unlink(name)
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError:
            continue  # keep it recorded; nothing more can be done here
        _release(name)
    return removed
