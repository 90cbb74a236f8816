"""Apply several overlay layers at once, in worker processes.

Extraction is Python-heavy (tar headers, one syscall wrapper per attribute), so threads would
share one interpreter lock; each layer goes to its own process instead. Workers come from a
``forkserver`` (never ``fork`` of a process that may run threads), preloaded with this module.
A layer applied here runs with ``defer_parents``: its lowers may still be unpacking, and the
caller finishes the deferred parent directories bottom-up afterwards
(:func:`ctrconv.layers.apply.finish_deferred_parents`).
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Sequence, Union

from ctrconv.errors import CtrconvError
from ctrconv.layers.apply import ApplyResult, Mode, apply_layer, unpack_layer
from ctrconv.layers.compression import LayerStream, open_layer
from ctrconv.progress import SILENT_STAGE, Stage
from ctrconv.tempfiles import signals_deferred


@dataclass(frozen=True)
class LayerJob:
    """One layer to apply: everything a worker process needs, as plain values."""

    blob_path: str
    target: str
    mode: Mode
    media_type: str | None
    lowers: tuple[str, ...]
    diff_id: str
    max_bytes: int | None
    #: True when the lowers may still be unpacking (side by side); False in layer order
    defer_parents: bool = True
    #: the blob is still being written (a download): read it as it grows, up to this many
    #: bytes, from ``blob_path`` or, once renamed, ``committed_path``
    arriving: int | None = None
    committed_path: str = ""
    #: the layer blob's digest, named in errors (as containerd's "failed to extract layer")
    digest: str = ""

    def open_blob(self) -> BinaryIO:
        """The blob's bytes: its file, or the file still being written."""
        if self.arriving is None:
            return open(self.blob_path, "rb")
        from ctrconv.layers.growing import GrowingBlob

        return GrowingBlob((self.blob_path, self.committed_path), self.arriving)  # type: ignore[return-value]

    def blob_size(self) -> int:
        return self.arriving if self.arriving is not None else os.stat(self.blob_path).st_size


class _Counted:
    """The blob as ``unpack_layer`` reads it, advancing ``stage`` by the compressed bytes read."""

    def __init__(self, blob: BinaryIO, stage: Stage) -> None:
        self._blob, self._stage = blob, stage

    def read(self, n: int = -1, /) -> bytes:
        data = self._blob.read(n)
        self._stage.advance(len(data))
        return data


@contextmanager
def naming_the_layer(digest: str) -> Iterator[None]:
    """An error about a layer's bytes (corrupt compression, hostile entries, a diff ID that
    does not match) names the layer blob it is about: one line among many layers."""
    try:
        yield
    except CtrconvError as exc:
        if not digest or digest in str(exc):
            raise
        raise type(exc)(f"layer {digest}: {exc}", hint=exc.hint) from None


def apply_job(job: LayerJob, stage: Stage = SILENT_STAGE, blob: BinaryIO | None = None) -> ApplyResult:
    """Decompress, verify and apply one layer blob (in a worker, or in order in the caller);
    ``stage`` advances by the blob's bytes as they are read and by the files written. ``blob``:
    read this stream instead of ``job.blob_path`` (in the caller only: a blob still arriving)."""
    with naming_the_layer(job.digest), job.open_blob() if blob is None else blob as stream:
        result = unpack_layer(
            _Counted(stream, stage), job.target, mode=job.mode, media_type=job.media_type, lowers=job.lowers,
            expected_diff_id=job.diff_id, max_bytes=job.max_bytes, defer_parents=job.defer_parents,
        )
    stage.advance(0, files=result.entries)
    return result


#: chunks (<= 1 MiB each) a layer applied in order inflates ahead of the applier; with the
#: next layer's queue filling behind it, at most ~2 x (this + 2) MiB are held (<= 32 MiB)
READ_AHEAD_CHUNKS = 14


class OpenedLayer:
    """A layer blob opened and inflating on its helper thread before its apply starts.

    Layers applied in order alternate between inflate-bound and create-bound stretches; the
    next layer inflating behind the current one (:func:`open_ahead`) keeps the inflater busy
    across the boundary. Errors of the opening (a media type the magic contradicts) are kept
    for :func:`apply_opened`, so they surface at the layer's turn, as without read-ahead.
    """

    def __init__(self, job: LayerJob, stage: Stage, after: "threading.Event | None") -> None:
        self.job = job
        self.error: BaseException | None = None
        self.tar: LayerStream | None = None
        self._blob: BinaryIO | None = None
        try:
            self._blob = job.open_blob()
            self.tar = open_layer(_Counted(self._blob, stage), job.media_type, max_bytes=job.max_bytes,
                                  read_ahead=READ_AHEAD_CHUNKS, after=after)
        except (CtrconvError, OSError) as exc:
            self.error = exc
        except BaseException:
            self.close()
            raise

    @property
    def produced(self) -> "threading.Event | None":
        """Set once this layer is fully inflated (the next may start); ``None``: start now."""
        return self.tar.produced if self.tar is not None else None

    def close(self) -> None:
        """Stop the helper thread and close the blob (also for a layer never applied)."""
        if self.tar is not None:
            self.tar.close()
        if self._blob is not None:
            self._blob.close()


