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
from typing import Iterable

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


def hash_blobs(
    blobs: Iterable[tuple[Digest, Path | str]],
    *,
    jobs: int | None = None,
    stage: Stage = SILENT_STAGE,
) -> list[tuple[Digest, str | None, int]]:
    """:func:`hash_blob` of each blob, in order: the large ones on ``jobs`` threads (default:
    the cores, at most 8), the small ones here while they come fast (the module docstring)."""
    workers = jobs or min(8, os.cpu_count() or 1)
    results: list[tuple[Digest, str | None, int]] = []
    items = iter(blobs)
    small_here = True
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # a window of blobs at a time: ``map`` makes a future for every item at once, and a
        # root of 64,000 blobs held 100 MiB of futures before the first was done
        while window := list(islice(items, workers * _WINDOW_PER_WORKER)):
            if not small_here:
                results.extend(pool.map(lambda item: hash_blob(item[0], item[1], stage), window))
                continue
            started = time.perf_counter()
            sizes = [file_size(path) for _, path in window]
            large = {i: pool.submit(hash_blob, digest, path, stage)
                     for i, ((digest, path), size) in enumerate(zip(window, sizes)) if size > SMALL}
            done = {i: hash_blob(digest, path, stage) for i, (digest, path) in enumerate(window) if i not in large}
            if done and time.perf_counter() - started > WAITING * len(window):
                small_here = False  # the disk answers: from the next window on, all on the pool
            results.extend(done[i] if i in done else large[i].result() for i in range(len(window)))
    return results
