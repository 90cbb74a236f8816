"""What an image source gives the pipeline: named top-level descriptors and verified blobs.

Implemented by the OCI layout readers (dir, tar), the docker-archive reader and the
containerd root reader. Call order: ``entries()`` any time; ``open``/``read_small`` per blob,
in any order, each stream read to the end by the caller through a verifying reader;
``close()`` once. Sources never verify on their own: the consumer wraps every stream in
:class:`ctrconv.streams.VerifyingReader` so bytes are hashed exactly once while they flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from ctrconv.digest import Digest


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


class ImageSource(Protocol):
    def entries(self) -> list[NamedEntry]: ...

    def exists(self, digest: Digest | str) -> bool: ...

    def size(self, digest: Digest | str) -> int | None: ...

    def open(self, digest: Digest | str) -> BinaryIO: ...

    def read_small(self, digest: Digest | str, size: int) -> bytes: ...

    def close(self) -> None: ...
