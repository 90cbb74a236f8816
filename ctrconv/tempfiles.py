"""Temp files and directories that a Ctrl-C, SIGTERM or SIGHUP cannot orphan.

Every temp output (an export's ``.x.tar.*.ctrconv-tmp``, a root's ``.ctrconv-tmp-*`` dirs, a
bolt file's ``.meta.db.*.tmp``) is created through this module: the name is recorded *before*
the signal that would interrupt the caller can be delivered (delivery is deferred around the
creation), and forgotten once the file has been renamed into place or removed. Whatever is
still recorded when a command ends by a signal or an error is removed by
:func:`remove_leftovers`, so no window between "created" and "the caller can clean it up"
leaves litter behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ctrconv.interrupts import SIGNALS

_DEFERRED = set(SIGNALS)
_tracked: dict[str, None] = {}  # insertion order: removed newest first


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


def temp_file(directory: str | os.PathLike[str], prefix: str, suffix: str = "") -> tuple[int, Path]:
    """``mkstemp`` in ``directory``, recorded for :func:`remove_leftovers`: (fd, path)."""
    prefix = _fitting(prefix, suffix)
    with _signals_deferred():
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        _tracked[name] = None
    return fd, Path(name)


def temp_dir(directory: str | os.PathLike[str], prefix: str, suffix: str = "") -> Path:
    """``mkdtemp`` in ``directory``, recorded for :func:`remove_leftovers`."""
    prefix = _fitting(prefix, suffix)
    with _signals_deferred():
        name = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory)
        _tracked[name] = None
    return Path(name)


def forget(path: str | os.PathLike[str]) -> None:
    """``path`` was renamed into place or removed: no longer ours to clean up."""
    _tracked.pop(os.fspath(path), None)


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
        _tracked.pop(name, None)
    return removed
