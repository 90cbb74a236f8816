"""Blob access shared by every image source: digest lookup, small verified reads, naming.

A source maps a :class:`~ctrconv.digest.Digest` to a *locator* (size + opener). Digests are
always parsed strictly before any lookup, so a hostile digest string never reaches a path or a
tar member name. Small documents the source made itself (a synthesised Docker manifest, the
bytes of ``index.json``) are served from memory through the same interface.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import date
from typing import Any, BinaryIO, Callable, Mapping

from ctrconv.digest import Digest
from ctrconv.errors import FormatError, InvalidDigestError, MissingContentError
from ctrconv.oci.reference import import_name
from ctrconv.oci.validate import MAX_DOCUMENT_SIZE
from ctrconv.image.protocols import NamedEntry
from ctrconv.streams import CHUNK, ReadIntoByRead, VerifyingReader


@dataclass(frozen=True)
class Locator:
    """Where one blob's bytes are: their claimed size and a function opening a fresh stream."""

    size: int
    opener: Callable[[], BinaryIO]


class RangeReader(ReadIntoByRead, io.RawIOBase):
    """A read-only window ``[offset, offset+size)`` of a file, read with ``pread``.

    Each reader owns a duplicate of the file descriptor, so readers are independent of each
    other (no shared seek position) and of the source being closed while they are in use.
    """

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd = os.dup(fd)
        self._start = offset
        self._end = offset + size
        self._pos = offset

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        self._checkClosed()
        remaining = self._end - self._pos
        if n is None or n < 0 or n > remaining:
            n = remaining
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._pos)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def parse_digest(digest: Digest | str) -> Digest | None:
    """The strictly parsed digest, or None for anything invalid (treated as absent)."""
    try:
        return Digest.parse(digest)
    except InvalidDigestError:
        return None


class BlobSourceBase:
    """``exists``/``size``/``open``/``read_small``/``close`` over :meth:`_locate` plus memory blobs.

    Subclasses implement :meth:`_locate`. Nothing here verifies streams returned by
    :meth:`open` (the consumer does, while copying); :meth:`read_small` verifies because it
    hands over a whole document, exactly like :meth:`ContentStore.read_small`.
    """

    what = "image source"

    def __init__(self) -> None:
        self._memory: dict[Digest, bytes] = {}

    def add_memory_blob(self, data: bytes) -> Digest:
        """Serve ``data`` (a document this source made or read) under its sha256 digest."""
        digest = Digest.from_bytes(data)
        self._memory[digest] = bytes(data)
        return digest

    def _locate(self, digest: Digest) -> Locator | None:
        raise NotImplementedError

    def _find(self, digest: Digest | str) -> Locator | None:
        d = parse_digest(digest)
        if d is None:
            return None
        data = self._memory.get(d)
        if data is not None:
            return Locator(len(data), lambda: io.BytesIO(data))
        return self._locate(d)

    def exists(self, digest: Digest | str) -> bool:
        return self._find(digest) is not None

    def size(self, digest: Digest | str) -> int | None:
        loc = self._find(digest)
        return None if loc is None else loc.size

    def open(self, digest: Digest | str) -> BinaryIO:
        """A raw, unverified stream of the blob; :class:`MissingContentError` if absent."""
        loc = self._find(digest)
        if loc is None:
            raise MissingContentError(f"blob {str(digest)[:100]} not found in {self.what}")
        return loc.opener()

    def read_small(self, digest: Digest | str, size: int, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
        """Read a small JSON blob whole, verified against ``digest`` and ``size``."""
        if size > limit:
            raise FormatError(f"blob {digest} claims {size} bytes; too large for a JSON document")
        d = Digest.parse(digest)
        chunks = []
        with self.open(d) as stream:
            reader = VerifyingReader(stream, d, size, what=f"blob {d} in {self.what}")
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._memory.clear()

    def __enter__(self) -> "BlobSourceBase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def named_entries(
    manifests: list[Any], base_name: str | None = None, *, today: date | None = None
) -> list[NamedEntry]:
    """One :class:`NamedEntry` per ``index.json`` descriptor, named like ``ctr images import``.

    ``base_name`` is ctr's ``--base-name``: the prefix for bare ``ref.name`` tags and the
    filter for full ones (see :func:`ctrconv.oci.reference.import_name`).
    """
    entries = []
    for desc in manifests:
        annotations: Mapping[str, str] = desc.get("annotations") or {}
        entries.append(
            NamedEntry(
                descriptor=dict(desc),
                name=import_name(annotations, base_name, today=today),
                annotations=dict(annotations),
            )
        )
    return entries
