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
