"""What readers give and writers take: the transfer protocols, in one bottom-layer module.

Every transfer is *source -> plan/validate -> sink*:

* an :class:`ImageSource` (OCI layout dir or tar, docker-archive, skopeo ``dir:``, a registry,
  a containerd root) gives named top-level descriptors and raw blob streams;
* the pipeline (:mod:`ctrconv.pipeline`) selects images and platforms, plans and validates
  them, and wraps every stream in a :class:`ctrconv.streams.VerifyingReader`, so each byte is
  hashed exactly once, while it flows;
* a :class:`Sink` (OCI layout dir or tar, docker-archive, skopeo ``dir:``) takes names, then
  verified blobs, then ``commit()``; a :class:`RootSink` (a containerd root, which also unpacks
  and merges records) takes the source itself and pulls what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol, Sequence

from ctrconv.digest import Digest
from ctrconv.image.model import PlannedManifest


@dataclass
class NamedEntry:
    """One top-level image: its descriptor (index.json entry) and the names it carries.

    ``name`` is the containerd image name derived the way containerd's importer derives it
    (``io.containerd.image.name``, else ``org.opencontainers.image.ref.name``, else RepoTags),
    or ``None`` for an unnamed entry.
    """

    descriptor: dict[str, Any]
    name: str | None
    annotations: dict[str, str] = field(default_factory=dict)
    #: the input it came from, when several are read as one (``import -i A -i B``)
    origin: str | None = None
    #: (registry host without port, repository) when pulled from a registry: its content is
    #: labelled as a pull labels it (``containerd.io/distribution.source.<host>=<repo>``,
    #: every child of an index)
    pulled_from: tuple[str, str] | None = None
    #: its manifest was made here (a docker archive's ``manifest.json`` element, as ``ctr``
    #: makes it): no registry serves that digest, so CRI records no ``repo@digest`` name for it
    synthesised: bool = False


class ImageSource(Protocol):
    """Named top-level descriptors and raw blobs.

    Call order: ``entries()`` any time; ``open``/``read_small`` per blob, in any order, each
    stream read to the end by the caller through a verifying reader; ``close()`` once.
    Sources never verify ``open`` streams on their own (``read_small`` verifies: it hands over
    a whole document).
    """

    def entries(self) -> list[NamedEntry]: ...

    def exists(self, digest: Digest | str) -> bool: ...

    def size(self, digest: Digest | str) -> int | None: ...

    def open(self, digest: Digest | str) -> BinaryIO: ...

    def read_small(self, digest: Digest | str, size: int) -> bytes: ...

    def close(self) -> None: ...


#: A docker-archive import's lookup into its destination: ``uncompressed layer digest ->
#: (compressed digest, size, where)`` of a blob the destination namespace holds (or an earlier
#: input of the same run brings) labelled ``containerd.io/uncompressed`` with that digest, or
#: None (containerd's ``resolveLayers``). ``where``: the blob's file, which the docker archive's
#: source then serves, or a function opening it where another input serves it.
ReuseCompressed = Callable[[Digest], "tuple[Digest, int, str | Callable[[], BinaryIO]] | None"]


class BlobReader(Protocol):
    """A verifying blob stream: raises at EOF on a digest or size mismatch.

    Sinks that write files also look for an optional ``copy_to_fd(out_fd, on_chunk, *,
    verdicts=None) -> bool`` (:meth:`ctrconv.streams.VerifyingReader.copy_to_fd`): a kernel
    copy, verified the same way (with ``verdicts``, the digest verdict may come later, from
    :class:`ctrconv.streams.PendingVerdicts`, which the sink settles before publishing).
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
    """Destination of a layout transfer (export, convert).

    Call order (the pipeline follows it; sinks may rely on it):

    1. construct the sink (nothing visible is created yet: output goes to a temp name);
    2. ``add_names(images)`` exactly once, before any blob: the sink builds its name documents
       (``index.json``, ``manifest.json``) in memory and raises
       :class:`~ctrconv.errors.UsageError` if it cannot represent the images (e.g.
       docker-archive without a taggable name), so a refusal happens before a byte is written;
    3. ``add_blob(desc, reader, source_path=...)`` once per distinct digest, in ascending order
       of ``blobs/<alg>/<hex>`` (tar sinks write entries in that order, like ``ctr``);
    4. ``commit()``: write the name documents, flush, fsync and rename into place. Only after
       ``commit`` returns does the output exist under its final name;
    5. ``abort()`` on any failure, at any point (also after a failed ``commit``): removes every
       temp file; idempotent; never raises for cleanup problems it can ignore.

    ``reader`` is a :class:`BlobReader`, so a sink only has to read it to the end (or call
    ``verify_to_end``) for the blob to be checked.
    """

    #: True when the sink stores one manifest per image (docker-archive): the pipeline then
    #: passes only the chosen manifest, its config and layers, never the index blobs.
    single_manifest: bool

    def add_names(self, images: Sequence[ExportedImage]) -> None: ...

    def add_blob(self, desc: dict[str, Any], reader: BlobReader, *, source_path: Path | None = None) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class RootSink(Protocol):
    """A destination that takes whole images from a source (a containerd root).

    It plans the entries itself (its platform rules are ``ctr images import``'s), writes every
    blob verified, unpacks, merges records and commits in one transaction; the report says
    what it did. ``entries`` (default: every named entry of the source) picks what to write.
    """

    def write(self, source: ImageSource, entries: Sequence[NamedEntry] | None = None) -> Any: ...
