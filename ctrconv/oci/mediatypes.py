"""OCI and Docker media type constants and the predicates containerd uses to classify them.

The predicates mirror containerd's ``images`` package (``IsIndexType``, ``IsManifestType``,
``IsKnownConfig``, ``IsLayerType``, ``DiffCompression``) so that a walk or an unpack done here
picks the same children and the same decompressor as the daemon would.
"""

from __future__ import annotations

from typing import Literal

from ctrconv.errors import FormatError

# OCI image-spec v1.0 / v1.1
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_DESCRIPTOR = "application/vnd.oci.descriptor.v1+json"
OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# Docker image manifest v2 schema 2
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# containerd checkpoint types that IsKnownConfig also accepts
CONTAINERD_CHECKPOINT = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
CONTAINERD_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset(
    {OCI_CONFIG, DOCKER_CONFIG, CONTAINERD_CHECKPOINT, CONTAINERD_CHECKPOINT_CONFIG}
)
_DOCKER_LAYER_BASES = frozenset(
    {DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN, DOCKER_LAYER_FOREIGN_GZIP}
)
_OCI_LAYER_PREFIX = "application/vnd.oci.image.layer."

Compression = Literal["gzip", "zstd", "unknown"] | None


def split_media_type(media_type: str) -> tuple[str, list[str]]:
    """Split ``base+ext1+ext2`` into the base and the *sorted* suffix list (containerd rule)."""
    if not media_type:
        return "", []
    base, *ext = media_type.split("+")
    return base, sorted(ext)


def is_index(media_type: str) -> bool:
    """An image index / manifest list: its children are manifests."""
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    """An image manifest: its children are one config and the layers."""
    return media_type in MANIFEST_TYPES


def is_config(media_type: str) -> bool:
    """containerd ``IsKnownConfig``: a config blob it knows how to read."""
    return media_type in CONFIG_TYPES


def is_layer(media_type: str) -> bool:
    """containerd ``IsLayerType``: any ``vnd.oci.image.layer.*`` or a Docker rootfs diff type."""
    if media_type.startswith(_OCI_LAYER_PREFIX):
        return True
    return split_media_type(media_type)[0] in _DOCKER_LAYER_BASES


def is_nondistributable(media_type: str) -> bool:
    """Foreign / non-distributable layers, which registries and exporters may skip
    (containerd ``images.IsNonDistributable``: a prefix test on the whole media type)."""
    return media_type.startswith(("application/vnd.oci.image.layer.nondistributable.",
                                  "application/vnd.docker.image.rootfs.foreign."))


def layer_compression(media_type: str) -> Compression:
    """containerd ``DiffCompression``: which decompressor a layer of this type needs.

    ``None`` means uncompressed (or wrapped, e.g. ``+encrypted`` Docker types, which containerd
    leaves to a stream processor); ``"unknown"`` means a plain Docker ``diff.tar`` that may be
    compressed anyway and must be sniffed. Raises :class:`FormatError` for non-layer types.
    """
    base, ext = split_media_type(media_type)
    if base in (DOCKER_LAYER, DOCKER_LAYER_FOREIGN):
        return None if ext else "unknown"
    if base in (DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN_GZIP):
        return None if ext else "gzip"
    if base in (OCI_LAYER, OCI_LAYER_NONDISTRIBUTABLE):
        if ext and ext[-1] in ("gzip", "zstd"):
            return ext[-1]  # type: ignore[return-value]
        return None
    raise FormatError(f"unrecognised layer media type {media_type!r}")
