"""Map a function over a list on two cores: the second half in a forked child, the first here.

``ls`` of a large root is pure per-image work (read, verify, parse, check two documents per
image) with nothing shared between images but a cache; Python runs it on one core. A forked
child sees the open meta.db mapping, the presence listing and everything else the parent built,
so splitting the list costs one ``fork``, one pipe and one pickle of the child's results.

The result is what ``[fn(x) for x in items]`` gives, in order, and so is the failure: an
exception raised for an item of the first half propagates at once (the child is killed). When
the child fails (an exception, or it died) the parent computes the second half itself after the
first, as the sequential loop would have, so the exception raised is that loop's own (an
exception object is never carried across the pipe, where it could lose attributes). The child ignores SIGINT and SIGTERM: a terminal's Ctrl-C
reaches the whole process group, and only the parent handles it (:mod:`ctrconv.interrupts`),
killing the child while it unwinds. The child leaves with ``os._exit``: no buffered output, no
``atexit`` handler of the parent runs twice.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from typing import BinaryIO, Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_split() -> bool:
    """Two cores to run on, and no other thread in this process: a fork copies only the calling
    thread, and a lock another thread held at that moment (a library used from a threaded
    program) would stay locked in the child forever."""
    return usable_cores() >= 2 and threading.active_count() == 1


def map_halves(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, the second half computed in a forked child."""
    middle = (len(items) + 1) // 2
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(fn, items[middle:], write_end)
    os.close(write_end)
    second: list[R] | None = None
    done = False
    try:
        first = [fn(x) for x in items[:middle]]
        with os.fdopen(read_end, "rb") as pipe:
            read_end = -1
            second = _results(pipe)
        done = True
    finally:
        if read_end != -1:
            os.close(read_end)
        if not done:
            _kill(pid)
        _reap(pid)
    if second is None:  # the child failed: this process meets the same failure itself
        second = [fn(x) for x in items[middle:]]
    return first + second


def _results(pipe: BinaryIO) -> list | None:
    """The child's results, or None when it failed or sent nothing whole."""
    try:
        status, results = pickle.load(pipe)
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError):
        return None
    return results if status == "ok" else None


def _child(fn: Callable[[T], R], items: Sequence[T], write_end: int) -> None:
    code = 0
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        try:
            data = pickle.dumps(("ok", [fn(x) for x in items]), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:  # the parent redoes these items and raises what they raise
            data = pickle.dumps(("failed", None))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)
    except BaseException:
        code = 1  # the parent went away (broken pipe) or was killed: nobody to tell
    finally:
        os._exit(code)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already (a host program that ignores SIGCHLD)
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
