"""Streaming helpers: digest/size-verifying copies and fsync by name (early writeback of an
output: :mod:`ctrconv.writeback`).

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
from collections import deque
from typing import Any, BinaryIO, Callable

from ctrconv.digest import Digest
from ctrconv.errors import DigestMismatchError, SizeMismatchError
from ctrconv.progress import SILENT_STAGE, Stage

CHUNK = 1 << 20


#: blobs at least this large are hashed on a helper thread, overlapping with the caller's writes
BACKGROUND_HASH_MIN = 8 << 20

#: step of a zero-copy transfer: one ``copy_file_range`` call, then the same bytes hashed
ZERO_COPY_CHUNK = 8 << 20
#: step of :meth:`VerifyingReader.verify_mapped` (no copy to interleave with): one window each
MAPPED_VERIFY_CHUNK = 16 << 20
#: windows (of ``ZERO_COPY_CHUNK``, or ``MAPPED_VERIFY_CHUNK``) a deferred-verdict copy may run ahead of its hash: mapped
#: but not yet read, so they cost address space only (hashing is slower than the kernel copy),
#: and one descriptor each (``mmap`` keeps a duplicate): at most 32 x (PENDING_BLOBS + 1)
ZERO_COPY_DEPTH = 32
#: blobs whose copy is done while their hash still runs (:class:`PendingVerdicts`): with the
#: blob being copied, up to this + 1 hashes share the cores, each touching one window at a time
PENDING_BLOBS = max(1, min(3, (os.cpu_count() or 1) - 1))
#: ``copy_file_range`` errors that mean "not for these two files" (old kernel, other
#: filesystem, pipe or append-only output): the caller copies through user space instead
_NO_ZERO_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}


def _hash_chunks(chunks: "queue.Queue[bytes | mmap.mmap | None]", hasher: "hashlib._Hash",
                 cancelled: threading.Event) -> None:
    while (chunk := chunks.get()) is not None:
        if not cancelled.is_set():
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
    so hashing a blob overlaps with writing it. At most ``depth`` chunks wait; the thread
    starts with the first chunk (``depth`` may be changed until then)."""

    #: set before ``__init__`` runs, so ``__del__`` of an object an interrupt left half-made
    #: finds no thread instead of raising
    _thread: threading.Thread | None = None

    def __init__(self, hasher: "hashlib._Hash", depth: int = 4) -> None:
        self._hash = hasher
        self.depth = depth
        self._cancelled = threading.Event()
        self._queue: queue.Queue[bytes | mmap.mmap | None] | None = None
        self._thread: threading.Thread | None = None

    def _start(self) -> "queue.Queue[bytes | mmap.mmap | None]":
        self._queue = queue.Queue(self.depth)
        # The thread holds the queue and the hash, not this object, so an abandoned reader is
        # collected and its ``__del__`` ends the thread.
        self._thread = threading.Thread(target=_hash_chunks, args=(self._queue, self._hash, self._cancelled),
                                        name="blob-hash", daemon=True)
        self._thread.start()
        return self._queue

    def __del__(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            assert self._queue is not None
            self._queue.put(None)

    def update(self, data: "bytes | mmap.mmap") -> None:
        """Queue ``data``; an mmap window is closed by the helper thread once hashed."""
        if len(data):
            (self._queue or self._start()).put(data)

    def _stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self._stop()
        return self._hash.hexdigest()

    def cancel(self) -> None:
        """The verdict is no longer wanted: the queued windows are unmapped unhashed."""
        self._cancelled.set()
        self._stop()


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
        self._check_size()
        self._check_digest(got)

    def _check_size(self) -> None:
        if self._read < self.size:
            raise SizeMismatchError(
                f"{self.what}: truncated: got {self._read} of {self.size} bytes"
            )
        if self._stream.read(1):
            raise SizeMismatchError(f"{self.what}: content is longer than its size {self.size}")

    def _check_digest(self, got: str) -> None:
        if got != self.digest.hex:
            raise DigestMismatchError(
                f"{self.what}: digest mismatch: content hashes to {self.digest.algorithm}:{got}"
            )

    def copy_to_fd(self, out_fd: int, on_chunk: Callable[[int], object] | None = None, *,
                   verdicts: "PendingVerdicts | None" = None) -> bool:
        """Copy the whole blob to ``out_fd`` in the kernel, verifying it on the way.

        Each step copies a region with ``copy_file_range`` (no trip through user space; a
        reflink where the filesystem can) and then hashes that same region of the source
        through ``mmap``, on the helper thread for large blobs, so copying and hashing overlap
        and the verdict comes with the last step, as with :meth:`read`. ``on_chunk(n)`` follows
        each step. Returns False, having copied nothing, when this does not apply (not a
        regular file of exactly ``size`` bytes from the current position, nothing read yet,
        or a kernel or filesystem without ``copy_file_range`` between these files): the
        caller then reads instead, which also reports any size problem precisely.

        With ``verdicts`` the copy does not wait for the helper thread: sizes are checked at
        once, the digest verdict is left in ``verdicts`` (whose owner settles it before the
        output is published), and the caller goes on to the next blob while this one's last
        regions are still being hashed, so the hashes of consecutive blobs share the cores.
        """
        return self._through_mappings(out_fd, on_chunk, verdicts)

    def verify_mapped(self, on_chunk: Callable[[int], object] | None = None, *,
                      verdicts: "PendingVerdicts | None" = None) -> bool:
        """Verify the rest of the blob without copying it: for a blob hardlinked into an
        output, whose bytes are already there. Hashed through ``mmap`` windows (no copy into
        user space), with the verdict deferred to ``verdicts`` as in :meth:`copy_to_fd`.
        False, having read nothing, when the stream is not a regular file of exactly ``size``
        bytes from here: the caller then uses :meth:`verify_to_end`."""
        return self._through_mappings(None, on_chunk, verdicts)

    def _through_mappings(self, out_fd: int | None, on_chunk: Callable[[int], object] | None,
                          verdicts: "PendingVerdicts | None") -> bool:
        """:meth:`copy_to_fd` (``out_fd`` given) or :meth:`verify_mapped` (None)."""
        source = self._zero_copy_source()
        if source is None:
            return False
        fd, start = source
        step = ZERO_COPY_CHUNK if out_fd is not None else MAPPED_VERIFY_CHUNK
        deferred = False
        if verdicts is not None and isinstance(self._hash, _BackgroundHasher) \
                and start % mmap.ALLOCATIONGRANULARITY == 0:
            # queued windows not read yet: address space, not memory (a blob inside another
            # file at an unaligned offset queues copies instead, so it keeps the short queue)
            self._hash.depth = ZERO_COPY_DEPTH
        try:
            while self._read < self.size:
                n = min(step, self.size - self._read)
                if out_fd is not None and not self._copy_region(fd, out_fd, start + self._read, n):
                    return False
                self._hash_region(fd, start + self._read, n)
                self._read += n
                if on_chunk is not None:
                    on_chunk(n)
            self._stream.seek(start + self.size)
            if verdicts is not None and isinstance(self._hash, _BackgroundHasher):
                self._done = True
                self._check_size()
                verdicts.add(self._deferred_verdict(self._hash), self._hash.cancel)
                deferred = True
            else:
                self._finish()
        finally:
            if self._read and not deferred:
                self._hash.hexdigest()  # joins the helper thread: every window is unmapped
        return True

    def _deferred_verdict(self, hasher: _BackgroundHasher) -> Callable[[], None]:
        return lambda: self._check_digest(hasher.hexdigest())

    def _copy_region(self, fd: int, out_fd: int, offset: int, n: int) -> bool:
        """``copy_file_range`` of ``n`` bytes at ``offset``; False when the kernel or the files
        refuse before the first byte (the caller then reads instead)."""
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
                raise SizeMismatchError(f"{self.what}: truncated: got {self._read + done} of {self.size} bytes")
            done += got
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


class PendingVerdicts:
    """Digest verdicts of blobs already copied whose hashing may still run (from
    :meth:`VerifyingReader.copy_to_fd`), at most ``limit`` at once: adding one more first
    waits for the oldest. The owner (a sink) calls :meth:`settle` before it publishes its
    output, which raises the first mismatch, and :meth:`cancel` when it aborts."""

    def __init__(self, limit: int = PENDING_BLOBS) -> None:
        self._limit = limit
        self._pending: deque[tuple[Callable[[], None], Callable[[], None]]] = deque()

    def add(self, verdict: Callable[[], None], cancel: Callable[[], None]) -> None:
        """``verdict()`` waits for the hash and raises on a mismatch; ``cancel()`` drops it."""
        self._pending.append((verdict, cancel))
        while len(self._pending) > self._limit:
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        verdict, _ = self._pending.popleft()
        try:
            verdict()
        except BaseException:
            self.cancel()
            raise

    def settle(self) -> None:
        """Wait for every pending hash; the first mismatch raises (the rest are cancelled)."""
        while self._pending:
            self._settle_oldest()

    def cancel(self) -> None:
        """Drop every pending verdict (an aborted output): their threads end unhashed."""
        while self._pending:
            self._pending.popleft()[1]()


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
