"""Diff IDs and chain IDs: the identities containerd gives unpacked layers.

A layer's *diff ID* is the SHA-256 of its uncompressed tar stream, every byte the decompressor
yields including anything after the tar end-of-archive marker (containerd drains the stream
into the digester after applying). Snapshot keys are *chain IDs* built from the diff IDs
(``identity.ChainIDs``): ``chain[0] = diff[0]``, ``chain[i] = sha256(chain[i-1] + " " + diff[i])``.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Protocol

from ctrconv.digest import Digest

CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def chain_ids(diff_ids: Iterable[str | Digest]) -> list[str]:
    """Chain ID of every prefix of ``diff_ids``, in order (``[-1]`` is the image's top)."""
    out: list[str] = []
    for diff_id in diff_ids:
        diff = str(Digest.parse(diff_id))
        if not out:
            out.append(diff)
        else:
            text = f"{out[-1]} {diff}".encode("ascii")
            out.append("sha256:" + hashlib.sha256(text).hexdigest())
    return out


def chain_id(diff_ids: Iterable[str | Digest]) -> str:
    """Chain ID of the whole list: the key of the image's top snapshot."""
    ids = chain_ids(diff_ids)
    if not ids:
        raise ValueError("chain_id of an empty diff ID list")
    return ids[-1]


class HashingReader:
    """Passes reads through while hashing and counting them, so the diff ID costs no extra pass.

    :meth:`drain` reads whatever is left (trailing bytes after the tar end belong to the diff ID).
    """

    def __init__(self, raw: Readable, algorithm: str = "sha256") -> None:
        self._raw = raw
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.bytes_read = 0
        # A stream that hashes itself on another thread (LayerStream) saves this thread the work.
        ahead = getattr(raw, "digest_of_stream", None)
        self._ahead = ahead if algorithm == "sha256" and ahead is not None and ahead() is not None else None

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        if data:
            if self._ahead is None:
                self._hash.update(data)
            self.bytes_read += len(data)
        return data

    def read_exact(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at end of stream (raw reads may be short)."""
        parts = []
        want = n
        while want > 0:
            data = self.read(want)
            if not data:
                break
            parts.append(data)
            want -= len(data)
        return b"".join(parts)

    def drain(self) -> int:
        """Read to end of stream; returns how many bytes that was."""
        total = 0
        while data := self.read(CHUNK):
            total += len(data)
        return total

    @property
    def digest(self) -> str:
        """``<algorithm>:<hex>`` of everything read so far (of the whole stream once drained,
        when the stream hashes itself ahead of the reader)."""
        if self._ahead is not None:
            return self._ahead()
        return f"{self._algorithm}:{self._hash.hexdigest()}"
