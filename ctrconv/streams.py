"""Streaming helpers: digest/size-verifying copies, early writeback and directory fsync.

Bytes are hashed while they flow (never a second pass) and never held whole in memory.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import stat
import threading
from typing import Any, BinaryIO, Callable

from ctrconv.digest import Digest
from ctrconv.errors import DigestMismatchError, SizeMismatchError
from ctrconv.progress import SILENT_STAGE, Stage

CHUNK = 1 << 20


#: blobs at least this large are hashed on a helper thread, overlapping with the caller's writes
BACKGROUND_HASH_MIN = 8 << 20

#: step of a zero-copy transfer: one ``copy_file_range`` call, then the same bytes hashed
ZERO_COPY_CHUNK = 8 << 20
#: ``copy_file_range`` errors that mean "not for these two files" (old kernel, other
#: filesystem, pipe or append-only output): the caller copies through user space instead
_NO_ZERO_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}


def _hash_chunks(chunks: "queue.Queue[bytes | mmap.mmap | None]", hasher: "hashlib._Hash") -> None:
    while (chunk := chunks.get()) is not None:
        hasher.update(chunk)
        if isinstance(chunk, mmap.mmap):
            chunk.close()  # a window of a zero-copy source: unmapped once hashed


class ReadIntoByRead:
    """``readinto`` for raw readers whose natural call is ``read(n)`` (``pread``, an HTTP body,
    a file still being downloaded): put first in the bases, before ``io.RawIOBase``."""

    def read(self, n: int = -1) -> bytes:  # pragma: no cover - always overridden
        raise NotImplementedError

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class _BackgroundHasher:
    """Feeds chunks to a hash on another thread (hashlib releases the GIL on large updates),
    so hashing a blob overlaps with writing it. At most ``depth`` chunks wait."""

    def __init__(self, hasher: "hashlib._Hash", depth: int = 4) -> None:
        self._hash = hasher
        self._queue: queue.Queue[bytes | mmap.mmap | None] = queue.Queue(depth)
        # The thread holds the queue and the hash, not this object, so an abandoned reader is
        # collected and its ``__del__`` ends the thread.
        self._thread = threading.Thread(target=_hash_chunks, args=(self._queue, hasher), name="blob-hash", daemon=True)
        self._thread.start()

    def __del__(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)

    def update(self, data: "bytes | mmap.mmap") -> None:
        """Queue ``data``; an mmap window is closed by the helper thread once hashed."""
        if len(data):
            self._queue.put(data)

    def hexdigest(self) -> str:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._hash.hexdigest()


class VerifyingReader:
    """Wraps a stream; raises at EOF if the bytes read do not match ``digest`` and ``size``.

    Reading past ``size`` is detected (one probe byte) and reported as a lying size, so a
    blob that is longer than its descriptor never passes. Large blobs are hashed on a helper
    thread while the caller writes what it read; the verdict still comes with the last read.
    """

    def __init__(self, stream: BinaryIO, digest: Digest, size: int, *, what: str | None = None) -> None:
        self._stream = stream
        self.digest = digest
        self.size = size
        self._hash: "hashlib._Hash | _BackgroundHasher" = (
            _BackgroundHasher(digest.hasher()) if size >= BACKGROUND_HASH_MIN else digest.hasher()
        )
        self._read = 0
        self._done = False
        self.what = what or str(digest)

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        remaining = self.size - self._read
        if n is None or n < 0 or n > remaining:
            n = remaining
        data = self._stream.read(n) if n else b""
        self._read += len(data)
        self._hash.update(data)
        if not data or self._read == self.size:
            self._finish()
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        self._done = True
        got = self._hash.hexdigest()  # also stops a background hasher
        if self._read < self.size:
            raise SizeMismatchError(
                f"{self.what}: truncated: got {self._read} of {self.size} bytes"
            )
        if self._stream.read(1):
            raise SizeMismatchError(f"{self.what}: content is longer than its size {self.size}")
        if got != self.digest.hex:
            raise DigestMismatchError(
                f"{self.what}: digest mismatch: content hashes to {self.digest.algorithm}:{got}"
            )

    def copy_to_fd(self, out_fd: int, on_chunk: Callable[[int], object] | None = None) -> bool:
        """Copy the whole blob to ``out_fd`` in the kernel, verifying it on the way.

        Each step copies a region with ``copy_file_range`` (no trip through user space; a
        reflink where the filesystem can) and then hashes that same region of the source
        through ``mmap``, on the helper thread for large blobs, so copying and hashing overlap
        and the verdict comes with the last step, as with :meth:`read`. ``on_chunk(n)`` follows
        each step. Returns False, having copied nothing, when this does not apply (not a
        regular file of exactly ``size`` bytes from the current position, nothing read yet,
        or a kernel or filesystem without ``copy_file_range`` between these files): the
        caller then reads instead, which also reports any size problem precisely.
        """
        source = self._zero_copy_source()
        if source is None:
            return False
        fd, start = source
        try:
            while self._read < self.size:
                n = min(ZERO_COPY_CHUNK, self.size - self._read)
                offset = start + self._read
                done = 0
                while done < n:
                    try:
                        got = os.copy_file_range(fd, out_fd, n - done, offset + done)
                    except OSError as exc:
                        if self._read == 0 and done == 0 and exc.errno in _NO_ZERO_COPY:
                            return False
                        raise
                    if got == 0:
                        if self._read == 0 and done == 0:
                            return False  # some filesystems report 0 instead of an error
                        raise SizeMismatchError(
                            f"{self.what}: truncated: got {self._read + done} of {self.size} bytes"
                        )
                    done += got
                self._hash_region(fd, offset, n)
                self._read += n
                if on_chunk is not None:
                    on_chunk(n)
            self._stream.seek(start + self.size)
            self._finish()
        finally:
            if self._read:
                self._hash.hexdigest()  # joins the helper thread: every window is unmapped
        return True

    def _hash_region(self, fd: int, offset: int, n: int) -> None:
        """Hash bytes ``[offset, offset + n)`` of ``fd`` through a window mapped just for them,
        so memory stays flat (the mapped pages are the page cache's, and unmapped once hashed)."""
        aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
        window = mmap.mmap(fd, n + offset - aligned, prot=mmap.PROT_READ, offset=aligned)
        if isinstance(self._hash, _BackgroundHasher) and aligned == offset:
            self._hash.update(window)  # closed by the helper thread
            return
        view = memoryview(window)
        try:
            region = view[offset - aligned :]
            # the helper thread may hash later than this window lives: give it a copy (only
            # for a blob that does not start on a page boundary, e.g. inside another file)
            self._hash.update(bytes(region) if isinstance(self._hash, _BackgroundHasher) else region)
            region.release()
        finally:
            view.release()
            try:
                window.close()
            except BufferError:  # a slice outlived an interruption: unmapped when collected
                pass

    def _zero_copy_source(self) -> tuple[int, int] | None:
        """(fd, offset) when the rest of the stream is a regular file of exactly our size."""
        if self._read or self._done or self.size <= 0 or not hasattr(os, "copy_file_range"):
            return None
        try:
            fd = self._stream.fileno()
            start = self._stream.tell()
            st = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size != start + self.size:
            return None
        return fd, start

    def verify_to_end(self, sink: Callable[[bytes], object] | None = None) -> None:
        while True:
            chunk = self.read(CHUNK)
            if not chunk:
                break
            if sink:
                sink(chunk)


def copy_verified(
    src: BinaryIO,
    dst: BinaryIO,
    digest: Digest,
    size: int,
    *,
    what: str | None = None,
    stage: Stage = SILENT_STAGE,
) -> None:
    """Copy exactly ``size`` bytes, hashing as they pass; raise on any mismatch (``stage``
    advances by the bytes copied)."""
    reader = VerifyingReader(src, digest, size, what=what)
    write = dst.write
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            break
        write(chunk)
        stage.advance(len(chunk))


class EarlyWriteback:
    """Ask the kernel to start writing a file's dirty pages every ``step`` bytes.

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` only starts writeback (it does not wait), so the
    disk works while we go on reading and hashing, and the fsync before the final rename finds
    little left to do. A no-op where the call is not available.
    """

    _WRITE = 2  # SYNC_FILE_RANGE_WRITE
    _libc = None

    def __init__(self, fd: int, step: int = 32 << 20) -> None:
        self._fd = fd
        self._step = step
        self._done = 0
        if EarlyWriteback._libc is None:
            try:
                import ctypes
                import ctypes.util

                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                EarlyWriteback._libc = libc
            except (OSError, AttributeError):
                EarlyWriteback._libc = False

    def wrote(self, position: int) -> None:
        """The file now holds ``position`` bytes; start writeback of what is new."""
        libc = EarlyWriteback._libc
        if libc and position - self._done >= self._step:
            libc.sync_file_range(self._fd, self._done, position - self._done, self._WRITE)
            self._done = position


def fsync_named(path: str | os.PathLike[str], flags: int = 0) -> None:
    """``fsync`` a file or directory by name, opened read-only with ``flags`` added."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """``fsync`` a directory (its entries: a rename or a new file in it), refusing anything else."""
    fsync_named(path, os.O_DIRECTORY)
