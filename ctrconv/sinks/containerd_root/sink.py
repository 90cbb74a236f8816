"""A containerd root as a sink: ``ImportOptions`` (typed, named like the CLI's options) and
:class:`ContainerdRootSink`, the :class:`~ctrconv.image.protocols.RootSink` every import goes
through (``import``: any file or registry source; ``export --format containerd-root``: another
root's namespace; ``rebuild``: the root itself).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ctrconv.image.protocols import ImageSource, NamedEntry
from ctrconv.sinks.containerd_root.importer import ImportReport, copy_images_to_root
from ctrconv.sinks.containerd_root.options import ImportOptions


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
        return copy_images_to_root(source, self.root, self.namespace, self.options, entries=entries,
                                   progress=self.progress)
