"""Records read ahead of their checks: image records, so the checks can be split over two
processes, and snapshot records, read once for the three checks that look at them.

verify's per-image checks (read, prove valid and judge each image's documents) share nothing
between images but caches; with two cores :func:`ctrconv.forked.map_halves` runs the second
half in a forked child, as ``ls`` does. The records are read first, up to the first that does
not decode, and that error is reported after the images before it were checked: the order of
a loop over the records, so the report is the same either way.
"""

from __future__ import annotations

from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.records import ImageRecord, SnapshotRecord
from ctrconv.errors import CtrconvError
from ctrconv.verify.problems import Report

#: below this many images one process does them all (a fork costs more than it saves)
SPLIT_FROM = 2000


def image_records(meta: MetadataDB, namespace: str) -> tuple[list[ImageRecord], CtrconvError | None]:
    """The namespace's image records up to the first that does not read, and its error. Each
    is kept as the checks read it: name and target (labels, annotations and timestamps were
    decoded, and so checked, when the record was read; 20,000 held whole cost ~25 MiB)."""
    images: list[ImageRecord] = []
    try:
        for image in meta.images(namespace):
            images.append(ImageRecord(image.namespace, image.name, image.target))
    except CtrconvError as exc:
        return images, exc
    return images, None


class SnapshotRecords:
    """A snapshotter's records in a namespace, read once: the namespace check, the snapshotter
    cross-check and the snapshot chain check each looked at all of them (4,850 records read
    three times at 10,000 images). A record that does not read is reported by each asker, with
    its own wording, after the records before it, as each one's reading reported it."""

    def __init__(self, meta: MetadataDB) -> None:
        self._meta = meta
        self._read: dict[tuple[str, str], tuple[list[SnapshotRecord], CtrconvError | None]] = {}

    def __call__(self, report: Report, what: str, location: str, namespace: str, snapshotter: str) -> list[SnapshotRecord]:
        """The records up to the first that does not read; that one reported as ``what``."""
        key = (namespace, snapshotter)
        if key not in self._read:
            records: list[SnapshotRecord] = []
            error: CtrconvError | None = None
            try:
                for rec in self._meta.snapshots(namespace, snapshotter):
                    records.append(rec)
            except CtrconvError as exc:
                error = exc
            self._read[key] = (records, error)
        records, error = self._read[key]
        if error is not None:
            report.add("unreadable-record", what, location, str(error))
        return records
