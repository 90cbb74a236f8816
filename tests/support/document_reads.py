"""Counting the reads of whole small blobs (manifests, indexes, configs) in a test."""

from __future__ import annotations

import collections
from typing import Any


def count_document_reads(monkeypatch: Any) -> "collections.Counter[str]":
    """Every read of a whole small blob from now on, by digest: the listing's own reads (through
    its open blob directories) and the walks' (through the store) alike."""
    from ctrconv.containerd import content

    reads: collections.Counter[str] = collections.Counter()
    real = content._read_whole

    def counting(fd: int, size: int, algorithm: str, hex_: str) -> bytes | None:
        reads.update([f"{algorithm}:{hex_}"])
        return real(fd, size, algorithm, hex_)

    monkeypatch.setattr(content, "_read_whole", counting)
    return reads
