"""Content records decoded from their leaf pages (``blobrecords.blobs``) are the records, and
the errors, that ``read_blob`` over a ``Bucket`` per record gives: on a sound file and under
random damage to its pages (differential)."""

from __future__ import annotations

import random
from pathlib import Path

from ctrconv.bolt import BoltFile, BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import blobrecords
from ctrconv.containerd.records import BlobRecord, go_time, read_blob, text, write_blob
from ctrconv.errors import CtrconvError
from support.bolt_records import buckets_made, damaged_files, until_error

GC = "containerd.io/gc.ref.content"


def _records() -> list[BlobRecord]:
    """Records as containerd writes them: with labels (page-rooted), without (inline), many
    labels (a labels bucket of its own page), one without a size."""
    out = []
    for i in range(12):
        labels = {f"{GC}.l.{j}": f"sha256:{j:064x}" for j in range(i % 3)}
        if i == 5:
            labels = {f"{GC}.l.{j}": f"sha256:{j:064x}" for j in range(60)}
        out.append(BlobRecord("default", f"sha256:{i:064x}", 100 + i * 1000, labels,
                              go_time(1_700_000_000_000_000_000 + i), go_time(1_700_000_000_000_000_001 + i)))
    return out


def _write(path: Path) -> None:
    tree = BucketTree()
    blob = tree.bucket(b"blob", create=True)
    for rec in _records():
        sub = blob.bucket(rec.digest.encode(), create=True)
        write_blob(sub, rec)
        if rec.digest.endswith("3"):
            sub.entries.pop(b"size")
    write_bolt(path, tree, page_size=4096)


def _both(db: BoltFile) -> tuple[object, object]:
    def old():
        bucket = db.root.bucket(b"blob")
        return (read_blob(b, "default", text(k)) for k, b in bucket.buckets())

    def new():
        return blobrecords.blobs(db, db.root.bucket(b"blob"), "default")

    return until_error(old), until_error(new)


def test_sound_records_read_without_a_bucket_each(tmp_path, monkeypatch):
    path = tmp_path / "meta.db"
    _write(path)
    made = buckets_made(monkeypatch)
    with BoltFile(path) as db:
        old, new = _both(db)
        made.clear()
        records, error = until_error(lambda: blobrecords.blobs(db, db.root.bucket(b"blob"), "default"))
    assert new == old and error is None
    assert len(records) == 12 and len(records[5].labels) == 60 and records[3].size == 0
    # a Bucket for "blob" itself, and for the one record whose 60 labels fill more than a page
    # (a labels bucket rooted at a branch page: read the old way); none for the other records
    assert made == [b"blob", records[5].digest.encode(), b"labels"], made


def test_damaged_pages_give_the_same_records_and_errors(tmp_path):
    path = tmp_path / "meta.db"
    _write(path)
    original = path.read_bytes()
    with BoltFile(path) as db:
        hwm = db.meta.pgid
    rng = random.Random(19)
    kinds = set()
    for trial, db in damaged_files(path, original, lambda: rng.randrange(2, hwm), rng, 400):
        try:
            if db.root.bucket(b"blob") is None:
                continue
            old, new = _both(db)
        except CtrconvError:  # the root or "blob" bucket itself does not read
            continue
        assert new == old, trial
        kinds.add("error" if old[1] else "clean")
        if old[0] != _records()[: len(old[0])]:
            kinds.add("changed")
    # the damage reached every kind of answer: sound, records read differently, and errors
    assert kinds == {"clean", "error", "changed"}, kinds
