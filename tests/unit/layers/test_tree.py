"""Chain IDs, snapshot usage, native copies and tree listings."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from ctrconv.errors import InvalidDigestError
from ctrconv.layers import (
    HashingReader,
    apply_layer,
    chain_id,
    chain_ids,
    compare_listings,
    copy_tree,
    disk_usage,
    tree_listing,
)
from support.layer_tars import MTIME, LayerTar

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)")

A, B, C = ("sha256:" + c * 64 for c in "abc")


def test_chain_ids_follow_containerd_identity() -> None:
    second = "sha256:" + hashlib.sha256(f"{A} {B}".encode()).hexdigest()
    third = "sha256:" + hashlib.sha256(f"{second} {C}".encode()).hexdigest()
    assert chain_ids([A, B, C]) == [A, second, third]
    assert chain_id([A]) == A and chain_id([A, B, C]) == third
    assert chain_ids([]) == []
    with pytest.raises(InvalidDigestError):
        chain_ids(["sha256:nothex"])


def test_hashing_reader_counts_and_drains() -> None:
    reader = HashingReader(io.BytesIO(b"abcdef"))
    assert reader.read_exact(2) == b"ab"
    assert reader.drain() == 4
    assert reader.bytes_read == 6
    assert reader.digest == "sha256:" + hashlib.sha256(b"abcdef").hexdigest()


def rich_layer() -> bytes:
    return (LayerTar()
            .dir("d", mode=0o2750, gid=5, xattrs={"user.x": "1"})
            .file("d/setuid", b"s" * 10_000, mode=0o4755, uid=1000)
            .file("d/hard", b"h", mode=0o600).hardlink("d/hard2", "d/hard", mode=0o600)
            .symlink("d/link", "../nowhere", uid=3)
            .device("d/null", tarfile.CHRTYPE, 1, 3, mode=0o666)
            .device("d/fifo", tarfile.FIFOTYPE, mode=0o640)
            .file("d/zero", b"", mode=0o000)
            .data())


@needs_root
def test_disk_usage_counts_unique_inodes_with_root(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    apply_layer(io.BytesIO(rich_layer()), root, mode="naive")
    usage = disk_usage(root)
    # root, d, setuid, hard (+hard2), link, null, fifo, zero
    assert usage.inodes == 8
    blocks = sum(os.lstat(p).st_blocks for p in
                 [root, root / "d", *[root / "d" / n for n in
                                      ("setuid", "hard", "link", "null", "fifo", "zero")]])
    assert usage.size == blocks * 512


@needs_root
def test_copy_tree_preserves_everything(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    os.chmod(src, 0o751)
    apply_layer(io.BytesIO(rich_layer()), src, mode="naive")
    os.setxattr(src / "d", "trusted.overlay.opaque", b"y")
    copy_tree(src, dst)
    want, got = tree_listing(src), tree_listing(dst)
    assert compare_listings(want, got, ignore=lambda _field, _entry: False) == []
    assert got["/d/hard2"]["hardlink_group"] == "/d/hard"
    assert got["/d"]["xattrs"] == {"trusted.overlay.opaque": "y", "user.x": "1"}
    assert got["/d/setuid"]["mode"] == "4755" and got["/"]["mode"] == "0751"
    assert os.lstat(dst / "d").st_mtime_ns == MTIME * 1_000_000_000


@needs_root
def test_listing_shape_matches_the_fixture_builder(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    apply_layer(io.BytesIO(rich_layer()), root, mode="naive")
    listing = tree_listing(root)
    assert list(listing) == sorted(listing)
    assert listing["/d/null"]["rdev"] == [1, 3] and listing["/d/null"]["type"] == "char"
    assert listing["/d/link"] == {**listing["/d/link"], "type": "symlink", "link": "../nowhere",
                                  "size": len("../nowhere"), "uid": 3}
    setuid = listing["/d/setuid"]
    assert setuid["sha256"] == "sha256:" + hashlib.sha256(b"s" * 10_000).hexdigest()
    assert setuid["mode"] == "4755" and setuid["size"] == 10_000
    assert listing["/d/fifo"]["type"] == "fifo" and listing["/d/fifo"]["size"] == 0
    assert "hardlink_group" not in listing["/d/setuid"]


def test_compare_listings_reports_and_ignores() -> None:
    base = {"path": "/a", "type": "file", "mode": "0644", "mtime_ns": 1}
    whiteout = {"path": "/w", "type": "char", "rdev": [0, 0], "mtime_ns": 5}
    directory = {"path": "/d", "type": "dir", "mtime_ns": 5}
    expected = [base, whiteout, directory]
    actual = {"/a": {**base, "mode": "0600"}, "/w": {**whiteout, "mtime_ns": 9},
              "/d": {**directory, "mtime_ns": 7}, "/x": {"path": "/x", "type": "file"}}
    assert compare_listings(expected, actual) == [
        "/a: mode '0644' != '0600'",
        "/x: unexpected file",
    ]
    assert "/a: missing" in compare_listings(expected, {})
    strict = compare_listings(expected, actual, ignore=lambda _f, _e: False)
    assert "/d: mtime_ns 5 != 7" in strict and "/w: mtime_ns 5 != 9" in strict


def test_usage_of_a_plain_tree(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 5000)
    os.link(tmp_path / "f", tmp_path / "g")
    os.symlink("f", tmp_path / "s")
    usage = disk_usage(tmp_path)
    assert usage.inodes == 3
    # the hard link g is counted once: f's blocks, the directory's and the symlink's
    assert usage.size == sum(os.lstat(tmp_path / n).st_blocks for n in (".", "f", "s")) * 512
    assert usage.size < sum(os.lstat(tmp_path / n).st_blocks for n in (".", "f", "g", "s")) * 512


def test_copy_tree_keeps_holes(tmp_path: Path) -> None:
    """A sparse file (a container's database, a loop image) is copied extent by extent: a
    ``rebuild -o`` wrote a 500 MiB hole as 500 MiB of zeros (a red-team run)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    sparse = src / "disk.img"
    with open(sparse, "wb") as f:
        f.truncate(256 << 20)
        f.seek(1 << 20)
        f.write(b"a" * 4096)
        f.seek((200 << 20) + 7)
        f.write(b"b" * 10)
    (src / "tail-hole").write_bytes(b"x")
    os.truncate(src / "tail-hole", 64 << 20)
    copy_tree(src, dst)
    for name in ("disk.img", "tail-hole"):
        a, b = src / name, dst / name
        assert b.stat().st_size == a.stat().st_size
        assert b.stat().st_blocks <= a.stat().st_blocks + 64, (name, a.stat().st_blocks, b.stat().st_blocks)
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while chunk := fa.read(1 << 22):
                assert fb.read(len(chunk)) == chunk
