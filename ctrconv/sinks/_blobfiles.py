"""Blob files of a directory output (oci-dir, skopeo dir): copied in the kernel where they can
be, hashed on helper threads, synced together before the output is published.

Each blob file used to be fsynced as soon as it was copied, after waiting for its hash: the
second of two large layers waited for the first one's hash and then its ``fsync`` (measured on a
658 MiB image: 0.75 s as oci-dir against 0.43 s as oci-tar). Now a file's writeback starts while
it is written (:class:`~ctrconv.writeback.EarlyWriteback` for a large blob, then
:class:`~ctrconv.writeback.FileWriteback` once it is whole), its digest verdict may come while
the next blob is copied (:class:`~ctrconv.streams.PendingVerdicts`), and :meth:`BlobFiles.finish`
settles every verdict and then fsyncs every file. The guarantee is the one before: the sink
publishes nothing that is not verified and on disk; only the waits are fewer.
"""

from __future__ import annotations

import os
from pathlib import Path

from ctrconv.image.protocols import BlobReader
from ctrconv.streams import CHUNK, PendingVerdicts, fsync_named
from ctrconv.writeback import EarlyWriteback, FileWriteback, preallocate

#: blobs at least this large get their writeback started as they are copied, and their file
#: preallocated (smaller ones have it started once whole)
EARLY_WRITEBACK_MIN = 32 << 20


class BlobFiles:
    """Writes verified blob files; :meth:`finish` before publishing, :meth:`cancel` on abort."""

    def __init__(self) -> None:
        self._verdicts = PendingVerdicts()
        self._writeback = FileWriteback()
        self._unsynced: list[str] = []
        self.bytes_written = 0

    def write(self, dest: Path, reader: BlobReader, size: int, mode: int | None = None) -> None:
        """Create ``dest`` (it must not exist) with the blob's bytes; ``mode`` set when given."""
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._unsynced.append(os.fspath(dest))  # a failed write is removed with the temp output
        with os.fdopen(fd, "wb") as out:
            if not self._copy_in_kernel(fd, reader, size):
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
                    self.bytes_written += len(chunk)
            out.flush()
            if mode is not None:
                os.fchmod(fd, mode)
            self._writeback.written(fd, size)

    def verify_linked(self, reader: BlobReader) -> None:
        """Verify a blob whose file is already in the output (a hardlink of the source)."""
        verify_mapped = getattr(reader, "verify_mapped", None)
        if verify_mapped is None or not verify_mapped(verdicts=self._verdicts):
            reader.verify_to_end()

    def _copy_in_kernel(self, fd: int, reader: BlobReader, size: int) -> bool:
        copy_to_fd = getattr(reader, "copy_to_fd", None)
        if copy_to_fd is None:
            return False
        early = None
        if size >= EARLY_WRITEBACK_MIN:
            preallocate(fd, 0, size)
            early = EarlyWriteback(fd)
        position = 0

        def advanced(n: int) -> None:
            nonlocal position
            position += n
            self.bytes_written += n
            if early is not None:
                early.wrote(position)

        try:
            return bool(copy_to_fd(fd, advanced, verdicts=self._verdicts))
        finally:
            if early is not None:
                early.close()

    def finish(self) -> None:
        """Every digest verdict settled (the first mismatch raises), then every file synced."""
        self._verdicts.settle()
        self._writeback.close()
        for path in self._unsynced:
            fsync_named(path)
        self._unsynced.clear()

    def cancel(self) -> None:
        """An aborted output: pending hashes dropped, the writeback helper ended."""
        self._verdicts.cancel()
        self._writeback.close()
        self._unsynced.clear()


__all__: list[str] = ["BlobFiles", "EARLY_WRITEBACK_MIN"]
