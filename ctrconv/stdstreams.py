"""Standard streams the caller closed (``cmd >&-``, ``<&-``), put back on ``/dev/null``.

With descriptor 1 closed, the next file ctrconv opened (an export's output, a bolt file being
written) got descriptor 1: a write meant for the terminal, or a helper process's output, would
have landed in it; Python also sets ``sys.stdout`` to ``None``, and the first report line failed
with an internal ``AttributeError``. The process entry (:func:`reopen_closed`) opens
``/dev/null`` on each closed descriptor before anything else is opened, and remembers which
were closed: reports meant for a closed stream are dropped (as ``>/dev/null`` would drop them),
while ``-i -`` and ``-o -``, whose data is the stream itself, refuse it (:func:`require`).
Stdlib only: the entry runs it before the command modules are imported.
"""

from __future__ import annotations

import fcntl
import os
import sys
from typing import Final

#: names of the standard streams that were closed when the process started
CLOSED: set[str] = set()

_STREAMS: Final = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))
_WORDS: Final = {"stdin": "standard input", "stdout": "standard output", "stderr": "standard error"}


def reopen_closed() -> None:
    """Open ``/dev/null`` on every standard descriptor that was closed and give Python a stream
    for it. Python's own check at start-up (``sys.stdout is None``) says which were: by now the
    descriptor may hold a file the start-up opened since (the console script itself, read
    through descriptor 2 when the caller closed it), which is not ours to write to."""
    for fd, name, mode in _STREAMS:
        if getattr(sys, name) is not None and _usable(fd, mode):
            continue
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if null != fd:
            os.dup2(null, fd, inheritable=True)  # (a helper process gets /dev/null there too)
            os.close(null)
        else:
            os.set_inheritable(fd, True)
        CLOSED.add(name)
        setattr(sys, name, open(fd, mode, closefd=False, encoding="utf-8", errors="backslashreplace"))


def _usable(fd: int, mode: str) -> bool:
    """Open, and for the direction the stream goes: a shell that ran with the stream closed can
    leave a file of its own there (bash, through a script shim such as pyenv's, hands on the
    script it read, read-only, as descriptor 2)."""
    try:
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return False
    return access != (os.O_WRONLY if mode == "r" else os.O_RDONLY)


def require(name: str, why: str) -> None:
    """A :class:`~ctrconv.errors.UsageError` when the stream ``name`` was closed at start."""
    if name in CLOSED:
        from ctrconv.errors import UsageError

        raise UsageError(f"{why}: {_WORDS[name]} is closed")
