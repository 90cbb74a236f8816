"""A containerd root + namespace as an ImageSource: image records in, content-store blobs out.

Image records are read once when the source is opened (under the root's shared flock, or from a
private copy with ``ignore_lock``) and the bolt file is closed again; blobs are then served by
the root's :class:`~ctrconv.containerd.content.ContentStore`.

containerd itself only shows a namespace the blobs that have a record in that namespace's
``content/blob`` bucket. By default this source serves every blob present on disk (useful when
meta.db lost records); ``namespace_content_only=True`` applies containerd's rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ctrconv.containerd.content import ContentStore
from ctrconv.containerd.records import ImageRecord
from ctrconv.containerd.root import ContainerdRoot, check_namespace
from ctrconv.digest import Digest
from ctrconv.errors import InvalidDigestError, NotFoundError
from ctrconv.pipeline.source import NamedEntry
from ctrconv.sources.base import BlobSourceBase, Locator


@dataclass
class RootEntry(NamedEntry):
    """A :class:`NamedEntry` for a stored image, with the record's labels and the record itself."""

    labels: dict[str, str] = field(default_factory=dict)
    record: ImageRecord | None = None


def record_descriptor(record: ImageRecord) -> dict[str, Any]:
    """The image's target descriptor (meta.db stores media type, digest and size only)."""
    t = record.target
    return {"mediaType": t.media_type, "digest": t.digest, "size": t.size}


class ContainerdRootSource(BlobSourceBase):
    """ImageSource over one namespace of a containerd root."""

    kind = "containerd-root"

    def __init__(
        self,
        root: str | os.PathLike[str] | ContainerdRoot,
        namespace: str,
        *,
        ignore_lock: bool = False,
        namespace_content_only: bool = False,
    ) -> None:
        super().__init__()
        self.root = root if isinstance(root, ContainerdRoot) else ContainerdRoot(root)
        self.namespace = check_namespace(namespace)
        self.what = f"containerd root {self.root.path} (namespace {namespace})"
        self.content: ContentStore = self.root.content
        self._allowed: set[Digest] | None = None
        with self.root.open_metadata(ignore_lock=ignore_lock) as meta:
            if namespace not in meta.namespaces():
                raise NotFoundError(f"namespace {namespace!r} not found in {self.root.path}")
            self.records: list[ImageRecord] = sorted(meta.images(namespace), key=lambda r: r.name)
            if namespace_content_only:
                self._allowed = set()
                for blob in meta.blobs(namespace):
                    try:
                        self._allowed.add(Digest.parse(blob.digest))
                    except InvalidDigestError:
                        continue  # an invalid key is simply not content

    def entries(self) -> list[NamedEntry]:
        return [
            RootEntry(
                descriptor=record_descriptor(r),
                name=r.name,
                annotations=dict(r.annotations),
                labels=dict(r.labels),
                record=r,
            )
            for r in self.records
        ]

    def _locate(self, digest: Digest) -> Locator | None:
        if self._allowed is not None and digest not in self._allowed:
            return None
        size = self.content.size(digest)
        if size is None or not self.content.blob_path(digest).is_file():
            return None
        return Locator(size, lambda: self.content.open(digest))
