"""Records read ahead of their checks: image records, so the checks can be split over two
processes, and snapshot records, read once for the three checks that look at them.

verify's per-image checks (read, prove valid and judge each image's documents) share nothing
between images but caches; with two cores :func:`ctrconv.forked.map_halves` runs the second
half in a forked child, as ``ls`` does. The records are taken undecoded and decoded where they
are checked; the first that does not decode is reported after the images before it were
checked: the order of a loop over the records, so the report is the same either way.
"""

from __future__ import annotations

from ctrconv.containerd.imagerecords import Element, StoredImages
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.records import SnapshotRecord
from ctrconv.errors import CtrconvError
from ctrconv.verify.problems import Report

#: below this many images one process does them all (a fork costs more than it saves)
SPLIT_FROM = 2000


def image_elements(meta: MetadataDB, namespace: str) -> tuple[StoredImages | None, list[Element], CtrconvError | None]:
    """The namespace's image records as stored, undecoded (each is decoded where it is
    checked: in the process that checks it, as ``ls`` does), up to the first the walk of the
    records cannot read, and that error (also when the namespace's ``images`` cannot be read
    at all: no records then). A record that does not decode stops the checks at itself."""
    try:
        stored = meta.stored_images(namespace)
    except CtrconvError as exc:
        return None, [], exc
    return stored, stored.elements, stored.error


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
                for rec in self._meta.snapshots(namespace, snapshotter, times=False):  # (no check reads them)
                    records.append(rec)
            except CtrconvError as exc:
                error = exc
            self._read[key] = (records, error)
        records, error = self._read[key]
        if error is not None:
            report.add("unreadable-record", what, location, str(error))
        return records
