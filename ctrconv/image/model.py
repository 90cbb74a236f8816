"""One planned image: the descriptors and validated documents of index -> manifests -> config + layers.

The pipeline walks an image into an :class:`ImagePlan` (:func:`ctrconv.image.plan.plan_image`)
and every writer (layout sinks, the containerd root) reads it from there. Descriptors stay the
JSON dicts they were read as, so nothing a document says (annotations, URLs, unknown fields) is
lost on the way to a writer, and digests are always of the exact stored bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from ctrconv.digest import Digest
from ctrconv.oci.platform import Platform, format_platform


class BlobSource(Protocol):
    """Where blobs come from (a containerd content store, an OCI layout, ...).

    ``open`` returns the raw stream; callers verify digest and size while reading.
    """

    def exists(self, digest: Digest | str) -> bool: ...

    def size(self, digest: Digest | str) -> int | None: ...

    def open(self, digest: Digest | str) -> BinaryIO: ...

    def read_small(self, digest: Digest | str, size: int) -> bytes: ...


def platform_string(p: dict[str, Any] | None) -> str | None:
    """A descriptor's or config's platform as containerd's ``platforms.Format`` writes it
    (:func:`ctrconv.oci.platform.format_platform`, the one formatter): ``os/arch[/variant]``,
    ``unknown`` without an OS; None without a platform."""
    if not p:
        return None
    return format_platform(Platform(*(str(p.get(k) or "") for k in ("os", "architecture", "variant"))))


def config_platform(doc: dict[str, Any]) -> dict[str, Any]:
    """The platform an image config states (a manifest outside an index has no other)."""
    p = {"os": doc.get("os", ""), "architecture": doc.get("architecture", "")}
    if doc.get("variant"):
        p["variant"] = doc["variant"]
    return p


@dataclass
class PlannedManifest:
    """One platform's manifest: its descriptor, platform, config and layer descriptors, document."""

    descriptor: dict[str, Any]
    platform: dict[str, Any] | None
    config: dict[str, Any]
    layers: list[dict[str, Any]]
    document: dict[str, Any]


@dataclass
class ImagePlan:
    """Everything one image needs, in the order containerd would visit it."""

    target: dict[str, Any]
    blobs: list[dict[str, Any]] = field(default_factory=list)
    manifests: list[PlannedManifest] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    indexes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing

    def platforms(self) -> list[str]:
        return sorted({p for p in (platform_string(m.platform) for m in self.manifests) if p})
