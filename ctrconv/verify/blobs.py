"""Hash every blob of a content store, spread over the cores.

``hashlib`` releases the GIL on large updates, so a thread pool reading 1 MiB chunks keeps
every core busy without holding more than a chunk per worker in memory.

A small blob (a manifest, a config, a small layer: most of a large root's blobs) is hashed on
the calling thread instead, while the pool hashes the large ones: its hash holds the GIL, and
threads handing the GIL to each other around every ``open``, ``read`` and ``close`` of 32,000
small files took 3 s where one thread takes 0.3 s. When those small blobs come slowly (a cold
page cache: the disk answers each), the rest of them go to the pool too, where their waits
overlap.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from ctrconv.digest import Digest
from ctrconv.progress import SILENT_STAGE, Stage
from ctrconv.streams import CHUNK


def file_size(path: Path | str) -> int:
    """A blob file's size, for a progress total (0 when unreadable: its hash reports that)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


#: blobs handed to the pool per worker at a time (enough to keep every worker busy)
_WINDOW_PER_WORKER = 64
#: blobs up to this size are hashed on the calling thread (while they go fast)
SMALL = 64 << 10
#: seconds a small blob may take on the calling thread (its ``stat``, open, read and hash)
#: before the small blobs go to the pool as well: a warm cache answers in microseconds
WAITING = 100e-6


def hash_blob(digest: Digest, path: Path | str, stage: Stage = SILENT_STAGE) -> tuple[Digest, str | None, int]:
    """(digest, actual hex or None if unreadable, bytes read); ``stage`` advances by the bytes read."""
    h = digest.hasher()
    size = 0
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                size += len(chunk)
                stage.advance(len(chunk))
    except OSError:
        return digest, None, size
    return digest, h.hexdigest(), size


def hashed_blobs(
    blobs: Iterable[tuple[Digest, Path | str]],
    *,
    jobs: int | None = None,
    stage: Stage = SILENT_STAGE,
) -> Iterator[tuple[Digest, str | None, int]]:
    """:func:`hash_blob` of each blob, in order, on ``jobs`` threads (default: the cores, at
    most 8) counting this one: while small blobs come fast this thread hashes them and the
    others the large ones; once they come slowly, every blob goes to ``jobs`` pool threads
    (the module docstring). One job: every blob on this thread. Each window's results are
    given as it ends: none is kept for the whole run (167,700 of them were ~55 MiB of verify's
    peak), and ``blobs`` is read a window at a time."""
    workers = jobs or min(8, os.cpu_count() or 1)
    if workers <= 1:
        yield from (hash_blob(digest, path, stage) for digest, path in blobs)
        return
    items = iter(blobs)
    # a window of blobs at a time: ``map`` makes a future for every item at once, and a root
    # of 64,000 blobs held 100 MiB of futures before the first was done
    window_size = workers * _WINDOW_PER_WORKER
    with ThreadPoolExecutor(max_workers=workers - 1) as pool:
        while window := list(islice(items, window_size)):
            started = time.perf_counter()
            sizes = [file_size(path) for _, path in window]
            large = {i: pool.submit(hash_blob, digest, path, stage)
                     for i, ((digest, path), size) in enumerate(zip(window, sizes)) if size > SMALL}
            done = {i: hash_blob(digest, path, stage) for i, (digest, path) in enumerate(window) if i not in large}
            slow = bool(done) and time.perf_counter() - started > WAITING * len(window)
            yield from [done[i] if i in done else large[i].result() for i in range(len(window))]
            if slow:
                break  # the disk answers: the rest side by side, every blob on the pool
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while window := list(islice(items, window_size)):
            yield from pool.map(lambda item: hash_blob(item[0], item[1], stage), window)
