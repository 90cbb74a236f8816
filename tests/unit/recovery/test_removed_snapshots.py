"""A snapshot unpacked again by a rebuild is damage repaired only where its record was lost:
one removed by hand (``ctr snapshots rm``, a pruning tool) is what containerd unpacks again on
the image's first use. ``rebuild -o`` of a healthy pruned node said damage was found, while in
place the same root was "nothing to repair" (note34)."""

from __future__ import annotations

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.recovery.reimport import lost_child_records
from ctrconv.recovery.report import RebuildReport


def _record(parent: bytes | None = None, children: tuple[bytes, ...] = ()) -> BucketTree:
    record = BucketTree(entries={K.KIND: b"\x02"})  # committed
    if parent is not None:
        record.entries[K.PARENT] = parent
    if children:
        record.entries[K.CHILDREN] = BucketTree(entries={c: b"" for c in children})
    return record


def _namespace(**snapshotters: dict[bytes, BucketTree]) -> BucketTree:
    return BucketTree(entries={K.SNAPSHOTS: BucketTree(entries={
        name.encode(): BucketTree(entries=records) for name, records in snapshotters.items()})})


def test_a_child_listed_without_a_record_is_a_lost_record_in_its_snapshotter_only() -> None:
    healthy = {b"base": _record(children=(b"top",)), b"top": _record(parent=b"base")}
    lost = {b"base": _record(children=(b"top",))}  # the parent still lists what meta.db lost
    assert lost_child_records(_namespace(overlayfs=healthy)) == frozenset()
    assert lost_child_records(_namespace(overlayfs=lost, native=healthy)) == frozenset({("overlayfs", "top")})


def test_a_removed_snapshot_is_unlinked_from_its_parent_so_nothing_reads_as_lost() -> None:
    # ``ctr snapshots rm top`` deletes its record and its parent's ``children`` entry at once
    removed = {b"base": _record()}
    assert lost_child_records(_namespace(overlayfs=removed)) == frozenset()
    assert lost_child_records(BucketTree()) == frozenset()


def test_only_snapshots_unpacked_for_lost_records_are_damage() -> None:
    report = RebuildReport(root="r", output="o")
    report.snapshots_unpacked = report.snapshots_unpacked_removed = 2
    assert not report.damage_found and report.to_json()["snapshots_unpacked_removed"] == 2
    report.snapshots_unpacked = 3
    assert report.damage_found
