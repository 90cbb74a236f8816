"""The commit point of a command: from here on, a signal no longer undoes anything.

Before the commit point, Ctrl-C or SIGTERM unwinds the command (temp outputs removed, exit
128+signal). The step that makes the result visible (meta.db renamed into place, an export
renamed to its name) runs with those signals deferred, and marks the point passed in the same
breath: a signal that arrives after it is only recorded, the command finishes, prints its
normal report and exits 0, with one warning line saying the signal came too late to stop it.
So the exit code never says "interrupted" about work that was done.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ctrconv.tempfiles import signals_deferred

_passed = False
_late: list[int] = []
#: > 0 while a command writes a scratch output that nobody sees until its own final step
_scratch = 0
#: what an error must say while a command's commits are not all done (:func:`unfinished`)
_unfinished: list[str] = []


@contextmanager
def committing() -> Iterator[None]:
    """Run the making-visible step with SIGINT/SIGTERM deferred; on success the point is
    passed before any deferred signal is delivered (not inside :func:`into_scratch`)."""
    global _passed
    with signals_deferred():
        yield
        if not _scratch:
            _passed = True


@contextmanager
def into_scratch() -> Iterator[None]:
    """Steps that commit into an output not yet visible (``rebuild -o`` imports into a root
    under a temporary name): their commits are no commit point of the command, so a signal
    still unwinds it and an error does not say that what it wrote is in place."""
    global _scratch
    _scratch += 1
    try:
        yield
    finally:
        _scratch -= 1


@contextmanager
def unfinished(note: str) -> Iterator[None]:
    """Commits that must all be made for the result to stand (an in-place rebuild's stages):
    an error inside says ``note`` (how to finish), not that what was written is in place. The
    note stays when the block ends by an exception: the command's error line reads it."""
    _unfinished.append(note)
    yield
    _unfinished.remove(note)


def unfinished_note() -> str | None:
    """The note of the innermost :func:`unfinished` block an error left, or None."""
    return _unfinished[-1] if _unfinished else None


def passed() -> bool:
    """Whether this command has passed its commit point."""
    return _passed


def record_late_signal(signum: int) -> None:
    _late.append(signum)


def late_signals() -> list[int]:
    """Signals that arrived after the commit point (the command completed anyway)."""
    return list(_late)


def reset() -> None:
    """A new command starts (in-process callers run several)."""
    global _passed
    _passed = False
    _late.clear()
    _unfinished.clear()
