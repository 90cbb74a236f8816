"""One gzip member compressed on several cores, deterministically (regenerated layers' gzip).

Python's :mod:`gzip` deflates on one core; a regenerated layer of hundreds of MiB then takes
longer than reading the snapshot. :class:`ParallelGzip` deflates blocks side by side, like
``pigz``, and its bytes depend only on the input, so a layer regenerated twice has one digest.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

#: input bytes per independently deflated gzip block
GZIP_BLOCK = 1 << 20


class ParallelGzip:
    """One gzip member whose deflate blocks are compressed side by side, like ``pigz``.

    The input is cut into blocks of exactly :data:`GZIP_BLOCK` bytes; each is deflated on its
    own (primed with the previous block's last 32 KiB as dictionary) and ended with a sync
    flush, and an empty final block closes the stream. The bytes depend only on the input, the
    level and the block size, never on the number of workers or on how the input arrived, so
    the output is deterministic; zlib releases the GIL, so the workers use several cores.
    At most ``2 * workers`` blocks are in flight (bounded memory). Header: no name, mtime 0,
    OS 255 (unknown), as Go's ``gzip.Writer`` writes it.
    """

    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, level: int, workers: int | None = None) -> None:
        self.level = level
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gzip")
        self._inflight: deque[Future[bytes]] = deque()
        self._buf = bytearray()
        self._dict = b""
        self._crc = 0
        self._size = 0
        self._started = False

    def _submit(self, block: bytes) -> None:
        self._inflight.append(self._pool.submit(_deflate_block, block, self._dict, self.level))
        self._dict = block[-32768:]

    def _ready(self, wait_all: bool = False) -> bytes:
        out = []
        if not self._started:
            out.append(self.HEADER)
            self._started = True
        while self._inflight and (wait_all or len(self._inflight) > 2 * self.workers or self._inflight[0].done()):
            out.append(self._inflight.popleft().result())
        return b"".join(out)

    def compress(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buf += data
        while len(self._buf) >= GZIP_BLOCK:
            self._submit(bytes(self._buf[:GZIP_BLOCK]))
            del self._buf[:GZIP_BLOCK]
        return self._ready()

    def flush(self) -> bytes:
        if self._buf:
            self._submit(bytes(self._buf))
            self._buf.clear()
        body = self._ready(wait_all=True)
        final = zlib.compressobj(self.level, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
        return body + final + (self._crc & 0xFFFFFFFF).to_bytes(4, "little") + (self._size & 0xFFFFFFFF).to_bytes(4, "little")

    def close(self) -> None:
        for future in self._inflight:
            future.cancel()
        self._inflight.clear()
        self._pool.shutdown(wait=True)


def _deflate_block(block: bytes, zdict: bytes, level: int) -> bytes:
    """Raw deflate of one block primed with ``zdict``, ended by a sync flush (byte aligned)."""
    if zdict:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(block) + comp.flush(zlib.Z_SYNC_FLUSH)


__all__: list[str] = ["GZIP_BLOCK", "ParallelGzip"]
