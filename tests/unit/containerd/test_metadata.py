"""``MetadataDB`` read paths written for speed say what the generic reading says."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from ctrconv.bolt import BoltFile, BucketTree
from ctrconv.bolt import reader as bolt_reader
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import schema as K
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.records import BlobRecord, go_time, text, write_blob
from ctrconv.errors import CtrconvError
from support.bolt_records import buckets_made, damaged_files


def _write(path: Path) -> None:
    """``v1/default/content/blob`` with 150 records (several leaf pages), some labelled."""
    tree = BucketTree()
    blob = tree.bucket(K.V1, b"default", K.CONTENT, K.BLOB, create=True)
    assert blob is not None
    for i in range(150):
        labels = {f"containerd.io/gc.ref.content.l.{j}": f"sha256:{j:064x}" for j in range(i % 3)}
        digest = "sha256:" + hashlib.sha256(b"%d" % i).hexdigest()  # keys differing early: damage
        sub = blob.bucket(digest.encode(), create=True)  # later in one leaves them in order
        assert sub is not None
        write_blob(sub, BlobRecord("default", digest, i, labels, go_time(i), go_time(i)))
    blob.put(b"a plain value", b"is no record")
    write_bolt(path, tree, page_size=4096)


def _outcome(read) -> object:  # noqa: ANN001
    try:
        return read()
    except CtrconvError as exc:
        return type(exc), str(exc)


def _keys_the_old_way(meta: MetadataDB) -> frozenset[str]:
    blobs = meta.db.root.bucket(K.V1, b"default", K.CONTENT, K.BLOB)
    return frozenset() if blobs is None else frozenset(text(k) for k, _ in blobs.buckets())


def test_content_digests_are_the_record_keys_without_a_bucket_each(tmp_path, monkeypatch):
    path = tmp_path / "meta.db"
    _write(path)
    made = buckets_made(monkeypatch)
    with BoltFile(path) as db:
        meta = MetadataDB(db)
        made.clear()
        keys = meta.content_digests("default")
        assert made == [b"default", K.CONTENT, K.BLOB]  # the path to the records, none per record
        assert keys == _keys_the_old_way(meta) and len(keys) == 150
        assert meta.content_digests("absent") == frozenset()


def test_content_digests_under_damage_give_the_keys_and_errors_of_buckets(tmp_path):
    path = tmp_path / "meta.db"
    _write(path)
    original = path.read_bytes()
    with BoltFile(path) as db:
        hwm = db.meta.pgid
        # mostly the pages of ``blob`` itself (most pages are labelled records', read by neither)
        sound = _keys_the_old_way(MetadataDB(db))
        walked = [p.pgid for p in db.root.bucket(K.V1, b"default", K.CONTENT, K.BLOB).pages()]
    rng = random.Random(29)
    kinds = set()
    pages = lambda: rng.choice(walked) if rng.random() < 0.8 else rng.randrange(2, hwm)  # noqa: E731
    for trial, db in damaged_files(path, original, pages, rng, 300, most=3, near_header=0.3, header=512):
        try:
            meta = MetadataDB(db)
        except CtrconvError:  # the root page itself does not read
            continue
        old = _outcome(lambda: _keys_the_old_way(meta))
        new = _outcome(lambda: meta.content_digests("default"))
        assert new == old, trial
        kinds.add("error" if isinstance(old, tuple) else "whole" if old == sound else "changed")
    assert kinds == {"error", "whole", "changed"}, kinds


def test_a_record_with_a_short_bucket_header_fails_content_digests_as_buckets_does(tmp_path):
    path = tmp_path / "meta.db"
    _write(path)
    with BoltFile(path) as db:
        leaf = next(p for p in db.root.bucket(K.V1, b"default", K.CONTENT, K.BLOB).pages() if p.flags == 0x02)
        at = leaf.pgid * db.page_size + 16 + 16 * 3 + 12  # the fourth element's value size
    data = bytearray(path.read_bytes())
    data[at:at + 4] = (8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with BoltFile(path) as db:
        meta = MetadataDB(db)
        old = _outcome(lambda: _keys_the_old_way(meta))
        assert old[0] is bolt_reader.CorruptPage and "bucket header" in old[1], old  # type: ignore[index]
        assert _outcome(lambda: meta.content_digests("default")) == old
