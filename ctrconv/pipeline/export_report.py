"""What an export (or convert) was asked to do and what it did: options and the ``--json`` report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ctrconv.pipeline import regenerate as regen


@dataclass
class ExportOptions:
    """What to export and how (``export``, and ``convert`` through :class:`ConvertOptions`).

    Field names are ``ctrconv export``'s option names (``--image``, ``--platform``,
    ``--containerd-version``, ``--verify``, ...); defaults are the CLI's.
    """

    namespace: str = "default"
    #: ``--image`` (names, image IDs, digests); None: every image of the namespace (``--all``)
    image: Sequence[str] | None = None
    #: oci-dir, oci-tar, docker-archive, dir; None: oci-tar for ``*.tar`` and ``-``, else oci-dir
    format: str | None = None
    #: ``--platform`` (repeatable; ranked like ``platforms.Ordered``); empty: the host's
    platform: Sequence[str] = ()
    all_platforms: bool = False
    index_media_type: bool | None = None
    #: the containerd line whose ``ctr images export`` to match ("1.6", "1.7", "2.x");
    #: None = the line that wrote the source root
    containerd_version: str | None = None
    skip_manifest_json: bool = False
    #: leave non-distributable (foreign) layers out, like ``ctr images export --skip-non-distributable``
    skip_non_distributable: bool = False
    link: bool = False
    #: with ``link``: hash linked blobs (copied blobs are always verified)
    verify: bool = True
    ignore_lock: bool = False
    #: layers whose blob is gone are written again from their snapshots: "auto" (only those),
    #: "always" (every layer that has a snapshot) or "never"
    from_snapshots: str = "auto"
    #: compression of regenerated layers (gzip, zstd, none); None = like the original layer
    compression: str | None = None
    #: a file source's one image stored under this name (``convert --name``)
    name: str | None = None


@dataclass
class ImageReport:
    name: str
    digest: str
    media_type: str
    platforms: list[str]
    skipped_platforms: list[str]
    manifest: str | None
    #: the image ID (config digest of the manifest ``manifest``), and what it was before layers
    #: were regenerated or decompressed (equal when the config was kept)
    image_id: str | None = None
    original_image_id: str | None = None
    #: the stored target, when the export names a rewritten one instead (else None)
    original_digest: str | None = None
    #: layers written again from their snapshots
    regenerated_layers: int = 0
    #: layers whose blob was never stored, taken from a stored blob of the same tar (Docker's
    #: containerd store): the original tar exactly, recompressed
    copied_layers: int = 0
    #: zstd layers written as plain tars (docker archives)
    decompressed_layers: int = 0
    #: the stored name, when the export names the image differently: a name that states a
    #: digest (``sha256:<image ID>``, ``repo@<digest>``) follows the rewritten image
    original_name: str | None = None


@dataclass
class ExportReport:
    """What was written (the ``--json`` document)."""

    format: str
    output: str
    namespace: str
    images: list[ImageReport] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0
    linked: int = 0
    #: every manifest replaced by one naming regenerated or decompressed layers
    rewritten: list[dict[str, Any]] = field(default_factory=list)

    @property
    def platforms(self) -> list[str]:
        return sorted({p for i in self.images for p in i.platforms})

    @property
    def image_ids_changed(self) -> list[dict[str, Any]]:
        """``{"from", "to", "names"}`` per image ID the export changed."""
        changed: dict[tuple[str, str], list[str]] = {}
        for i in self.images:
            if i.image_id and i.original_image_id and i.image_id != i.original_image_id:
                changed.setdefault((i.original_image_id, i.image_id), []).append(i.name)
        return [{"from": a, "to": b, "names": names} for (a, b), names in changed.items()]

    @property
    def skipped_platforms(self) -> list[str]:
        return sorted({p for i in self.images for p in i.skipped_platforms})

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["platforms"] = self.platforms
        doc["skipped_platforms"] = self.skipped_platforms
        doc["image_ids_changed"] = self.image_ids_changed
        return doc


def change_json(change: regen.ManifestChange) -> dict[str, Any]:
    return {
        "platform": change.platform,
        "original_manifest": change.original_manifest,
        "manifest": change.manifest,
        "original_config": change.original_config,
        "config": change.config,
        "config_changed": change.config_changed,
        "layers": [
            {"how": layer.how, "snapshotter": layer.snapshotter if layer.how == "regenerated" else None,
             "snapshot": layer.snapshot if layer.how == "regenerated" else None,
             "source_blob": layer.source_blob, "original_digest": layer.original_digest,
             "original_diff_id": layer.original_diff_id, "digest": layer.digest, "diff_id": layer.diff_id,
             "media_type": layer.media_type, "size": layer.size, "matches_diff_id": layer.matches}
            for layer in change.layers
        ],
    }


@dataclass
class ConvertOptions:
    """``ctrconv convert``: which images and platforms of a file input go to the output, and how.

    Field names are the CLI's option names. Platforms are chosen as ``export`` chooses them
    (default: the host platform; ``platform`` values ranked like ``platforms.Ordered``).
    """

    #: ``--image``: names, image IDs or digests among the input's named images (None: all of them)
    image: Sequence[str] | None = None
    #: ``--format``: oci-dir, oci-tar, docker-archive or dir (None: oci-tar for ``*.tar`` and ``-``, else oci-dir)
    format: str | None = None
    platform: Sequence[str] = ()
    all_platforms: bool = False
    #: index.json's top-level ``mediaType`` (None: written for every format, as containerd 1.7.15+ and 2.x do)
    index_media_type: bool | None = None
    skip_manifest_json: bool = False
    skip_non_distributable: bool = False
    #: ``--name``: the input's one image under this name (a skopeo ``dir:`` layout names none)
    name: str | None = None

    def export_options(self) -> ExportOptions:
        """The export pipeline's options for this conversion (a file source: nothing regenerated)."""
        return ExportOptions(
            namespace="", image=None if self.image is None else list(self.image), format=self.format,
            platform=list(self.platform), all_platforms=self.all_platforms, index_media_type=self.index_media_type,
            skip_manifest_json=self.skip_manifest_json, skip_non_distributable=self.skip_non_distributable,
            from_snapshots="never", name=self.name,
        )


@dataclass
class ConvertReport:
    """What a conversion wrote (the ``convert --json`` document): the export report of the
    file source, with the input in place of a namespace."""

    input: str
    export: ExportReport

    def to_json(self) -> dict[str, Any]:
        doc = self.export.to_json()
        for root_only in ("namespace", "linked"):
            doc.pop(root_only, None)
        return {"input": self.input, **doc}
