"""Early writeback and preallocation of a file being written: the disk works while the copy
goes on, and the filesystem allocates each large region once instead of page by page.

``sync_file_range(SYNC_FILE_RANGE_WRITE)`` only *starts* writeback of a range's dirty pages,
so the ``fsync`` before an output's final rename finds little left to do. It can still block:
once the device queue is full the kernel makes the caller wait for request slots (measured:
3.4 ms per 32 MiB step on average, 35 ms at worst, on a virtio disk that other processes were
also writing to; ~90 ms of a 180 MiB export, all on the thread that copies). The calls are
therefore made on a helper thread (``ctypes`` releases the GIL around them), in order, and the
copy never waits for the disk before the final ``fsync``.

:class:`FileWriteback` does the same for many files written one after the other (an unpacked
layer): each large file's writeback is started once its data is in, on a helper thread
holding a duplicate of its descriptor, so the final ``syncfs`` finds little left to write.

:func:`preallocate` reserves a region about to be written with ``fallocate(2)`` and
``FALLOC_FL_KEEP_SIZE`` (the size does not change; a failed output is removed anyway): measured
on ext4, copying 690 MB into preallocated regions took 17 % less kernel time (no delayed
allocation per page) and 15-35 % less wall time. The call is made directly, never through
``posix_fallocate``, whose glibc emulation writes a byte per block where the filesystem cannot.

libc is found with ``CDLL(None)`` (the symbols already loaded into the interpreter), not
``ctypes.util.find_library``, which runs ``ldconfig -p`` in a subprocess on every start.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

_WRITE = 2  # SYNC_FILE_RANGE_WRITE
_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE

#: libc's ``sync_file_range`` once looked up; False where it is not available
_sync_file_range: Any = None
#: libc's ``fallocate`` once looked up; False where it is not available
_fallocate: Any = None


def _libc_function(name: str, argtypes: list[Any]) -> Any:
    """``name`` from the C library already loaded, or False."""
    try:
        import ctypes

        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return False
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


def _lookup() -> Any:
    global _sync_file_range
    if _sync_file_range is None:
        import ctypes

        _sync_file_range = _libc_function("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                                              ctypes.c_uint])
    return _sync_file_range


def preallocate(fd: int, offset: int, length: int) -> bool:
    """Reserve ``[offset, offset + length)`` of ``fd`` for writes to come, keeping its size.
    Advisory: False (nothing done) where the call or the filesystem does not support it or
    fails; the writes then allocate as they go and report any real error themselves."""
    global _fallocate
    if _fallocate is None:
        import ctypes

        _fallocate = _libc_function("fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64])
    if not _fallocate or length <= 0:
        return False
    return _fallocate(fd, _KEEP_SIZE, offset, length) == 0


def _start_ranges(fd: int, ranges: "queue.SimpleQueue[tuple[int, int] | None]", stop: threading.Event,
                  function: Any) -> None:
    """The helper thread: start writeback of each queued ``(offset, length)`` until ``None``
    or ``stop``. A failure (the call is advisory) is ignored: the final ``fsync`` covers all."""
    while (item := ranges.get()) is not None and not stop.is_set():
        function(fd, item[0], item[1], _WRITE)


class EarlyWriteback:
    """Starts writeback of a file's new bytes every ``step`` bytes, from a helper thread.

    Call :meth:`wrote` as the file grows and :meth:`close` before the file descriptor is
    fsynced or closed (so the helper never touches a descriptor number the process has reused).
    A no-op where ``sync_file_range`` is not available.
    """

    #: set before ``__init__`` runs: an interrupt (SIGINT) inside it leaves an object whose
    #: ``__del__`` must still find no thread, not raise on a missing attribute
    _thread: threading.Thread | None = None

    def __init__(self, fd: int, step: int = 32 << 20) -> None:
        self._fd = fd
        self._step = step
        self._asked = 0
        self._function = _lookup()
        self._ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wrote(self, position: int) -> None:
        """The file now holds ``position`` bytes; have writeback of what is new started."""
        if not self._function or position - self._asked < self._step:
            return
        if self._thread is None:
            # the thread holds the queue and the descriptor, not this object: an abandoned
            # writeback is collected and its ``__del__`` ends the thread
            self._thread = threading.Thread(target=_start_ranges, args=(self._fd, self._ranges, self._stop, self._function),
                                            name="writeback", daemon=True)
            self._thread.start()
        self._ranges.put((self._asked, position - self._asked))
        self._asked = position

    def close(self) -> None:
        """End the helper (ranges not started yet are dropped: the ``fsync`` that follows
        writes them) and wait for its call in flight; then the descriptor is free."""
        if self._thread is not None:
            self._stop.set()
            self._ranges.put(None)
            self._thread.join()
            self._thread = None

    def __del__(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._ranges.put(None)


def _start_files(files: "queue.SimpleQueue[int | None]", stop: threading.Event, function: Any) -> None:
    """The helper thread of :class:`FileWriteback`: start writeback of each queued descriptor's
    file, then close the descriptor (also when stopped: every queued descriptor is closed)."""
    while (fd := files.get()) is not None:
        try:
            if not stop.is_set():
                function(fd, 0, 0, _WRITE)
        finally:
            os.close(fd)


class FileWriteback:
    """Starts writeback of each large file once its data is written, from a helper thread.

    For many files written one after the other (a layer unpacked): the disk writes each big
    file while the next ones are created, and the final ``syncfs`` finds little left. The
    caller hands over the still-open descriptor (:meth:`written` duplicates it, so the caller
    closes its own at once); :meth:`close` ends the helper, dropping files not started yet.
    Advisory, like :class:`EarlyWriteback`: durability still comes from the ``syncfs`` or
    ``fsync`` that follows. A no-op where ``sync_file_range`` is not available.
    """

    _thread: threading.Thread | None = None

    def __init__(self, min_size: int = 1 << 20) -> None:
        self._min_size = min_size
        self._function = _lookup()
        self._files: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: files handed to the helper so far
        self.started = 0

    def written(self, fd: int, size: int) -> None:
        """``fd``'s file now holds its ``size`` bytes of data: have its writeback started."""
        if not self._function or size < self._min_size:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=_start_files, args=(self._files, self._stop, self._function),
                                            name="file-writeback", daemon=True)
            self._thread.start()
        self._files.put(os.dup(fd))
        self.started += 1

    def close(self, finish: bool = False) -> None:
        """End the helper and wait for it; every duplicated descriptor is closed. ``finish``:
        start the files still queued first (more files follow, e.g. the next layer, so the
        disk may as well write them now); otherwise they are dropped (an error, or an
        ``fsync``/``syncfs`` right after, which writes them anyway)."""
        if self._thread is not None:
            if not finish:
                self._stop.set()
            self._files.put(None)
            self._thread.join()
            self._thread = None

    def __del__(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._files.put(None)


__all__: list[str] = ["EarlyWriteback", "FileWriteback", "preallocate"]
