"""BucketTree.load: the same tree as ``to_tree``, with equal short keys and values shared
(what keeps a re-import's copy of a 10,000-image meta.db small)."""

from __future__ import annotations

import random
import tracemalloc

from ctrconv.bolt import BoltFile, BucketTree
from ctrconv.bolt.writer import write_bolt


def _records_tree(n: int, seed: int = 7) -> BucketTree:
    """A meta.db-like tree: ``n`` blob records with repeated label names, timestamps and
    sizes, a few large values, nested and sequenced buckets."""
    rng = random.Random(seed)
    root = BucketTree()
    blobs = root.bucket(b"v1", b"default", b"content", b"blob", create=True)
    assert blobs is not None
    blobs.sequence = 42
    for i in range(n):
        rec = blobs.bucket(f"sha256:{i:064x}".encode(), create=True)
        assert rec is not None
        rec.put(b"createdat", b"\x01" + bytes([i % 3]) * 14)
        rec.put(b"size", bytes([rng.randrange(4)]))
        labels = rec.bucket(b"labels", create=True)
        assert labels is not None
        for j in range(rng.randrange(1, 4)):
            labels.put(f"containerd.io/gc.ref.content.l.{j}".encode(), f"sha256:{rng.randrange(50):064x}".encode())
        if i % 97 == 0:
            rec.put(b"blob", rng.randbytes(5000))
    return root


def test_load_is_the_tree_to_tree_reads(tmp_path):
    """Same buckets, sequences, keys and values as the reader's own materialisation."""
    path = tmp_path / "meta.db"
    write_bolt(path, _records_tree(600))
    with BoltFile(path) as db:
        loaded, plain = BucketTree.load(db.root), db.root.to_tree()
    assert loaded.to_plain() == plain.to_plain()
    assert loaded.value_count() == plain.value_count() > 1800


def test_load_shares_repeated_short_keys_and_values(tmp_path):
    """Equal label names and timestamps are one object after ``load`` (not after
    ``to_tree``), and the tree costs measurably less: fails if the sharing is dropped."""
    path = tmp_path / "meta.db"
    write_bolt(path, _records_tree(3000))
    with BoltFile(path) as db:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            loaded = BucketTree.load(db.root)
            shared_cost = tracemalloc.get_traced_memory()[0] - before
            plain = db.root.to_tree()
            plain_cost = tracemalloc.get_traced_memory()[0] - before - shared_cost
        finally:
            tracemalloc.stop()
    blobs = loaded.bucket(b"v1", b"default", b"content", b"blob")
    assert blobs is not None
    recs = [v for _, v in blobs.buckets()]
    assert recs[0].entries[b"createdat"] is recs[3].entries[b"createdat"]
    first_keys = [k for k in recs[0].entries]
    assert all(any(k is k2 for k2 in recs[1].entries) for k in first_keys if k in recs[1].entries)
    plain_recs = [v for _, v in plain.bucket(b"v1", b"default", b"content", b"blob").buckets()]  # type: ignore[union-attr]
    assert plain_recs[0].entries[b"createdat"] is not plain_recs[3].entries[b"createdat"]
    assert shared_cost < 0.9 * plain_cost, (shared_cost, plain_cost)
