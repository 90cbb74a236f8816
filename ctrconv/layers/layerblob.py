"""A layer blob written as its tar streams in: diff ID, compression and blob digest in one pass.

:class:`LayerWriter` takes the bytes of a layer tar (from :mod:`.regenerate`, or a layer copied
with another compression by the export pipeline), hashes them (the diff ID), compresses them
(gzip or zstd as containerd writes them, or not) and writes the blob to a file descriptor while
hashing and counting it. Nothing is held in memory beyond one chunk.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

from ctrconv.errors import UsageError
from ctrconv.layers.compression import COMPRESSIONS, Compression

#: tar bytes gathered before they are hashed and compressed in one call
CHUNK = 1 << 20
#: gzip level of regenerated layers (containerd and Go's gzip.DefaultCompression)
GZIP_LEVEL = 6
#: zstd level of regenerated layers (containerd's default, zstd.SpeedDefault)
ZSTD_LEVEL = 3


class LayerWriter:
    """Takes tar bytes: hashes them (diff ID), compresses them, writes the blob to ``fd``
    while hashing and counting it. :meth:`finish` flushes and returns the result."""

    def __init__(self, fd: int, compression: Compression, on_data: Callable[[int], object] | None = None) -> None:
        if compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compression!r} (choose from {', '.join(COMPRESSIONS)})")
        self._fd = fd
        #: told the bytes of file contents as they are written (a progress display)
        self.on_data = on_data
        self.compression = compression
        self._diff = hashlib.sha256()
        self._blob = hashlib.sha256()
        self.tar_bytes = 0
        self.blob_bytes = 0
        self._pending: list[bytes] = []
        self._pending_len = 0
        # the compressors are imported here: ``export`` imports this module (through the
        # snapshot regeneration it may need) but writes a layer only for a lost blob
        if compression == "gzip":
            from ctrconv.layers.parallelgzip import ParallelGzip

            self._comp: object | None = ParallelGzip(GZIP_LEVEL)
        elif compression == "zstd":
            import zstandard

            self._comp = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        else:
            self._comp = None

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        self._pending_len += len(data)
        if self._pending_len >= CHUNK:
            self._flush_pending()

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending, self._pending_len = [], 0
        self._diff.update(data)
        self.tar_bytes += len(data)
        self._emit(data if self._comp is None else self._comp.compress(data))  # type: ignore[attr-defined]

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self._blob.update(data)
        self.blob_bytes += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        """Stop any compression workers (after :meth:`finish`, or on an error)."""
        close = getattr(self._comp, "close", None)
        if close is not None:
            close()

    def finish(self) -> "WrittenLayer":
        self._flush_pending()
        if self._comp is not None:
            self._emit(self._comp.flush())  # type: ignore[attr-defined]
        self.close()
        return WrittenLayer(
            diff_id="sha256:" + self._diff.hexdigest(), digest="sha256:" + self._blob.hexdigest(),
            size=self.blob_bytes, tar_size=self.tar_bytes, compression=self.compression,
        )


@dataclass(frozen=True)
class WrittenLayer:
    """What was written: the tar's digest (diff ID) and the blob's digest and size."""

    diff_id: str
    digest: str
    size: int
    tar_size: int
    compression: Compression


__all__: list[str] = ["COMPRESSIONS", "CHUNK", "Compression", "GZIP_LEVEL", "LayerWriter", "WrittenLayer", "ZSTD_LEVEL"]