def open_ahead(job: LayerJob, stage: Stage = SILENT_STAGE, before: OpenedLayer | None = None) -> OpenedLayer:
    """Open ``job``'s blob to inflate once ``before`` (the layer applied ahead of it) is inflated."""
    return OpenedLayer(job, stage, before.produced if before is not None else None)


def apply_opened(opened: OpenedLayer, target: str, lowers: tuple[str, ...], mode: Mode,
                 stage: Stage = SILENT_STAGE) -> ApplyResult:
    """Apply a layer opened by :func:`open_ahead` in order (lowers complete) to ``target``;
    closes it. The diff ID is verified as with :func:`apply_job`."""
    try:
        with naming_the_layer(opened.job.digest):
            if opened.error is not None:
                raise opened.error
            assert opened.tar is not None
            result = apply_layer(opened.tar, target, mode=mode, lowers=lowers,
                                 expected_diff_id=opened.job.diff_id, defer_parents=False)
    finally:
        opened.close()
    stage.advance(0, files=result.entries)
    return result


#: seconds between two looks at ``watch`` while workers run
_WATCH_EVERY = 0.2

#: a layer to apply, or a function giving it once it can start (it may wait for its blob to
#: arrive, and raises if the blob fails)
PendingJob = Union[LayerJob, Callable[[], LayerJob]]


def apply_in_parallel(jobs: Sequence[PendingJob], workers: int, stage: Stage = SILENT_STAGE,
                      watch: Callable[[], None] | None = None) -> list[ApplyResult]:
    """Apply ``jobs`` with up to ``workers`` processes; results in job order. ``stage``
    advances by a layer's blob bytes and files as each layer is done.

    A job given as a function is resolved right before it is submitted, in order: a layer
    whose blob is still downloading waits for it while the layers before it already unpack.
    The first failure (a worker's, or a job that could not be resolved) is raised once every
    started job has stopped (jobs not started yet are never submitted), so the caller can
    remove the targets without a worker still writing into them. ``watch`` is called while
    the workers run and raises when they must stop (a download they read failed).
    """
    context = multiprocessing.get_context("forkserver")
    # the forkserver and its workers ignore SIGINT (a terminal sends it to the whole group):
    # this process stops them itself, below
    context.set_forkserver_preload(["ctrconv.workersignals", __name__])
    pool: ProcessPoolExecutor | None = None
    resolved: list[LayerJob] = []
    futures: list[Future[ApplyResult]] = []
    try:
        for pending in jobs:
            job = pending if isinstance(pending, LayerJob) else pending()
            if any(f.done() and f.exception() is not None for f in futures):
                break  # a worker failed meanwhile: start nothing more
            # no signal may land inside the executor's start-up or a worker's spawn (a manager
            # thread created but not started cannot be joined); deferred ones come right after
            with signals_deferred(), _sigint_ignored_by_children():
                if pool is None:
                    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=context,
                                               initializer=end_with, initargs=(os.getpid(),))
                futures.append(pool.submit(apply_job, job))
            resolved.append(job)
        _follow(futures, resolved, stage, watch)
        failed = next((f for f in futures if f.done() and f.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            wait(futures)
            raise failed.exception()  # type: ignore[misc]
        results = [f.result() for f in futures]
        if pool is not None:
            pool.shutdown(wait=True)
    except BaseException:
        if pool is not None:  # also when the deferred signal lands as the block above ends
            _stop(pool)
        raise
    return results


def end_with(pid: int) -> None:
    """In a worker: exit as soon as process ``pid`` (the command that started it) has ended.
    A SIGKILL of the command alone (the OOM killer, ``kill -9`` of its pid) left the workers
    waiting on their queue forever, holding the caller's stdout and stderr open (a red-team
    run: a ``$(ctrconv import -j 3 ...)`` never returned). Whatever a worker was writing is in
    the import's temp directories, which the next run removes."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):  # (no pidfd: Linux before 5.3)
        handle = None
        if not _alive(pid):
            os._exit(1)

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])  # readable once the process has exited
        else:
            while _alive(pid):
                time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _follow(futures: list[Future[ApplyResult]], jobs: Sequence[LayerJob], stage: Stage,
            watch: Callable[[], None] | None = None) -> None:
    """Wait until every job is done or one failed, advancing ``stage`` as layers finish
    (and calling ``watch`` meanwhile, which raises to stop them)."""
    pending = set(futures)
    while pending:
        if watch is not None:
            watch()
        done, pending = wait(pending, timeout=None if watch is None else _WATCH_EVERY, return_when=FIRST_COMPLETED)
        if any(f.exception() is not None for f in done):
            return
        for future in done:
            job = jobs[futures.index(future)]
            stage.advance(job.blob_size(), files=future.result().entries)
    if watch is not None:
        watch()


@contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """While processes are spawned (the forkserver: its interpreter start-up takes ~0.1 s),
    SIGINT's disposition is ``SIG_IGN``, which an exec'd child keeps. The caller holds SIGINT
    blocked meanwhile, and Linux keeps a blocked signal pending even when it is ignored, so
    this process still gets it once its own handler is back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Kill the workers (they ignore SIGINT) and wait for them, so none is still writing into
    a target the caller is about to remove."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    with signals_deferred():
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            try:
                process.kill()
            except (OSError, ValueError, AttributeError):  # already gone
                pass
        for process in processes:
            process.join()

