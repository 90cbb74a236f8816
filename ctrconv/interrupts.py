"""What SIGINT and SIGTERM do at each moment of a ctrconv process (stdlib only: this module is
imported before anything heavy, so a Ctrl-C during start-up finds its handler in place).

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

Python would otherwise turn SIGTERM into an immediate death (temp files left behind) and
SIGINT into a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_phase = "starting"
_late: list[int] = []


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived while a command ran (before its commit point)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def word(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else "terminated"


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


def install_early() -> None:
    """Process entry: handle both signals from the first line on (a signal the parent left
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
    try:
        yield
    finally:
        _phase = "finished"  # the process entry's handler, restored below, now only records
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def late_signals() -> list[int]:
    """Signals that arrived after the commit point or after the command (it completed)."""
    return list(_late)
