"""Map a function over a list on two cores: the second half in a forked child, the first here.

``ls`` of a large root is pure per-image work (read, verify, parse, check two documents per
image) with nothing shared between images but a cache; Python runs it on one core. A forked
child sees the open meta.db mapping, the presence listing and everything else the parent built,
so splitting the list costs one ``fork``, one pipe and one pickle of the child's results.

The result is what ``[fn(x) for x in items]`` gives, in order, and so is the failure: an
exception raised for an item of the first half propagates at once (the child is killed). When
the child fails (an exception, or it died) the parent computes the second half itself after the
first, as the sequential loop would have, so the exception raised is that loop's own (an
exception object is never carried across the pipe, where it could lose attributes). The child ignores SIGINT, SIGTERM and SIGHUP: a terminal's Ctrl-C
reaches the whole process group, and only the parent handles it (:mod:`ctrconv.interrupts`),
killing the child while it unwinds. The child leaves with ``os._exit``: no buffered output, no
``atexit`` handler of the parent runs twice.

:func:`map_balanced` is the same map with the items shared out as they are taken instead of
split in two: a half of a listing is not half of its work (index images, shared documents), and
one process waiting for the other is lost time. :class:`Beside` computes one function's bytes
in a forked child while this process does something else, with the same failure rule.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import struct
import threading
from typing import Any, BinaryIO, Callable, Sequence, TypeVar

from ctrconv.interrupts import SIGNALS

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
        for signum in SIGNALS:
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


#: items :func:`map_balanced` can share out: their indices are written to a pipe before the
#: fork, and a pipe holds 64 KiB without a reader
MAX_SHARED_ITEMS = 16384
_INDEX = struct.Struct("<I")
#: a result frame: item index, status (0 a result follows, 1 the item failed), payload length
_FRAME = struct.Struct("<IBI")


def map_balanced(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]`` on two cores, this process and a forked child each taking the
    next item not yet taken (a pipe holds the items' indices; Linux serialises reads of one
    pipe, so each 4-byte index goes to exactly one reader). Give it chunks of work (a few
    milliseconds each, a few hundred at most): an item is the unit of balance and of transfer.

    The child sends each result as soon as it has it, and this process reads what has
    arrived between its own items, so neither waits for the other at the end longer than one
    item takes. The failure is the sequential loop's own: the first item in order that raises,
    raised by this process (an item the child failed, or never reported because it died, is
    computed here again, in order; a failure here stops the child)."""
    if len(items) > MAX_SHARED_ITEMS:
        raise ValueError(f"map_balanced shares at most {MAX_SHARED_ITEMS} items, not {len(items)}")
    queue_read, queue_write = os.pipe()
    indices = b"".join(_INDEX.pack(i) for i in range(len(items)))
    try:
        os.set_blocking(queue_write, False)
        written = os.write(queue_write, indices) if indices else 0
    except BlockingIOError:
        written = 0
    finally:
        os.close(queue_write)  # the queue ends where the indices end: a reader meets EOF
    if written != len(indices):  # a pipe smaller than 64 KiB (the user's pipe quota is spent)
        os.close(queue_read)
        return map_halves(fn, items)
    results_read, results_write = os.pipe()
    _widen(results_write)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(results_read)
        _balanced_child(fn, items, queue_read, results_write)
    os.close(results_write)
    done: dict[int, Any] = {}
    failed: dict[int, Exception] = {}
    frames = _Frames(results_read)
    stopped = False
    try:
        os.set_blocking(results_read, False)
        while (index := _take(queue_read)) is not None:
            try:
                done[index] = fn(items[index])
            except Exception as exc:  # the first failure in order is decided below
                failed[index] = exc
                break
            frames.read_available(done)
        if failed:
            _kill(pid)
            stopped = True
        os.set_blocking(results_read, True)
        frames.read_to_end(done)
    finally:
        os.close(queue_read)
        os.close(results_read)
        if not stopped and len(done) < len(items) and not failed:
            _kill(pid)  # unwinding (an interrupt): the child's work is of no use
        _reap(pid)
    for index in range(len(items)):  # the sequential loop's failure, and anything the child left
        if index in failed:
            raise failed[index]
        if index not in done:
            done[index] = fn(items[index])
    return [done[index] for index in range(len(items))]


def _take(queue: int) -> int | None:
    """The next index of the shared queue, or None when every index is taken."""
    data = os.read(queue, _INDEX.size)
    return _INDEX.unpack(data)[0] if len(data) == _INDEX.size else None


