"""A layer blob read by a worker process while another process still writes it.

A pull hands a layer to a worker (:mod:`ctrconv.layers.parallel`) as soon as its download has
begun; the worker reads the blob's temp file as it grows, up to the blob's known size. The
bytes are not verified yet when the worker reads them: the download verifies the blob's
digest, the worker the layer's diff ID, and the importer installs the snapshot only once the
whole import checked out (a failed download makes the importer stop the workers). The file
is opened by its temp path, or by its committed path once it was renamed there (an open
descriptor survives the rename). A worker whose importer is gone (its parent process changed)
or whose blob stopped growing for :data:`STALL_LIMIT` seconds stops with an error instead of
waiting forever.
"""

from __future__ import annotations

import io
import os
import time

from ctrconv.errors import CtrconvError
from ctrconv.streams import ReadIntoByRead

#: how long a reader sleeps when it caught up with the writer
POLL = 0.02
#: seconds without a new byte after which the reader gives up
STALL_LIMIT = 600.0


class GrowingBlob(ReadIntoByRead, io.RawIOBase):
    """``size`` bytes of a file that may still be written: ``paths`` tried in order to open it."""

    def __init__(self, paths: tuple[str, ...], size: int) -> None:
        super().__init__()
        self._size = size
        self._pos = 0
        self._parent = os.getppid()
        self._fd = self._open(paths)

    @staticmethod
    def _open(paths: tuple[str, ...]) -> int:
        for path in paths:
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # renamed from the temp path meanwhile: the next one has it
        raise CtrconvError(f"layer blob {paths[-1]} is gone (its download failed)")

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        self._checkClosed()
        if n is None or n < 0:
            n = 1 << 20
        last_growth = time.monotonic()
        while self._pos < self._size:
            data = os.pread(self._fd, min(n, self._size - self._pos), self._pos)
            if data:
                self._pos += len(data)
                return data
            if os.getppid() != self._parent:
                raise CtrconvError("the import that started this layer's unpack is gone")
            if time.monotonic() - last_growth > STALL_LIMIT:
                raise CtrconvError(f"layer blob stopped arriving at byte {self._pos} of {self._size}")
            time.sleep(POLL)
        return b""

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
