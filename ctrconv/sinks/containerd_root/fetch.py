"""Blobs fetched into the content store side by side, while the unpack goes on.

For a remote source (a registry) copying content is network-bound and unpacking is CPU- and
disk-bound; one after the other, each waits for the other. :class:`BlobFetcher` writes the
blobs with up to ``jobs`` threads, each blob through :meth:`ContentWriter.write` as any import
does (hashed while it streams, fsynced, renamed into ``blobs/`` only when its digest checks),
in the order given (configs and manifests first, then layers in the order the unpack applies
them), and meanwhile lets the unpack read a layer that is still being written
(:meth:`BlobFetcher.open_blob`): the reader follows the blob's temp file and reports its end only
once the blob was verified and committed; a worker process gets the temp file's path once its
first bytes are there (:meth:`BlobFetcher.arriving`) and is stopped when :meth:`BlobFetcher.check`
raises. A blob that fails its digest (or its download)
makes the reader raise, so a snapshot built from it, which lives in a temp directory until the
whole import commits, is thrown away with the import. Memory stays flat: bytes go through the
page cache, never through a buffer of a blob's size.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

from ctrconv.digest import Digest
from ctrconv.sinks.containerd_root.content_writer import ContentWriter
from ctrconv.streams import ReadIntoByRead

#: what the fetcher reports copied bytes to: a ``progress(n)`` callable or a stage's ``advance``
Advance = Callable[[int], object]
#: how long a reader waits for more bytes before it looks again (a short write may still sit
#: in the writer's buffer until its flush; no notification comes for that)
_POLL = 0.05


@dataclass
class _Blob:
    digest: Digest
    size: int
    recorded: bool
    #: bytes written to the temp file so far
    written: int = 0
    done: bool = False
    #: True: written now; False: it was already in the store
    wrote: bool = False
    error: BaseException | None = None


class _Counter:
    """The progress a blob's copy reports: bytes counted for the reader, then passed on."""

    def __init__(self, fetcher: "BlobFetcher", blob: _Blob) -> None:
        self._fetcher = fetcher
        self._blob = blob

    def __call__(self, n: int) -> None:
        self.advance(n)

    def advance(self, n: int, files: int = 0) -> None:
        with self._fetcher._cond:
            self._blob.written += n
            self._fetcher._cond.notify_all()
        self._fetcher._advance(n)


