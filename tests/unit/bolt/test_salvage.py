"""Salvage of a whole bolt file walks one meta's tree (issue 17: a rebuild of 10,000 images
built the older meta's tree too, ~50 MiB, only to backfill buckets that were not damaged)."""

from __future__ import annotations

from pathlib import Path

from ctrconv.bolt import salvage as salvage_module
from ctrconv.bolt.salvage import salvage
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt


def _tree() -> BucketTree:
    tree = BucketTree()
    for i in range(300):
        bucket = tree.bucket(b"v1", b"ns", f"key{i:04d}".encode(), create=True)
        assert bucket is not None
        bucket.put(b"value", b"x" * 100)
    return tree


def _count_root_walks(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """The root pages salvage starts a tree walk from, in order (one per meta page walked)."""
    walks: list[int] = []
    original = salvage_module._Walker.tree

    def counting(self, pgid, tree, path_):  # type: ignore[no-untyped-def]
        if path_ == ():
            walks.append(pgid)
        return original(self, pgid, tree, path_)

    monkeypatch.setattr(salvage_module._Walker, "tree", counting)
    return walks


def test_a_whole_file_is_salvaged_from_one_walk(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "meta.db"
    write_bolt(path, _tree())
    walks = _count_root_walks(monkeypatch)
    result = salvage(path)
    assert result.tree == _tree() and not result.damage
    assert len(walks) == 1


def test_a_damaged_tree_still_walks_the_other_meta(tmp_path: Path, monkeypatch) -> None:
    """Damage under the newest meta: the older meta's tree is walked too (to backfill)."""
    path = tmp_path / "meta.db"
    write_bolt(path, _tree())
    with open(path, "r+b") as f:  # a leaf page's header zeroed: damage below the root
        data = f.read()
        page_size = 4096
        last = len(data) // page_size - 1
        f.seek(last * page_size)
        f.write(bytes(16))
    walks = _count_root_walks(monkeypatch)
    result = salvage(path)
    assert result.damage
    assert len(walks) >= 2  # both metas (then, the root being damaged, a search for orphans)


def test_salvage_shares_equal_short_keys_and_values(tmp_path: Path) -> None:
    """The salvaged tree is the file's tree, with one ``bytes`` object for equal short keys and
    values as ``BucketTree.load`` shares them (a rebuild holds every salvaged tree until its
    records are written): fails if the sharing is dropped. Long keys and values are not shared."""
    tree = BucketTree()
    for i in range(300):
        record = tree.bucket(b"v1", b"ns", f"sha256:{i:064x}".encode(), create=True)
        labels = record.bucket(b"labels", create=True)
        assert record is not None and labels is not None
        record.put(b"size", b"\x05")
        record.put(b"createdat", b"\x01" + bytes(14))
        labels.put(b"containerd.io/uncompressed", f"sha256:{i:064x}".encode())
    path = tmp_path / "meta.db"
    write_bolt(path, tree)
    result = salvage(path)
    assert result.tree == tree and not result.damage
    records = [value for _, value in result.tree.bucket(b"v1", b"ns").buckets()]
    first = records[0]
    for record in records[1:]:
        for short in (b"size", b"createdat", b"labels"):
            [mine] = [key for key in record.entries if key == short]
            [theirs] = [key for key in first.entries if key == short]
            assert mine is theirs, short
        assert record.entries[b"size"] is first.entries[b"size"]
        assert record.entries[b"createdat"] is first.entries[b"createdat"]
        label = record.bucket(b"labels").entries[b"containerd.io/uncompressed"]
        assert label is not first.bucket(b"labels").entries[b"containerd.io/uncompressed"]  # 71 bytes: its own
