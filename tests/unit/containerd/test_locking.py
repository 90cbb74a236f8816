"""Copies of a live bolt file: consistent, retried while containerd commits, refused if never."""

from __future__ import annotations

import pytest

from ctrconv.bolt.reader import read_tree
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import locking
from ctrconv.errors import LockedError


def _db(path, txid: int = 5):
    tree = BucketTree()
    tree.bucket(b"v1", create=True).put(b"k", b"v")
    write_bolt(path, tree, page_size=4096, txid=txid)
    return tree


def test_a_quiet_file_is_copied_once(tmp_path):
    tree = _db(tmp_path / "meta.db")
    copy = locking.private_copy(tmp_path / "meta.db", tmp_path)
    assert read_tree(copy) == tree
    assert locking._current_txid(copy) == locking._current_txid(tmp_path / "meta.db")


def test_one_commit_during_the_copy_is_fine_two_are_retried(tmp_path, monkeypatch):
    _db(tmp_path / "meta.db")
    seen = iter([5, 6, 7, 9, 9, 9])  # 5 -> 6: accepted at once
    monkeypatch.setattr(locking, "_current_txid", lambda path: next(seen))
    locking.private_copy(tmp_path / "meta.db", tmp_path)
    seen = iter([5, 7, 7, 8])  # 5 -> 7 (two commits): copied again, then 7 -> 8
    monkeypatch.setattr(locking, "_current_txid", lambda path: next(seen))
    locking.private_copy(tmp_path / "meta.db", tmp_path)
    with pytest.raises(StopIteration):
        next(seen)


def test_a_file_that_never_holds_still_is_refused(tmp_path, monkeypatch):
    _db(tmp_path / "meta.db")
    txid = iter(range(0, 1000, 2))
    monkeypatch.setattr(locking, "_current_txid", lambda path: next(txid))
    monkeypatch.setattr(locking.time, "sleep", lambda s: None)
    with pytest.raises(LockedError, match="kept changing"):
        locking.private_copy(tmp_path / "meta.db", tmp_path, attempts=3)


def test_a_file_with_both_metas_damaged_is_copied_for_salvage(tmp_path):
    _db(tmp_path / "meta.db")
    with open(tmp_path / "meta.db", "r+b") as f:
        f.write(bytes(8192))
    assert locking._current_txid(tmp_path / "meta.db") is None
    copy = locking.private_copy(tmp_path / "meta.db", tmp_path)
    assert copy.read_bytes() == (tmp_path / "meta.db").read_bytes()


def test_the_second_meta_is_found_when_the_first_is_damaged(tmp_path):
    _db(tmp_path / "meta.db", txid=8)
    before = locking._current_txid(tmp_path / "meta.db")
    with open(tmp_path / "meta.db", "r+b") as f:
        f.write(bytes(4096))
    after = locking._current_txid(tmp_path / "meta.db")
    assert after is not None and after <= before
