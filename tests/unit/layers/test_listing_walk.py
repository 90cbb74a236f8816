"""``walk_entries``/``compare_walks`` (the streaming comparison verify --deep and rebuild use)
find what ``tree_listing``/``compare_listings`` find, with each inode hashed once."""

from __future__ import annotations

import os
from pathlib import Path

from ctrconv.layers import listing
from ctrconv.layers.listing import compare_listings, compare_walks, tree_listing, walk_entries


def _tree(top: Path) -> None:
    for rel, data in {"a/b/c": b"1", "a-c": b"2", "z/y": b"3", "a/b/d": b"4"}.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(data)
        os.utime(top / rel, ns=(0, 0))
    os.link(top / "a/b/c", top / "z/link")
    os.symlink("a/b", top / "s")


def test_the_same_differences_as_whole_listings(tmp_path: Path) -> None:
    want, got = tmp_path / "want", tmp_path / "got"
    for top in (want, got):
        _tree(top)
    (got / "a/b/d").unlink()
    (got / "a/new").write_bytes(b"n")
    os.chmod(got / "z/y", 0o600)
    (got / "a-c").write_bytes(b"changed")
    os.utime(got / "a-c", ns=(0, 0))
    streamed, total = compare_walks(walk_entries(want), walk_entries(got))
    whole = compare_listings(tree_listing(want), tree_listing(got))
    assert total == len(streamed) == len(whole)
    assert sorted(streamed) == sorted(whole)


def test_hard_links_are_grouped_and_hashed_once(tmp_path: Path, monkeypatch) -> None:
    _tree(tmp_path)
    hashed: list[str] = []
    real = listing._sha256
    monkeypatch.setattr(listing, "_sha256", lambda p: hashed.append(p) or real(p))
    entries = {e["path"]: e for e in walk_entries(tmp_path)}
    assert entries["/z/link"]["hardlink_group"] == entries["/a/b/c"]["hardlink_group"] == "/a/b/c"
    assert entries["/z/link"]["sha256"] == entries["/a/b/c"]["sha256"]
    assert len(hashed) == 4  # four inodes with contents, five names


def test_the_first_differences_are_kept_and_all_are_counted(tmp_path: Path) -> None:
    want, got = tmp_path / "want", tmp_path / "got"
    want.mkdir()
    got.mkdir()
    for i in range(30):
        (want / f"f{i:02d}").write_bytes(b"x")
    problems, total = compare_walks(walk_entries(want), walk_entries(got), limit=5)
    assert total == 30 and problems == [f"/f{i:02d}: missing" for i in range(5)]
