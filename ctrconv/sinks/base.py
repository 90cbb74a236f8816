"""The Sink protocol every export format implements, and what the pipeline hands to it.

Call order (the pipeline in :mod:`ctrconv.pipeline.export` follows it; sinks may rely on it):

1. construct the sink (nothing visible is created yet: output goes to a temp name);
2. ``add_names(images)`` exactly once, before any blob: the sink builds its name documents
   (``index.json``, ``manifest.json``) in memory and raises :class:`~ctrconv.errors.UsageError`
   if it cannot represent the images (e.g. docker-archive without a taggable name), so a
   refusal happens before a byte is written;
3. ``add_blob(desc, reader, source_path=...)`` once per distinct digest, in ascending order of
   :func:`blob_path` (tar sinks write entries in that order, like ``ctr``);
4. ``commit()``: write the name documents, flush, fsync and rename into place. Only after
   ``commit`` returns does the output exist under its final name;
5. ``abort()`` on any failure, at any point (also after a failed ``commit``): removes every
   temp file; idempotent; never raises for cleanup problems it can ignore.

Verification belongs to the caller: ``reader`` is a
:class:`~ctrconv.streams.VerifyingReader`, which raises at EOF on a digest or size mismatch, so
a sink only has to read it to the end (or call ``verify_to_end``) for the blob to be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from ctrconv.digest import Digest
from ctrconv.pipeline.plan import PlannedManifest


class BlobReader(Protocol):
    """A verifying blob stream: raises at EOF on a digest or size mismatch.

    Sinks that write files also look for an optional ``copy_to_fd(out_fd, on_chunk) -> bool``
    (:meth:`ctrconv.streams.VerifyingReader.copy_to_fd`): a kernel copy, verified the same way.
    """

    def read(self, n: int = -1) -> bytes: ...

    def verify_to_end(self) -> None:
        """Read (and so verify) the rest without keeping the bytes."""


@dataclass(frozen=True)
class ExportedImage:
    """One image name as it should appear in the output.

    ``entry`` is the ``index.json`` descriptor for an OCI layout (the stored target with name
    annotations, in Go field order); ``manifest`` is the one platform manifest chosen for the
    docker ``manifest.json`` (None when the image has none to offer).
    """

    name: str
    entry: dict[str, Any]
    manifest: PlannedManifest | None


class Sink(Protocol):
    """Destination of an export (see the module docstring for the call order)."""

    #: True when the sink stores one manifest per image (docker-archive): the pipeline then
    #: passes only the chosen manifest, its config and layers, never the index blobs.
    single_manifest: bool

    def add_names(self, images: Sequence[ExportedImage]) -> None: ...

    def add_blob(self, desc: dict[str, Any], reader: BlobReader, *, source_path: Path | None = None) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


def blob_path(digest: Digest | str) -> str:
    """``blobs/<alg>/<hex>``: where a blob lives in an OCI layout (and ctr's tar)."""
    d = Digest.parse(digest)
    return f"blobs/{d.algorithm}/{d.hex}"