class BlobFetcher:
    """Writes ``blobs`` (digest, size) of ``source`` into ``content`` with ``jobs`` threads."""

    def __init__(self, content: ContentWriter, source: Any, blobs: Sequence[tuple[str, int]],
                 recorded: frozenset[str], jobs: int, advance: Advance | None = None) -> None:
        self._content = content
        self._source = source
        self._advance_to = advance
        self._progress_lock = threading.Lock()
        self._cond = threading.Condition()
        self._blobs = {d: _Blob(Digest.parse(d), size, d in recorded) for d, size in blobs}
        self._stopped = False
        content.prepare()  # the temp dir exists before threads write into it
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fetch")
        self._futures: list[Future[None]] = [self._pool.submit(self._fetch, self._blobs[d]) for d, _ in blobs]

    def _advance(self, n: int) -> None:
        if self._advance_to is not None and n:
            with self._progress_lock:
                self._advance_to(n)

    def _fetch(self, blob: _Blob) -> None:
        if self._stopped:
            raise _Stopped()
        try:
            wrote = self._content.write(self._source, {"digest": str(blob.digest), "size": blob.size},
                                        _Counter(self, blob), recorded=blob.recorded)
        except BaseException as exc:
            with self._cond:
                blob.error = exc
                self._cond.notify_all()
            raise
        with self._cond:
            blob.done, blob.wrote = True, wrote
            self._cond.notify_all()
        if not wrote:
            self._advance(blob.size)

    # -- for the unpack (the fetcher stands in for the ContentWriter there) ------------------

    def blob_path(self, digest: str) -> Path:
        """The committed blob file of ``digest``, once it is there (its fetch's error if it
        failed): what layers unpacked side by side in worker processes read."""
        blob = self._blobs[str(Digest.parse(digest))]
        self._wait(blob)
        return self._content.blob_path(blob.digest)

    def wait_for(self, digest: str) -> None:
        """Return once ``digest``'s blob is committed (or present) when this fetcher has it to
        fetch (its fetch's error if it failed); at once for any other digest."""
        blob = self._blobs.get(str(Digest.parse(digest)))
        if blob is not None:
            self._wait(blob)

    def _wait(self, blob: "_Blob") -> None:
        with self._cond:
            while not blob.done and blob.error is None:
                self._cond.wait()
        if blob.error is not None:
            raise blob.error

    def arriving(self, digest: str) -> tuple[Path, Path, int]:
        """Once the blob's first bytes are written (or it is done): its temp path, its
        committed path and its size, for a worker process that reads it as it grows
        (:mod:`ctrconv.layers.growing`); the fetch's error if it failed."""
        blob = self._blobs[str(Digest.parse(digest))]
        with self._cond:
            while blob.written == 0 and not blob.done and blob.error is None:
                self._cond.wait()
            if blob.error is not None:
                raise blob.error
            done = blob.done
        final = self._content.blob_path(blob.digest)
        return (final if done else self._content.temp_path(blob.digest)), final, blob.size

    def check(self) -> None:
        """Raise the first failed fetch's error (workers reading a blob that failed must stop)."""
        with self._cond:
            failed = next((b.error for b in self._blobs.values() if b.error is not None), None)
        if failed is not None:
            raise failed

    def open_blob(self, digest: str) -> BinaryIO:
        """A stream of the blob's bytes as they are written (a layer unpacked in order reads it
        while it downloads); it ends once the blob was verified and committed, and raises the
        fetch's error if it fails."""
        return _Follower(self, self._blobs[str(Digest.parse(digest))])  # type: ignore[return-value]

    # -- the end ----------------------------------------------------------------------------

    def finish(self) -> tuple[int, int, int]:
        """Wait for every blob: (written, already present, bytes written); the first error is raised."""
        for future in self._futures:
            future.result()
        self._pool.shutdown(wait=True)
        done = list(self._blobs.values())
        written = [b for b in done if b.wrote]
        return len(written), len(done) - len(written), sum(b.size for b in written)

    def stop(self) -> None:
        """Start no more blobs, cut those under way (a source with ``abort``) and wait for their
        threads (an error or a signal elsewhere): nothing writes into the content store once
        this returns."""
        self._stopped = True
        for future in self._futures:
            future.cancel()
        abort = getattr(self._source, "abort", None)
        if abort is not None:  # a registry cuts its downloads at once instead of finishing them
            abort()
        self._pool.shutdown(wait=True)


class _Stopped(Exception):
    """A blob not started because the fetch was stopped."""


class _Follower(ReadIntoByRead):
    """Reads a blob's temp file behind its writer (then the committed file: the open descriptor
    survives the rename)."""

    def __init__(self, fetcher: BlobFetcher, blob: _Blob) -> None:
        self._fetcher = fetcher
        self._blob = blob
        self._fd: int | None = None
        self._pos = 0
        self.closed = False

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        """Open the temp file once bytes are in it, else the committed file (already done)."""
        cond = self._fetcher._cond
        blob = self._blob
        with cond:
            while blob.written == 0 and not blob.done and blob.error is None:
                cond.wait()
            if blob.error is not None:
                raise blob.error
            done = blob.done
        content = self._fetcher._content
        candidates = [content.blob_path(blob.digest)] if done else [content.temp_path(blob.digest), content.blob_path(blob.digest)]
        for path in candidates:
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                return
            except FileNotFoundError:
                continue  # renamed between the look and the open: the committed file has it
        self.wait_done()
        self._fd = os.open(content.blob_path(blob.digest), os.O_RDONLY | os.O_CLOEXEC)

    def wait_done(self) -> None:
        self._fetcher.blob_path(str(self._blob.digest))

    def read(self, n: int = -1) -> bytes:
        if self._fd is None:
            self._open()
        assert self._fd is not None
        if n is None or n < 0:
            n = 1 << 20
        blob, cond = self._blob, self._fetcher._cond
        while True:
            with cond:
                if blob.error is not None:
                    raise blob.error
                available = blob.size if blob.done else blob.written
                done = blob.done
            if self._pos < available:
                data = os.pread(self._fd, min(n, available - self._pos), self._pos)
                if data:
                    self._pos += len(data)
                    return data
            elif done:
                return b""  # the whole blob, verified and committed
            with cond:  # nothing new yet: wait for the writer (or its last buffered bytes)
                if not blob.done and blob.error is None:
                    cond.wait(_POLL)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.closed = True

    def __enter__(self) -> "_Follower":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
