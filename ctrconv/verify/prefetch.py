"""The sizes of a namespace's blob files, looked up side by side.

A large root's verify stats every recorded blob (32,000 at 10,000 images) and then reads every
image's manifest and config (21,000 small files). With the page cache cold, as after a node's
boot, each of those waits for the disk in turn. Here the ``stat`` calls run on a few threads
(``os.stat`` releases the GIL), a chunk of blobs per task so the pool costs nothing when the
cache is warm, and for the blobs the records name as documents (a record that labels content
is a manifest or an index; a ``gc.ref.content.config`` label names a config) the kernel is asked
to read them ahead (``POSIX_FADV_WILLNEED``), so the image checks find them in memory. The
answers are exactly :meth:`ContentStore.size`'s.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from ctrconv.containerd.content import ContentStore
from ctrconv.digest import Digest
from ctrconv.errors import InvalidDigestError

#: blobs per task, and threads: enough requests in flight for a disk, no cost on a warm cache
CHUNK = 512
WORKERS = 8
#: documents larger than this are not read ahead (a manifest or config is a few KiB)
READ_AHEAD_MAX = 1 << 20


def blob_sizes(content: ContentStore, digests: Iterable[str], documents: set[str]) -> dict[str, int | None]:
    """digest -> :meth:`ContentStore.size` of each of ``digests``; ``documents`` are read ahead."""
    items = list(digests)
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    if len(chunks) <= 1:
        return _sizes(content, items, documents)
    sizes: dict[str, int | None] = {}
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for part in pool.map(lambda chunk: _sizes(content, chunk, documents), chunks):
            sizes.update(part)
    return sizes


def _sizes(content: ContentStore, digests: list[str], documents: set[str]) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for digest in digests:
        size = sizes[digest] = content.size(digest)
        if size is not None and size <= READ_AHEAD_MAX and digest in documents:
            _read_ahead(content, digest)
    return sizes


def _read_ahead(content: ContentStore, digest: str) -> None:
    """Ask the kernel to bring the file into the page cache without waiting for it."""
    try:
        d = Digest.parse(digest)
        fd = os.open(f"{content.path}/blobs/{d.algorithm}/{d.hex}", os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, InvalidDigestError):
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except (OSError, AttributeError):
        pass
    finally:
        os.close(fd)
