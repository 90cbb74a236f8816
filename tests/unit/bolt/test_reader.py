"""Bolt reader lookups: a bucket's leaf page indexed once answers every ``get``/``bucket`` as the
element-by-element search of that page (``Page.find_leaf``) does, on sound and damaged pages."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ctrconv.bolt import BoltFile, BucketTree
from ctrconv.bolt import _structs as S
from ctrconv.bolt.errors import BoltError
from ctrconv.bolt.writer import write_bolt

FIELDS = [b"createdat", b"size", b"updatedat", b"zz-absent", b"labels", b"aa-absent", b""]


def _root(tmp_path: Path) -> Path:
    """A record that holds a labels bucket (so it is page-rooted: bolt inlines only buckets
    without sub-buckets) and a record without one (inline), as containerd writes content."""
    tree = BucketTree()
    blob = tree.bucket(b"blob", create=True)
    page_rooted = blob.bucket(b"sha256:aa", create=True)
    page_rooted.put(b"createdat", b"\x01" * 15)
    page_rooted.put(b"size", b"\x02")
    page_rooted.put(b"updatedat", b"\x01" * 15)
    labels = page_rooted.bucket(b"labels", create=True)
    labels.put(b"containerd.io/gc.ref.content.l.0", b"sha256:bb")
    inline = blob.bucket(b"sha256:bb", create=True)
    inline.put(b"size", b"\x04")
    path = tmp_path / "meta.db"
    write_bolt(path, tree, page_size=4096)
    return path


def _reference(db: BoltFile, record: bytes, key: bytes) -> object:
    """What a lookup of ``key`` gave before the index: ``find_leaf`` on the record's page."""
    bucket = db.root.bucket(b"blob", record)
    page = bucket._inline_page() if bucket.inline is not None else db.page(bucket.root)
    try:
        found = page.find_leaf(key)
    except BoltError as exc:
        return ("error", type(exc), str(exc))
    if found is None:
        return None
    flags, value = found
    return ("bucket", key) if flags & S.BUCKET_LEAF_FLAG else ("value", value)


def _indexed(db: BoltFile, record: bytes, key: bytes) -> object:
    bucket = db.root.bucket(b"blob", record)  # a fresh bucket: its index is built by this lookup
    try:
        value = bucket.get(key)
        sub = bucket.bucket(key) if value is None else None
    except BoltError as exc:
        return ("error", type(exc), str(exc))
    if value is not None:
        return ("value", value)
    return ("bucket", key) if sub is not None else None


def test_indexed_lookups_find_what_the_page_holds(tmp_path):
    with BoltFile(_root(tmp_path)) as db:
        record = db.root.bucket(b"blob", b"sha256:aa")
        assert record.inline is None
        assert record.get(b"size") == b"\x02" and record.get(b"size") == b"\x02"  # asked twice: same answer
        assert record.get(b"labels") is None and record.bucket(b"labels") is not None
        assert dict(record.bucket(b"labels").values()) == {b"containerd.io/gc.ref.content.l.0": b"sha256:bb"}
        assert record.get(b"absent") is None
        inline = db.root.bucket(b"blob", b"sha256:bb")
        assert inline.inline is not None and inline.get(b"size") == b"\x04" and inline.get(b"nope") is None


def test_damaged_record_pages_answer_as_the_page_search(tmp_path):
    """Random damage to the record page's element table (flags, positions, sizes): every key
    gives the same value or the same error, worded the same, as ``find_leaf``; in particular a
    field found before a bad element still reads, and any other lookup raises its error."""
    path = _root(tmp_path)
    with BoltFile(path) as db:
        pgid = db.root.bucket(b"blob", b"sha256:aa").root
    original = path.read_bytes()
    rng = random.Random(17)
    outcomes = set()
    for trial in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 3)):
            at = pgid * 4096 + S.PAGE_HEADER_SIZE + rng.randrange(4 * S.ELEMENT_SIZE)
            data[at] = rng.randrange(256)
        path.write_bytes(bytes(data))
        with BoltFile(path) as db:
            for key in FIELDS:
                want = _reference(db, b"sha256:aa", key)
                assert _indexed(db, b"sha256:aa", key) == want, (trial, key)
                outcomes.add(want[0] if isinstance(want, tuple) else want)
    # the damage reached every kind of answer: a value, a bucket, an absent key and an error
    assert outcomes == {"value", "bucket", None, "error"}


