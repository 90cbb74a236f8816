"""Records decoded from their leaf pages (``blobrecords.blobs`` for content records,
``blobrecords.backend_snapshots`` for a snapshotter's records) are the records, and the errors,
that ``read_blob`` and ``read_backend_snapshot`` over a ``Bucket`` per record give: on a sound
file and under random damage to its pages (differential)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from ctrconv.bolt import BoltFile, BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import blobrecords
from ctrconv.containerd.records import (
    BackendSnapshot,
    BlobRecord,
    go_time,
    read_backend_snapshot,
    read_blob,
    text,
    write_backend_snapshot,
    write_blob,
)
from ctrconv.errors import CtrconvError
from support.bolt_records import buckets_made, damaged_files, until_error

GC = "containerd.io/gc.ref.content"


def _labels(i: int) -> dict[str, str]:
    """None, one or two labels; record 5 has 60 (a labels bucket of its own page)."""
    return {f"{GC}.l.{j}": f"sha256:{j:064x}" for j in range(60 if i == 5 else i % 3)}


def _blob_records() -> list[BlobRecord]:
    """Records as containerd writes them: with labels (page-rooted), without (inline), many
    labels, one without a size."""
    return [BlobRecord("default", f"sha256:{i:064x}", 100 + i * 1000 if i != 3 else 0, _labels(i),
                       go_time(1_700_000_000_000_000_000 + i), go_time(1_700_000_000_000_000_001 + i))
            for i in range(12)]


def _write_blob(bucket: BucketTree, record: BlobRecord) -> None:
    write_blob(bucket, record)
    if record.size == 0:
        bucket.entries.pop(b"size")  # (a record without a size reads as 0)


def _backend_records() -> list[BackendSnapshot]:
    """A snapshotter's records: committed with a parent and usage, active without, a view,
    one kind byte containerd does not know."""
    kinds = ["committed", "active", "view", "kind-9"]
    return [BackendSnapshot(f"default/{i:02d}/sha256:{i:064x}", i + 1, kinds[i % 4],  # (in key order)
                            f"default/{i - 1:02d}/sha256:{i - 1:064x}" if i % 4 == 0 and i else None, _labels(i),
                            go_time(1_700_000_000_000_000_000 + i), go_time(1_700_000_000_000_000_001 + i),
                            i * 7 if kinds[i % 4] == "committed" else None,
                            i * 4096 if kinds[i % 4] == "committed" else None)
            for i in range(12)]


@dataclass(frozen=True)
class _Kind:
    """One kind of record: how to make them, write one, read them each way."""

    records: Callable[[], list[Any]]
    write: Callable[[BucketTree, Any], None]
    key: Callable[[Any], str]
    old: Callable[[Any, str], Any]
    new: Callable[[BoltFile, Any], Any]


KINDS = {
    "content": _Kind(_blob_records, _write_blob, lambda r: r.digest, lambda b, name: read_blob(b, "default", name),
                     lambda db, bucket: blobrecords.blobs(db, bucket, "default")),
    "snapshotter": _Kind(_backend_records, write_backend_snapshot, lambda r: r.key, read_backend_snapshot,
                         blobrecords.backend_snapshots),
    # (verify's reading: the timestamps checked, not kept)
    "snapshotter, no times": _Kind(
        lambda: [dataclasses.replace(r, created_at=None, updated_at=None) for r in _backend_records()],
        lambda bucket, r: write_backend_snapshot(bucket, next(o for o in _backend_records() if o.key == r.key)),
        lambda r: r.key, lambda b, name: read_backend_snapshot(b, name, times=False),
        lambda db, bucket: blobrecords.backend_snapshots(db, bucket, times=False)),
}


@pytest.mark.parametrize("times", [True, False])
def test_a_bad_timestamp_fails_whether_or_not_times_are_kept(tmp_path, times):
    """``times=False`` drops the decoded timestamps, not their check: a record whose
    ``createdat`` is not a Go time does not read, by either way of reading it."""
    from ctrconv.containerd import schema as K
    from ctrconv.containerd.records import SnapshotRecord, read_snapshot, write_snapshot

    tree = BucketTree()
    records = tree.bucket(b"records", create=True)
    snapshot = SnapshotRecord("default", "overlayfs", "k", "default/1/k", None,
                              created_at=go_time(1_700_000_000_000_000_000), updated_at=go_time(1_700_000_000_000_000_000))
    for record in _backend_records()[:2]:
        write_backend_snapshot(records.bucket(record.key.encode(), create=True), record)
        records.bucket(record.key.encode()).put(K.CREATED_AT, b"\x07bad")
    write_snapshot(records.bucket(b"k", create=True), snapshot)
    records.bucket(b"k").put(K.UPDATED_AT, b"\x01short")
    path = tmp_path / "meta.db"
    write_bolt(path, tree, page_size=4096)
    with BoltFile(path) as db:
        bucket = db.root.bucket(b"records")
        with pytest.raises(CtrconvError, match="timestamp"):
            list(blobrecords.backend_snapshots(db, bucket, times=times))
        with pytest.raises(CtrconvError, match="timestamp"):
            read_backend_snapshot(bucket.bucket(_backend_records()[0].key.encode()), "x", times=times)
        with pytest.raises(CtrconvError, match="timestamp"):
            read_snapshot(bucket.bucket(b"k"), "default", "overlayfs", "k", times=times)


def _write(path: Path, kind: _Kind) -> None:
    tree = BucketTree()
    parent = tree.bucket(b"records", create=True)
    for record in kind.records():
        kind.write(parent.bucket(kind.key(record).encode(), create=True), record)
    write_bolt(path, tree, page_size=4096)


def _both(db: BoltFile, kind: _Kind) -> tuple[object, object]:
    def old():
        return (kind.old(b, text(k)) for k, b in db.root.bucket(b"records").buckets())

    return until_error(old), until_error(lambda: kind.new(db, db.root.bucket(b"records")))


@pytest.mark.parametrize("name", sorted(KINDS))
def test_sound_records_read_without_a_bucket_each(tmp_path, monkeypatch, name):
    kind = KINDS[name]
    path = tmp_path / "meta.db"
    _write(path, kind)
    made = buckets_made(monkeypatch)
    with BoltFile(path) as db:
        old, new = _both(db, kind)
        made.clear()
        records, error = until_error(lambda: kind.new(db, db.root.bucket(b"records")))
    assert new == old and error is None
    assert records == kind.records()
    # a Bucket for "records" itself, and for the one record whose 60 labels fill more than a
    # page (a labels bucket rooted at a branch page: read the old way); none for the others
    assert made == [b"records", kind.key(records[5]).encode(), b"labels"], made


@pytest.mark.parametrize("name", sorted(KINDS))
def test_damaged_pages_give_the_same_records_and_errors(tmp_path, name):
    kind = KINDS[name]
    path = tmp_path / "meta.db"
    _write(path, kind)
    original = path.read_bytes()
    with BoltFile(path) as db:
        hwm = db.meta.pgid
    rng = random.Random(19)
    seen = set()
    for trial, db in damaged_files(path, original, lambda: rng.randrange(2, hwm), rng, 400):
        try:
            if db.root.bucket(b"records") is None:
                continue
            old, new = _both(db, kind)
        except CtrconvError:  # the root or the records bucket itself does not read
            continue
        assert new == old, trial
        seen.add("error" if old[1] else "clean")
        if old[0] != kind.records()[: len(old[0])]:
            seen.add("changed")
    # the damage reached every kind of answer: sound, records read differently, and errors
    assert seen == {"clean", "error", "changed"}, seen
