"""What SIGINT, SIGTERM and SIGHUP do at each moment of a ctrconv process (stdlib only: this
module is imported before anything heavy, so a Ctrl-C during start-up finds its handler in place).
SIGHUP (the terminal or ssh session that ran the command went away) is handled as SIGTERM is:
left to its default, it killed the process on the spot, leaving temp outputs and half-made roots.

* starting (``python -m ctrconv`` / the console script, while typer, jsonschema and the
  command modules are imported): nothing has been written, so the process writes one line and
  exits ``128 + signum`` at once; no traceback.
* running (a command is executing): the handler raises :class:`Stopped`, which unwinds the
  command like an error (temp outputs and half-built targets removed, one line, exit
  ``128 + signum``); a second signal is ignored so it cannot cut that cleanup short. Once the
  command passed its commit point (:mod:`ctrconv.commitpoint`) the signal is only recorded:
  the command completes, prints its normal report and exits 0 with one warning line.
* finished (the report is being flushed): recorded and otherwise ignored; the exit code is
  the command's own.

Python would otherwise turn SIGTERM and SIGHUP into an immediate death (temp files left behind)
and SIGINT into a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_phase = "starting"
_late: list[int] = []


class Stopped(BaseException):
    """One of :data:`SIGNALS` arrived while a command ran (before its commit point)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def word(signum: int) -> str:
    return {signal.SIGINT: "interrupted", signal.SIGHUP: "hung up"}.get(signum, "terminated")


def _committed() -> bool:
    from ctrconv import commitpoint  # light; imported on demand so start-up stays stdlib-only

    return commitpoint.passed()


def _handler(signum: int, frame: Any) -> None:
    if _phase == "starting":
        os.write(2, f"ctrconv: error: {word(signum)}\n".encode())
        os._exit(128 + signum)
    if _phase == "finished" or _committed():
        _late.append(signum)
        return
    # once is enough: a second Ctrl-C must not cut the cleanup the first one started
    for other in SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


def _unraisable(hook_args: Any) -> None:
    """A :class:`Stopped` raised where Python cannot propagate it (the handler ran inside a
    finaliser or a C callback: "Exception ignored in ...") is not lost and prints no
    traceback: the signal is delivered again, and at the next instruction of ordinary code
    the handler raises it there."""
    if isinstance(hook_args.exc_value, Stopped):
        # not from here (the hook runs inside the same swallowing context): a millisecond
        # timer raises it again once ordinary code runs
        _pending.append(hook_args.exc_value.signum)
        signal.signal(signal.SIGALRM, _redeliver)
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        return
    _previous_hook(hook_args)


_pending: list[int] = []


def _redeliver(_alarm: int, frame: Any) -> None:
    if _pending:
        raise Stopped(_pending.pop())


_previous_hook = sys.unraisablehook


def ignore_from_now_on() -> None:
    """The process is about to exit with its command's code: the :data:`SIGNALS` are ignored (an
    ignored disposition survives interpreter shutdown; a Python handler does not)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def install_early() -> None:
    """Process entry: handle the signals from the first line on (a signal the parent left
    ignored, as for a background job's SIGINT, stays ignored)."""
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _handler)


@contextmanager
def command_running() -> Iterator[None]:
    """While a command runs, signals unwind it (see the module docstring); the previous
    handlers come back afterwards (in-process callers run several commands)."""
    global _phase
    previous: dict[int, Any] = {}
    _late.clear()
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN:
                previous[signum] = handler
                signal.signal(signum, _handler)
    _phase = "running"
    global _previous_hook
    _previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    try:
        yield
    finally:
        _phase = "finished"  # the process entry's handler, restored below, now only records
        sys.unraisablehook = _previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def late_signals() -> list[int]:
    """Signals that arrived after the commit point or after the command (it completed)."""
    return list(_late)