@pytest.mark.parametrize("bad", [0, 1, 2, 3])
def test_a_bad_element_hides_only_what_follows_it(tmp_path, bad):
    path = _root(tmp_path)
    with BoltFile(path) as db:
        pgid = db.root.bucket(b"blob", b"sha256:aa").root
    data = bytearray(path.read_bytes())
    data[pgid * 4096 + S.PAGE_HEADER_SIZE + bad * S.ELEMENT_SIZE] = 0x80  # undefined element flags
    path.write_bytes(bytes(data))
    keys = [b"createdat", b"labels", b"size", b"updatedat"]  # stored order
    with BoltFile(path) as db:
        record = db.root.bucket(b"blob", b"sha256:aa")
        for i, key in enumerate(keys):
            if i < bad:
                assert record.get(key) is not None or record.bucket(key) is not None
            else:
                with pytest.raises(BoltError, match=f"leaf element {bad} has flags 0x80"):
                    record.get(key)
        with pytest.raises(BoltError, match=f"leaf element {bad} has flags"):
            record.get(b"absent")


def test_a_record_page_is_read_once_for_all_its_fields(tmp_path, monkeypatch):
    """The point of the index: decoding a record looks up four or five fields, and a root of
    10,000 images has 32,000 records; its page is decoded for the first lookup only."""
    with BoltFile(_root(tmp_path)) as db:
        record = db.root.bucket(b"blob", b"sha256:aa")
        reads = []
        real = BoltFile.page
        monkeypatch.setattr(BoltFile, "page", lambda self, pgid, **kw: reads.append(pgid) or real(self, pgid, **kw))
        for key in FIELDS[:-1]:
            record.get(key)
            record.bucket(key)
        assert reads == [record.root]


def _page_as_leaf(db: BoltFile, pgid: int) -> tuple[bytes, int] | None:
    """What ``leaf_bytes`` stands for: ``page()`` when it returns a leaf page, else None."""
    try:
        page = db.page(pgid)
    except BoltError:
        return None
    return (bytes(page.data), page.count) if page.flags == S.LEAF_PAGE else None


def test_leaf_bytes_is_page_for_leaves_and_none_for_anything_else(tmp_path):
    """Every page id of the file, and ids past its end, sound and with damaged headers: the
    copy and count of a leaf page ``page()`` accepts, None wherever it raises or gives a
    branch, meta or freelist page."""
    path = _root(tmp_path)
    with BoltFile(path) as db:
        ids = range(-1, db.meta.pgid + 3)
        assert any(_page_as_leaf(db, pgid) is not None for pgid in ids)
        for pgid in ids:
            assert db.leaf_bytes(pgid) == _page_as_leaf(db, pgid), pgid
    data = bytearray(path.read_bytes())
    rng = random.Random(7)
    for _ in range(60):
        damaged = bytearray(data)
        pgid = rng.randrange(2, len(data) // 4096)
        at = pgid * 4096 + rng.randrange(S.PAGE_HEADER_SIZE)  # the id, flags, count or overflow
        damaged[at] = rng.randrange(256)
        target = tmp_path / "damaged.db"
        target.write_bytes(bytes(damaged))
        try:
            db = BoltFile(target)
        except BoltError:
            continue
        with db:
            for candidate in range(-1, db.meta.pgid + 3):
                assert db.leaf_bytes(candidate) == _page_as_leaf(db, candidate), (pgid, at, candidate)
