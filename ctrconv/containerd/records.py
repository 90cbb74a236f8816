"""Typed, read-only records of containerd's metadata (what meta.db and metadata.db hold)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ctrconv.containerd.codec import GoTime


@dataclass(frozen=True)
class Target:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class ImageRecord:
    namespace: str
    name: str
    target: Target
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None


@dataclass(frozen=True)
class BlobRecord:
    namespace: str
    digest: str
    size: int
    labels: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None


@dataclass(frozen=True)
class IngestRecord:
    namespace: str
    ref: str
    backend_ref: str | None
    expire_at: GoTime | None
    expected: str | None


@dataclass(frozen=True)
class SnapshotRecord:
    """A meta.db snapshot record: ``key`` is the client key (chain ID for image layers)."""

    namespace: str
    snapshotter: str
    key: str
    name: str
    parent: str | None
    children: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None


@dataclass(frozen=True)
class LeaseRecord:
    namespace: str
    id: str
    created_at: GoTime | None
    labels: dict[str, str]
    content: tuple[str, ...]
    snapshots: dict[str, tuple[str, ...]]
    ingests: tuple[str, ...]
    images: tuple[str, ...]


@dataclass(frozen=True)
class BackendSnapshot:
    """A snapshotter metadata.db record: ``key`` is the backend name ``ns/<seq>/<key>``."""

    key: str
    id: int
    kind: str
    parent: str | None
    labels: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None
    inodes: int | None = None
    size: int | None = None
