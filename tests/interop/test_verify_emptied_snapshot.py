"""A committed snapshot whose files are gone (its ``fs`` emptied): ``verify`` without ``--deep``
passed a node where no container could start (a red-team run emptied the base layer every image of
``default`` sits on); the snapshotter counted the tree's inodes at its commit, so an empty tree
is found with one directory read per snapshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ctrconv.containerd.root import ContainerdRoot

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_an_emptied_layer_tree_is_a_problem_and_rebuild_unpacks_it_again(line, realnode_set_for, cli, tmp_path):
    corpus = realnode_set_for(line)
    root = corpus.copy_root("node", tmp_path / "root")
    croot = ContainerdRoot(root)
    with croot.open_snapshotter("overlayfs") as backend:
        victim = max((s for s in backend.snapshots(times=False) if s.kind == "committed" and (s.inodes or 0) > 3),
                     key=lambda s: s.inodes or 0)
    fs = croot.snapshot_fs("overlayfs", victim.id)
    for entry in list(fs.iterdir()):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    result = cli("verify", "--root", str(root), "-A", "--json")
    assert result.code == 1
    assert [p["object"] for p in result.json["problems"] if p["kind"] == "emptied-snapshot"] == \
        [f"backend snapshot overlayfs/{victim.key}"], result.json["problems"]
    assert cli("verify", "--root", str(corpus.root("node")), "-A", "-q", "--ignore-lock").code == 0
    rebuilt = cli("rebuild", "--root", str(root), "-q")
    assert rebuilt.code == 0, rebuilt.stderr
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0
