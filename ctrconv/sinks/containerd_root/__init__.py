"""Offline writer for a containerd root: content, meta.db records, GC labels, snapshots.

Entry point: :func:`copy_images_to_root` (used by ``ctrconv import`` and by
``ctrconv export --format containerd-root``).
"""

from ctrconv.sinks.containerd_root.importer import (
    ImportedImage,
    ImportReport,
    copy_images_to_root,
    platform_matcher,
    report_lines,
)

__all__ = ["ImportReport", "ImportedImage", "copy_images_to_root", "platform_matcher", "report_lines"]
