"""Hash every blob of a content store, spread over the cores.

``hashlib`` releases the GIL on large updates, so a thread pool reading 1 MiB chunks keeps
every core busy without holding more than a chunk per worker in memory.
"""

from __future__ import annotations

import os
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
    workers = jobs or min(8, os.cpu_count() or 1)
    results: list[tuple[Digest, str | None, int]] = []
    items = iter(blobs)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # a window of blobs at a time: ``map`` makes a future for every item at once, and a
        # root of 64,000 blobs held 100 MiB of futures before the first was done
        while window := list(islice(items, workers * _WINDOW_PER_WORKER)):
            results.extend(pool.map(lambda item: hash_blob(item[0], item[1], stage), window))
    return results
