"""Offline writer for a containerd root: content, meta.db records, GC labels, snapshots.

Entry points: :class:`ContainerdRootSink` with :class:`ImportOptions` (the root as a
:class:`~ctrconv.image.protocols.RootSink`: ``ctrconv import``, ``export --format
containerd-root``), over :func:`copy_images_to_root`.
"""

from ctrconv.sinks.containerd_root.importer import (
    ImportedImage,
    ImportReport,
    copy_images_to_root,
    platform_matcher,
    report_lines,
)
from ctrconv.sinks.containerd_root.options import ImportOptions
from ctrconv.sinks.containerd_root.sink import ContainerdRootSink

__all__ = ["ContainerdRootSink", "ImportOptions", "ImportReport", "ImportedImage", "copy_images_to_root", "platform_matcher", "report_lines"]
