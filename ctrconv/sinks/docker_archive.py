"""``docker save``-compatible archive, in the combined shape Docker 25+ writes.

One manifest per image (the chosen platform): ``blobs/sha256/<hex>`` for config and layers
(layers kept exactly as stored, compressed or not, so digests survive), ``manifest.json``
whose ``Config``/``Layers`` point at those paths and whose ``RepoTags`` always hold at least
one ``repo:tag``, plus ``index.json`` + ``oci-layout`` naming each chosen manifest.

Why this shape (see docs/export.md): every ``docker load`` reads ``manifest.json`` and opens
the paths it lists, decompressing layers itself, so no ``<id>/layer.tar`` tree is needed;
``ctr images import`` prefers the OCI index when ``oci-layout`` is present, which keeps the
real layer media types (its docker-manifest path would mislabel zstd layers as gzip); skopeo's
``docker-archive:`` reads ``manifest.json`` and decompresses layers to match the diff IDs.
No ``repositories`` file: loaders only consult it when ``manifest.json`` is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Sequence

from ctrconv.sinks import _layout
from ctrconv.sinks.base import ExportedImage
from ctrconv.sinks.oci_tar import TarSink


class DockerArchiveSink(TarSink):
    """``--format docker-archive``."""

    single_manifest = True

    def __init__(self, out: Path | BinaryIO, *, index_media_type: bool = True) -> None:
        super().__init__(out)
        self._index_media_type = index_media_type

    def _name_documents(self, images: Sequence[ExportedImage]) -> list[tuple[str, bytes, int]]:
        manifest_json = _layout.docker_manifest_json(images)
        entries = []
        for image in images:
            if image.manifest is None:
                continue
            desc = image.manifest.descriptor
            plain = {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"]}
            entries.append(_layout.name_entry(plain, image.name))
        return [
            ("index.json", _layout.index_json(entries, media_type=self._index_media_type), 0o644),
            ("manifest.json", manifest_json, 0o644),
            ("oci-layout", _layout.OCI_LAYOUT, 0o444),
        ]
