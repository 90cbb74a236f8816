"""A containerd root + namespace as an ImageSource: image records in, content-store blobs out.

Image records are read when the source is opened (under the root's shared flock, or from a
private copy with ``ignore_lock``). By default the bolt file is closed again at once (a
rebuild re-imports a root into itself through this source); ``keep_open=True`` keeps the
open :class:`~ctrconv.containerd.metadata.MetadataDB` as :attr:`meta` until :meth:`close`, for
readers that need more than the image records (``export``: name resolution, the line that
wrote the root, content labels, snapshots to write missing layers again from).

containerd itself only shows a namespace the blobs that have a record in that namespace's
``content/blob`` bucket. By default this source serves every blob present on disk (useful when
meta.db lost records); ``namespace_content_only=True`` applies containerd's rule
(:class:`~ctrconv.containerd.content.NamespaceContent`).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ctrconv.containerd.content import ContentStore, NamespaceContent
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.records import ImageRecord
from ctrconv.containerd.root import ContainerdRoot, check_namespace
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, NotFoundError
from ctrconv.image.protocols import NamedEntry
from ctrconv.sources.base import BlobSourceBase, Locator


@dataclass
class RootEntry(NamedEntry):
    """A :class:`NamedEntry` for a stored image, with the record's labels and the record itself."""

    labels: dict[str, str] = field(default_factory=dict)
    record: ImageRecord | None = None


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
        keep_open: bool = False,
    ) -> None:
        super().__init__()
        self.root = root if isinstance(root, ContainerdRoot) else ContainerdRoot(root)
        #: the whole store, made once (every presence check asked ``root.content`` anew: 8 % of a rebuild)
        self._whole: ContentStore = self.root.content
        self.namespace = check_namespace(namespace)
        self.ignore_lock = ignore_lock
        self.what = f"containerd root {self.root.path} (namespace {namespace})"
        self._stack = ExitStack()
        self._meta: MetadataDB | None = None
        try:
            meta = self._stack.enter_context(self.root.open_metadata(ignore_lock=ignore_lock))
            if namespace not in meta.namespaces():
                raise NotFoundError(f"namespace {namespace!r} not found in {self.root.path}")
            self.records: list[ImageRecord] = sorted(meta.images(namespace), key=lambda r: r.name)
            self._by_name = {r.name: r for r in self.records}
            #: the oldest containerd line that writes a meta.db like this one ("1.6", "1.7", "2.x")
            self.writer_line: str = meta.writer_line
            #: the blobs this source serves: every file of the store, or the namespace's own
            self.content: ContentStore | NamespaceContent = (
                NamespaceContent.of(meta, self.root.content, namespace) if namespace_content_only else self.root.content
            )
            if keep_open:
                self._meta = meta
            else:
                self._stack.close()
        except BaseException:
            self._stack.close()
            raise

    @property
    def meta(self) -> MetadataDB:
        """The open meta.db (``keep_open=True`` only)."""
        if self._meta is None:
            raise CtrconvError(f"{self.what}: meta.db is not held open (keep_open=False) or already closed")
        return self._meta

    @property
    def store(self) -> ContentStore:
        """The root's whole content store (all namespaces)."""
        return self.root.content

    def image(self, namespace: str, name: str) -> ImageRecord | None:
        """The stored image ``name`` (``pipeline.resolve.ImageIndex``: ``--image`` resolves here)."""
        return self._by_name.get(name) if namespace == self.namespace else None

    def images(self, namespace: str) -> list[ImageRecord]:
        """Every stored image of the namespace, by name."""
        return list(self.records) if namespace == self.namespace else []

    def blob_labels(self, digest: str) -> dict[str, str]:
        """The labels of the namespace's content record of ``digest`` (``keep_open=True``)."""
        blob = self.meta.blob(self.namespace, digest)
        return dict(blob.labels) if blob is not None else {}

    def entries(self) -> list[NamedEntry]:
        return [
            RootEntry(
                descriptor=r.target.descriptor(),
                name=r.name,
                annotations=dict(r.annotations),
                labels=dict(r.labels),
                record=r,
            )
            for r in self.records
        ]

    def blob_path(self, digest: Digest | str) -> Path:
        """Where a blob's file is (``export --link`` hard-links it)."""
        return self.content.blob_path(digest)

    def _locate(self, digest: Digest) -> Locator | None:
        size = self.content.size(digest)
        if size is None or not self._whole.exists(digest):
            return None
        return Locator(size, lambda: self.content.open(digest))

    def close(self) -> None:
        super().close()
        self._meta = None
        self._stack.close()