def _widen(pipe: int) -> None:
    """Let the results pipe hold up to 1 MiB (where the system allows), so the child seldom
    waits for this process to read between its own items."""
    try:
        fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (OSError, AttributeError):
        pass


def _balanced_child(fn: Callable[[T], R], items: Sequence[T], queue: int, results: int) -> None:
    code = 0
    try:
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        with os.fdopen(results, "wb") as pipe:
            while (index := _take(queue)) is not None:
                try:
                    payload = pickle.dumps(fn(items[index]), protocol=pickle.HIGHEST_PROTOCOL)
                except BaseException:  # the parent computes this item again and raises its error
                    pipe.write(_FRAME.pack(index, 1, 0))
                    break
                pipe.write(_FRAME.pack(index, 0, len(payload)) + payload)
                pipe.flush()
    except BaseException:
        code = 1  # the parent went away (broken pipe) or was killed: nobody to tell
    finally:
        os._exit(code)


class _Frames:
    """The child's result frames, read from a pipe as they arrive."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def read_available(self, done: dict[int, Any]) -> None:
        """Take what the child has sent so far, without waiting."""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buffer += chunk
        self._parse(done)

    def read_to_end(self, done: dict[int, Any]) -> None:
        """Everything until the child closes its end (it finished, failed or died)."""
        while chunk := os.read(self.fd, 1 << 20):
            self.buffer += chunk
        self._parse(done)

    def _parse(self, done: dict[int, Any]) -> None:
        view, at = memoryview(self.buffer), 0
        try:
            while len(view) - at >= _FRAME.size:
                index, status, length = _FRAME.unpack_from(view, at)
                end = at + _FRAME.size + length
                if end > len(view):
                    break  # the rest of this frame is still on its way
                if status == 0:
                    done[index] = pickle.loads(view[at + _FRAME.size:end])
                at = end
        finally:
            view.release()
        del self.buffer[:at]


#: what ends a :class:`Beside` child's bytes: their length and a mark (a child that died while
#: writing leaves neither)
_BESIDE_END = struct.Struct("<Q8s")
_BESIDE_MARK = b"ctrconv\0"


class Beside:
    """``fn()`` computed in a forked child while this process does something else, its bytes
    taken with :meth:`result` (``ls`` of a large root lists the blob directories beside
    reading the namespace's content records: neither needs the other, and each is tens of
    milliseconds before the listing can be split). The child is made when this object is;
    check :func:`can_split` first.

    The result is ``fn()``'s, and so is the failure: when the child gives no whole result (an
    exception, or it died) :meth:`result` computes ``fn()`` here, which raises what it raises.
    Use it as a context manager: leaving it before the result was taken (an error, an
    interrupt) kills and reaps the child. The child ignores SIGINT, SIGTERM and SIGHUP and leaves with
    ``os._exit``, as :func:`map_balanced`'s does."""

    def __init__(self, fn: Callable[[], bytes]) -> None:
        self.fn = fn
        read_end, write_end = os.pipe()
        _widen(write_end)
        try:
            pid = os.fork()
        except OSError:  # no process to be had (EAGAIN): :meth:`result` computes it here
            os.close(read_end)
            os.close(write_end)
            self._pid = self._read = -1
            return
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _beside_child(fn, write_end)
        os.close(write_end)
        self._pid, self._read = pid, read_end

    def result(self) -> bytes:
        """``fn()``'s bytes: the child's, waited for, or computed here when it gave none whole."""
        if self._pid == -1:
            return self.fn()
        chunks = []
        try:
            while chunk := os.read(self._read, 1 << 20):
                chunks.append(chunk)
        finally:
            self.close()
        data = b"".join(chunks)
        if len(data) >= _BESIDE_END.size:
            length, mark = _BESIDE_END.unpack_from(data, len(data) - _BESIDE_END.size)
            if mark == _BESIDE_MARK and length == len(data) - _BESIDE_END.size:
                return data[:length]
        return self.fn()

    def close(self) -> None:
        """Kill the child (unless it ended) and reap it; nothing to do the second time."""
        if self._read != -1:
            os.close(self._read)
            self._read = -1
        if self._pid != -1:
            pid, self._pid = self._pid, -1
            _kill(pid)
            _reap(pid)

    def __enter__(self) -> "Beside":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _beside_child(fn: Callable[[], bytes], write_end: int) -> None:
    code = 0
    try:
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        data = fn()
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)
            pipe.write(_BESIDE_END.pack(len(data), _BESIDE_MARK))
    except BaseException:
        code = 1  # no result, or the parent went away: it computes the result itself, or is gone
    finally:
        os._exit(code)
