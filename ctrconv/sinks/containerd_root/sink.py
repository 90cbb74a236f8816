"""A containerd root as a sink: ``ImportOptions`` (typed, named like the CLI's options) and
:class:`ContainerdRootSink`, the :class:`~ctrconv.image.protocols.RootSink` every import goes
through (``import``: any file or registry source; ``export --format containerd-root``: another
root's namespace; ``rebuild``: the root itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ctrconv.image.protocols import ImageSource, NamedEntry
from ctrconv.sinks.containerd_root.importer import ImportReport, copy_images_to_root


@dataclass
class ImportOptions:
    """How images are written into a root. Field names are ``ctrconv import``'s option names
    (``unpack`` is ``--no-unpack`` negated, ``backup`` ``--no-backup``); defaults are the CLI's.
    See :func:`ctrconv.sinks.containerd_root.copy_images_to_root` for what each does."""

    snapshotter: str = "overlayfs"
    unpack: bool = True
    #: ``--platform`` (repeatable; None: the host's)
    platform: Sequence[str] | None = None
    all_platforms: bool = False
    #: the input's single image stored under this name
    name: str | None = None
    pin: bool = False
    #: ``--cri`` True, ``--no-cri-names`` False; None: CRI records in ``k8s.io`` only
    cri: bool | None = None
    #: the line that will run a new root (1.6, 1.7, 2.x; None: 1.6)
    containerd_version: str | None = None
    backup: bool = True
    verify_existing: bool = False
    #: ``--max-layer-size`` in bytes (a decompression-bomb limit; None: free disk only)
    max_layer_size: int | None = None
    jobs: int | None = None
    #: the platform whose manifest is unpacked (None: the host's best match; ``--platform``
    #: given once sets it, like ``ctr images import --platform``)
    unpack_platform: str | None = None
    #: label images ``io.cri-containerd.image=managed`` in ``k8s.io`` (library only)
    cri_labels: bool = True
    #: keep the present manifests of unselected platforms (library only: ``rebuild``)
    keep_partial: bool = False


class ContainerdRootSink:
    """One namespace of a containerd root (stopped), written in one transaction.

    :meth:`write` plans the source's entries with ``ctr images import``'s platform rules,
    copies every blob verified into the content store, unpacks, merges records the way
    containerd updates them and commits meta.db last; a failure leaves the root as it was.
    """

    def __init__(self, root: str | os.PathLike[str], namespace: str = "default",
                 options: ImportOptions | None = None, *, progress: Any = None) -> None:
        self.root = Path(root)
        self.namespace = namespace
        self.options = options or ImportOptions()
        self.progress = progress

    def write(self, source: ImageSource, entries: Sequence[NamedEntry] | None = None) -> ImportReport:
        """Write ``entries`` (default: every named entry) of ``source``; the report says what changed."""
        o = self.options
        return copy_images_to_root(
            source, self.root, self.namespace, entries=entries, snapshotter=o.snapshotter, unpack=o.unpack,
            platforms=list(o.platform) if o.platform else None, all_platforms=o.all_platforms, name=o.name,
            pin=o.pin, cri_labels=o.cri_labels, containerd_version=o.containerd_version, backup=o.backup,
            progress=self.progress, max_layer_bytes=o.max_layer_size, jobs=o.jobs,
            unpack_platform=o.unpack_platform, keep_partial=o.keep_partial, cri=o.cri,
            verify_existing=o.verify_existing,
        )
