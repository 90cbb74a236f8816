"""Bolt reader: equality with Go bbolt on real files, and specific errors on damaged copies."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ctrconv.bolt import (
    BoltFile,
    BucketTree,
    CorruptPage,
    FileTooSmall,
    NoValidMeta,
    PageCycle,
    read_tree,
)
from ctrconv.bolt import _structs as S
from ctrconv.bolt.writer import write_bolt


def _bolt_files(root: Path) -> list[Path]:
    return sorted(root.glob("io.containerd.metadata.v1.bolt/meta.db")) + sorted(
        root.glob("io.containerd.snapshotter.v1.*/metadata.db")
    )


@pytest.mark.interop
def test_fixture_bolt_files_read_like_go(fixture_set):
    from support.go_bbolt import go_dump

    files = _bolt_files(fixture_set.root)
    assert len(files) >= 2
    for path in files:
        assert read_tree(path).to_plain() == go_dump(path), path


def _plain_from_dump(bucket: dict) -> dict:
    """Turn ``ctrconv dump --json``'s bucket form into ``BucketTree.to_plain()`` form."""
    out = {"sequence": bucket["sequence"], "entries": {}}
    for entry in bucket["entries"]:
        out["entries"][entry["key_hex"]] = (
            _plain_from_dump(entry["bucket"]) if "bucket" in entry else entry["value_hex"]
        )
    return out


@pytest.mark.interop
def test_dump_json_equals_go(fixture_set, cli):
    from support.go_bbolt import go_dump

    paths = list(_bolt_files(fixture_set.root))
    assert len(paths) >= 2, paths  # meta.db and the overlayfs metadata.db at least
    for path in paths:
        result = cli("dump", "--json", str(path))
        assert result.code == 0, result.stderr
        assert _plain_from_dump(result.json["root"]) == go_dump(path)


def _big_tree() -> BucketTree:
    root = BucketTree()
    v1 = root.bucket(b"v1", create=True)
    v1.sequence = 7
    data = v1.bucket(b"data", create=True)
    for i in range(600):
        data.put(b"key%05d" % i, b"v" * 40)
    small = v1.bucket(b"small", create=True)
    small.put(b"a", b"1")
    return root


def _write(tmp_path: Path, tree: BucketTree | None = None, name: str = "x.db") -> Path:
    path = tmp_path / name
    write_bolt(path, tree or _big_tree(), page_size=4096)
    return path


def _header(path: Path, pgid: int, page_size: int = 4096) -> tuple[int, int, int, int]:
    with open(path, "rb") as f:
        f.seek(pgid * page_size)
        return S.PAGE_HEADER.unpack(f.read(16))


def _pages_of_type(path: Path, flags: int) -> list[int]:
    with BoltFile(path) as db:
        hwm = db.meta.pgid
    return [p for p in range(2, hwm) if _header(path, p)[1] == flags and _header(path, p)[0] == p]


def test_round_trip_and_sequences(tmp_path):
    path = _write(tmp_path)
    tree = read_tree(path)
    assert tree.to_plain() == _big_tree().to_plain()
    with BoltFile(path) as db:
        v1 = db.root.bucket(b"v1")
        assert v1.sequence == 7
        data = v1.bucket(b"data")
        assert data.get(b"key00599") == b"v" * 40
        assert data.get(b"nope") is None
        assert [k for k, _ in data.items()] == sorted(b"key%05d" % i for i in range(600))
        assert v1.bucket(b"small").inline is not None


def test_truncated_file_is_detected(tmp_path):
    path = _write(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(FileTooSmall, match="truncated"):
        BoltFile(path)
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(FileTooSmall):
        BoltFile(path)


def test_zeroed_leaf_page_names_the_page(tmp_path):
    path = _write(tmp_path)
    leaf = _pages_of_type(path, S.LEAF_PAGE)[0]
    with open(path, "r+b") as f:
        f.seek(leaf * 4096)
        f.write(bytes(4096))
    with pytest.raises(CorruptPage, match=f"page {leaf}"):
        read_tree(path)


def test_corrupt_current_meta_falls_back_to_the_other(tmp_path):
    path = _write(tmp_path)
    with BoltFile(path) as db:
        current = db.meta.page
        txid = db.meta.txid
    with open(path, "r+b") as f:
        f.seek(current * 4096 + 40)
        f.write(b"\xff" * 8)  # garble root pgid: checksum no longer matches
    with BoltFile(path) as db:
        assert db.meta.page != current
        assert db.meta.txid == txid - 1
        assert db.metas[current].error == "checksum error"
    assert read_tree(path).to_plain() == _big_tree().to_plain()


def test_both_metas_zeroed(tmp_path):
    path = _write(tmp_path)
    with open(path, "r+b") as f:
        f.write(bytes(8192))
    with pytest.raises(NoValidMeta):
        BoltFile(path)


def test_branch_pointing_at_itself_is_a_cycle_not_a_hang(tmp_path):
    path = _write(tmp_path)
    branch = _pages_of_type(path, S.BRANCH_PAGE)[0]
    with open(path, "r+b") as f:
        f.seek(branch * 4096 + 16 + 8)  # first branch element's child pgid
        f.write(struct.pack("<Q", branch))
    with pytest.raises(PageCycle, match=f"page {branch}"):
        read_tree(path)


def test_garbled_element_table_is_bounded(tmp_path):
    path = _write(tmp_path)
    leaf = _pages_of_type(path, S.LEAF_PAGE)[0]
    with open(path, "r+b") as f:
        f.seek(leaf * 4096 + 16)
        f.write(b"\x00\x00\x00\x00\xff\xff\xff\x7f\xff\xff\x00\x00\x01\x00\x00\x00")
    with pytest.raises(CorruptPage, match=f"page {leaf}"):
        read_tree(path)


def test_cli_reports_damage_in_one_line(tmp_path, cli):
    path = _write(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    result = cli("dump", str(path))
    assert result.code == 1
    assert result.stderr.startswith("ctrconv: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_not_a_bolt_file(tmp_path, cli):
    path = tmp_path / "junk.db"
    path.write_bytes(b"hello world" * 1000)
    result = cli("dump", str(path))
    assert result.code == 1
    assert "no valid meta page" in result.stderr
