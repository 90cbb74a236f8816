"""``docker save``-compatible archive, in the combined shape Docker 25+ writes.

As Docker 25+'s ``docker save`` on the containerd image store writes it (checked against
Docker 26.1 and 28.5): ``blobs/sha256/<hex>`` for every blob of the image as stored (an index
keeps its index: the host platform's manifest by default, every present platform with
``--all-platforms``); ``index.json`` naming each image's stored target, so a Docker on the
containerd store loads it under the image ID (target digest) the source had; ``manifest.json``
with one entry for the host platform's manifest, ``Config``/``Layers`` pointing at those
blobs, and ``RepoTags`` the image's docker tags, or null for an unnamed image (Docker's
``moby-dangling@`` records, an export by image ID): its ``index.json`` entry then carries no
name either; plus ``oci-layout``.

Why this shape (see docs/export.md): Docker before 25 (20.10) reads only ``manifest.json`` and
opens the paths it lists, decompressing layers itself, so it loads the image under its config
digest; Docker 25+ and ``ctr images import`` prefer the OCI index when ``oci-layout`` is
present, which keeps the stored target and the real layer media types; skopeo's
``docker-archive:`` reads ``manifest.json`` and decompresses layers to match the diff IDs.
No ``repositories`` file: loaders only consult it when ``manifest.json`` is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Sequence

from ctrconv.sinks import _layout
from ctrconv.sinks.base import ExportedImage
from ctrconv.sinks.oci_tar import TarSink


def index_entries(images: Sequence[ExportedImage]) -> list[dict[str, Any]]:
    """One entry per name (its target with the name annotations); an unnamed image's entry
    without them, and only when no name of the same target has an entry already."""
    named = [i for i in images if i.manifest is not None and not _layout.is_unnamed(i.name)]
    targets = {i.entry.get("digest") for i in named}
    entries = [i.entry for i in named]
    for image in images:
        digest = image.entry.get("digest")
        if image.manifest is not None and _layout.is_unnamed(image.name) and digest not in targets:
            targets.add(digest)
            entries.append(_layout.unnamed_entry(image.entry))
    return entries


class DockerArchiveSink(TarSink):
    """``--format docker-archive``."""

    #: the stored target's blobs are written (an index with its exported platforms), not only
    #: the manifest that ``manifest.json`` describes
    single_manifest = False

    def __init__(self, out: Path | BinaryIO, *, index_media_type: bool = True) -> None:
        super().__init__(out)
        self._index_media_type = index_media_type

    def _name_documents(self, images: Sequence[ExportedImage]) -> list[tuple[str, bytes, int]]:
        return [
            ("index.json", _layout.index_json(index_entries(images), media_type=self._index_media_type), 0o644),
            ("manifest.json", _layout.docker_manifest_json(images), 0o644),
            ("oci-layout", _layout.OCI_LAYOUT, 0o444),
        ]
