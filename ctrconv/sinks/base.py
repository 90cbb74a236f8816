"""What the layout sinks share: the protocols they implement, and where a blob lives in a layout.

The :class:`~ctrconv.image.protocols.Sink` protocol (call order, verification) and the objects
the pipeline hands to a sink are declared in :mod:`ctrconv.image.protocols`; they are imported
here because every sink module needs them.
"""

from __future__ import annotations

from ctrconv.digest import Digest
from ctrconv.image.protocols import BlobReader, ExportedImage, Sink

__all__ = ["BlobReader", "ExportedImage", "Sink", "blob_path"]


def blob_path(digest: Digest | str) -> str:
    """``blobs/<alg>/<hex>``: where a blob lives in an OCI layout (and ctr's tar)."""
    d = Digest.parse(digest)
    return f"blobs/{d.algorithm}/{d.hex}"
