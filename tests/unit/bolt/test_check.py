"""Structure check: the leaf scan that skips copying plain values finds what
``Page.leaf_elements`` finds, fails where it fails, and page owners are named in messages."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from ctrconv.bolt import BoltFile, BucketTree
from ctrconv.bolt import _structs as S
from ctrconv.bolt.check import _leaf_keys, check_bolt
from ctrconv.bolt.errors import BoltError
from ctrconv.bolt.writer import write_bolt


def _file(tmp_path: Path) -> Path:
    tree = BucketTree()
    data = tree.bucket(b"v1", b"data", create=True)
    for i in range(300):
        if i % 3:
            data.put(b"key%05d" % i, b"v" * (i % 50))
        else:
            data.bucket(b"key%05d" % i, create=True).put(b"size", b"\x02")
    path = tmp_path / "x.db"
    write_bolt(path, tree, page_size=4096)
    return path


def _leaves(path: Path) -> list[int]:
    """The leaf pages of ``v1/data`` (not the pages above it, which every lookup needs)."""
    with BoltFile(path) as db:
        return sorted(page.pgid for page in db.root.bucket(b"v1", b"data").pages() if page.flags == S.LEAF_PAGE)


def _header(path: Path, pgid: int) -> tuple[int, int, int, int]:
    with open(path, "rb") as f:
        f.seek(pgid * 4096)
        return S.PAGE_HEADER.unpack(f.read(S.PAGE_HEADER_SIZE))


def _scan(db: BoltFile, pgid: int) -> tuple[list[bytes], list[tuple[bytes, int, int]], object]:
    bucket = db.root.bucket(b"v1", b"data")
    keys: list[bytes] = []
    children = []
    error = None
    try:
        _leaf_keys(db.page(pgid), bucket, keys, children)
    except BoltError as exc:
        error = (type(exc), str(exc))
    return keys, [(c.path[-1], c.root, c.sequence) for c in children], error


def _reference(db: BoltFile, pgid: int) -> tuple[list[bytes], list[tuple[bytes, int, int]], object]:
    bucket = db.root.bucket(b"v1", b"data")
    keys, children, error = [], [], None
    try:
        for flags, key, value in db.page(pgid).leaf_elements():
            keys.append(key)
            if flags & S.BUCKET_LEAF_FLAG:
                child = bucket._child(key, value, pgid)
                children.append((child.path[-1], child.root, child.sequence))
    except BoltError as exc:
        error = (type(exc), str(exc))
    return keys, children, error


def test_leaf_scan_equals_leaf_elements_on_damaged_pages(tmp_path):
    path = _file(tmp_path)
    leaves = _leaves(path)
    assert len(leaves) >= 2
    original = path.read_bytes()
    rng = random.Random(12)
    errors = 0
    for trial in range(300):
        data = bytearray(original)
        pgid = rng.choice(leaves)
        count = _header(path, pgid)[2]
        for _ in range(rng.randint(1, 3)):
            data[pgid * 4096 + S.PAGE_HEADER_SIZE + rng.randrange(count * S.ELEMENT_SIZE)] = rng.randrange(256)
        damaged = tmp_path / "damaged.db"
        damaged.write_bytes(bytes(data))
        with BoltFile(damaged) as db:
            got, want = _scan(db, pgid), _reference(db, pgid)
        assert got == want, trial
        errors += want[2] is not None
    assert 30 < errors < 300  # damage both broke pages and left some readable


def test_a_page_claimed_twice_names_both_owners(tmp_path):
    """A leaf whose overflow count swallows the next page of the same bucket: the page is
    claimed twice, and the message names the bucket."""
    path = _file(tmp_path)
    leaves = _leaves(path)
    first = next(p for p in leaves if p + 1 in leaves)
    with open(path, "r+b") as f:
        f.seek(first * 4096 + 12)  # the header's overflow field
        f.write(struct.pack("<L", 1))
    messages = [str(p) for p in check_bolt(str(path))]
    assert any("multiple references" in m and "bucket v1/data" in m for m in messages), messages


@pytest.mark.parametrize("damage", ["flags", "key"])
def test_check_reports_a_bad_element_once_with_its_page(tmp_path, damage):
    path = _file(tmp_path)
    pgid = _leaves(path)[0]
    with open(path, "r+b") as f:
        if damage == "flags":
            f.seek(pgid * 4096 + S.PAGE_HEADER_SIZE)
            f.write(struct.pack("<L", 0x80))
        else:
            f.seek(pgid * 4096 + S.PAGE_HEADER_SIZE + 8)  # the first element's key size
            f.write(struct.pack("<L", 0x7FFFFFFF))
    problems = check_bolt(str(path))
    want = "has flags 0x80" if damage == "flags" else "key runs outside the page"
    assert [p.page for p in problems if want in p.message] == [pgid], problems
