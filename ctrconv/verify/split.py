"""Image records read ahead of their checks, so the checks can be split over two processes.

verify's per-image checks (read, prove valid and judge each image's documents) share nothing
between images but caches; with two cores :func:`ctrconv.forked.map_halves` runs the second
half in a forked child, as ``ls`` does. The records are read first, up to the first that does
not decode, and that error is reported after the images before it were checked: the order of
a loop over the records, so the report is the same either way.
"""

from __future__ import annotations

from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.records import ImageRecord
from ctrconv.errors import CtrconvError

#: below this many images one process does them all (a fork costs more than it saves)
SPLIT_FROM = 2000


def image_records(meta: MetadataDB, namespace: str) -> tuple[list[ImageRecord], CtrconvError | None]:
    """The namespace's image records up to the first that does not read, and its error."""
    images: list[ImageRecord] = []
    try:
        for image in meta.images(namespace):
            images.append(image)
    except CtrconvError as exc:
        return images, exc
    return images, None
