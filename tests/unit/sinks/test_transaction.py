"""The root transaction's change check (``transaction.fingerprint``): it keeps a hash of each
bolt file as read instead of a second copy of its tree (issue 17: a rebuild of 10,000 images
held meta.db three times over), and must still see every change a tree comparison would."""

from __future__ import annotations

from ctrconv.bolt.tree import BucketTree
from ctrconv.sinks.containerd_root.transaction import fingerprint


def _tree(order: list[bytes], sequence: int = 0) -> BucketTree:
    tree = BucketTree()
    v1 = tree.bucket(b"v1", create=True)
    assert v1 is not None
    v1.sequence = sequence
    for key in order:
        v1.put(key, key * 2)
    sub = tree.bucket(b"v1", b"sub", create=True)
    assert sub is not None
    sub.put(b"k", b"v")
    return tree


def test_equal_trees_have_equal_fingerprints_whatever_the_insertion_order() -> None:
    assert fingerprint(_tree([b"a", b"b", b"c"])) == fingerprint(_tree([b"c", b"a", b"b"]))
    assert fingerprint(BucketTree()) == fingerprint(BucketTree())


def test_every_kind_of_change_changes_the_fingerprint() -> None:
    base = _tree([b"a", b"b"])
    changed = []
    t = _tree([b"a", b"b"]); t.bucket(b"v1").put(b"a", b"x")  # a value
    changed.append(t)
    changed.append(_tree([b"a", b"b"], sequence=1))  # a sequence
    changed.append(_tree([b"a"]))  # a key removed
    t = _tree([b"a", b"b"]); t.bucket(b"v1", b"sub", create=True).put(b"k2", b"")  # deeper, empty value
    changed.append(t)
    t = _tree([b"a", b"b"]); t.bucket(b"v1", b"empty", create=True)  # an empty bucket
    changed.append(t)
    # the same bytes split differently between key and value, or a bucket for a value
    split_a, split_b = BucketTree(), BucketTree()
    split_a.put(b"ab", b"c")
    split_b.put(b"a", b"bc")
    as_value, as_bucket = BucketTree(), BucketTree()
    as_value.put(b"k", b"")
    as_bucket.bucket(b"k", create=True)
    prints = [fingerprint(t) for t in changed]
    assert fingerprint(base) not in prints and len(set(prints)) == len(prints)
    assert all(t != base for t in changed)
    assert fingerprint(split_a) != fingerprint(split_b)
    assert fingerprint(as_value) != fingerprint(as_bucket)
