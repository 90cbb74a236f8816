"""The bottom-up bolt writer: byte layout, limits, atomic replace, and round trips.

Round trips go through two independent readers: real Go bbolt (``interop``: dump, ``Check``
and random read-write transactions) and ctrconv's own reader.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctrconv.bolt._structs import (
    BRANCH_PAGE,
    FREELIST_PAGE,
    LEAF_PAGE,
    META_PAGE,
    NO_FREELIST,
    fnv1a64,
)
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import (
    InvalidTreeError,
    meta_page,
    split_points,
    write_bolt,
    write_bolt_to,
)
from support.go_bbolt import go_check, go_copy, go_dump, go_init, go_mutate

ROUND_TRIP = settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_HEADER = struct.Struct("<QHHI")
_LEAF_ELEM = struct.Struct("<IIII")
_BRANCH_ELEM = struct.Struct("<IIQ")


# --- a minimal independent page parser, so layout tests do not depend on the reader -------


def _header(data: bytes, pgid: int, page_size: int) -> tuple[int, int, int, int]:
    return _HEADER.unpack_from(data, pgid * page_size)


def _elements(data: bytes, pgid: int, page_size: int) -> list[tuple]:
    """Leaf elements as (flags, key, value), branch elements as (key, child pgid)."""
    base = pgid * page_size
    _, flags, count, _ = _HEADER.unpack_from(data, base)
    out = []
    for i in range(count):
        at = base + 16 + 16 * i
        if flags == LEAF_PAGE:
            eflags, pos, ksize, vsize = _LEAF_ELEM.unpack_from(data, at)
            key = data[at + pos : at + pos + ksize]
            out.append((eflags, key, data[at + pos + ksize : at + pos + ksize + vsize]))
        else:
            pos, ksize, child = _BRANCH_ELEM.unpack_from(data, at)
            out.append((data[at + pos : at + pos + ksize], child))
    return out


def _page_sequence(data: bytes, page_size: int, hwm: int) -> list[tuple[int, int, int]]:
    """Walk pages 2..HWM by header+overflow: (pgid, flags, overflow); proves no gaps."""
    pages = []
    pgid = 2
    while pgid < hwm:
        hid, flags, _, overflow = _header(data, pgid, page_size)
        assert hid == pgid, f"page {pgid} says it is {hid}"
        pages.append((pgid, flags, overflow))
        pgid += overflow + 1
    assert pgid == hwm
    return pages


def _meta(data: bytes, pgid: int, page_size: int) -> dict:
    fields = struct.unpack_from("<IIIIQQQQQQ", data, pgid * page_size + 16)
    names = ("magic", "version", "page_size", "flags", "root", "root_seq", "freelist", "pgid")
    meta = dict(zip(names + ("txid", "checksum"), fields))
    assert meta["checksum"] == fnv1a64(data[pgid * page_size + 16 : pgid * page_size + 72])
    return meta


def _write_bytes(tmp_path: Path, tree: BucketTree, **kwargs) -> tuple[bytes, object]:
    path = tmp_path / "out.db"
    layout = write_bolt(path, tree, **kwargs)
    data = path.read_bytes()
    assert len(data) == layout.file_size
    return data, layout


def _tree(spec: dict, sequence: int = 0) -> BucketTree:
    """Build a tree from nested dicts; a (sequence, dict) tuple sets a bucket's sequence."""
    tree = BucketTree(sequence=sequence)
    for key, value in spec.items():
        if isinstance(value, tuple):
            tree.entries[key] = _tree(value[1], value[0])
        elif isinstance(value, dict):
            tree.entries[key] = _tree(value)
        else:
            tree.entries[key] = value
    return tree


# --- byte-level layout ------------------------------------------------------------------


def test_meta_checksum_vectors_from_fresh_db():
    page0 = meta_page(
        0, page_size=4096, root_pgid=3, root_sequence=0, freelist_pgid=2, hwm=4, txid=0
    )
    page1 = meta_page(
        1, page_size=4096, root_pgid=3, root_sequence=0, freelist_pgid=2, hwm=4, txid=1
    )
    assert len(page0) == 4096 and not any(page0[80:])
    assert struct.unpack_from("<Q", page0, 72)[0] == 0x07516E114689FDEE
    assert struct.unpack_from("<Q", page1, 72)[0] == 0x264C351A5179480F
    assert page0[:80] == bytes.fromhex(
        "0000000000000000 0400 0000 00000000"  # id 0, meta, count 0, overflow 0
        "edda0ced 02000000 00100000 00000000"  # magic, version 2, page size 4096, flags 0
        "0300000000000000 0000000000000000"  # root page 3, root sequence 0
        "0200000000000000 0400000000000000"  # freelist page 2, high-water mark 4
        "0000000000000000 eefd8946116e5107"  # txid 0, checksum
    )


def test_empty_tree_has_the_layout_of_bbolt_init(tmp_path):
    data, layout = _write_bytes(tmp_path, BucketTree(), page_size=4096, txid=1)
    assert (layout.hwm, layout.root_pgid, layout.freelist_pgid) == (4, 3, 2)
    assert [_header(data, p, 4096) for p in range(4)] == [
        (0, META_PAGE, 0, 0),
        (1, META_PAGE, 0, 0),
        (2, FREELIST_PAGE, 0, 0),
        (3, LEAF_PAGE, 0, 0),
    ]
    meta0, meta1 = _meta(data, 0, 4096), _meta(data, 1, 4096)
    assert (meta0["txid"], meta1["txid"]) == (0, 1)
    assert meta0["checksum"] == 0x07516E114689FDEE
    assert meta1["checksum"] == 0x264C351A5179480F


@pytest.mark.parametrize("txid", [1, 2, 7, 1000])
def test_newest_meta_goes_to_page_txid_mod_2(tmp_path, txid):
    data, _ = _write_bytes(tmp_path, _tree({b"a": {}}), page_size=1024, txid=txid)
    metas = {p: _meta(data, p, 1024) for p in (0, 1)}
    assert metas[txid % 2]["txid"] == txid
    assert metas[1 - txid % 2]["txid"] == txid - 1
    del metas[0]["txid"], metas[0]["checksum"], metas[1]["txid"], metas[1]["checksum"]
    assert metas[0] == metas[1]


def test_without_freelist_meta_says_not_synced(tmp_path):
    data, layout = _write_bytes(tmp_path, _tree({b"a": {}}), page_size=4096, freelist=False)
    assert layout.freelist_pgid == NO_FREELIST
    assert _meta(data, 0, 4096)["freelist"] == NO_FREELIST
    assert [flags for _, flags, _ in _page_sequence(data, 4096, layout.hwm)] == [LEAF_PAGE]


def test_small_bucket_is_inlined_like_bbolt(tmp_path):
    # shared/docs/bolt-format.md §4.4: bucket "small" (a=1, empty="", sequence 2) is 71 bytes.
    tree = _tree({b"b": {b"small": (2, {b"a": b"1", b"empty": b""})}})
    data, layout = _write_bytes(tmp_path, tree, page_size=4096)
    (root_item,) = _elements(data, layout.root_pgid, 4096)
    assert root_item[:2] == (1, b"b")
    # "b" holds a bucket, so it is never inline itself.
    b_root, b_seq = struct.unpack("<QQ", root_item[2])
    (small,) = _elements(data, b_root, 4096)
    assert small[:2] == (1, b"small")
    assert small[2] == bytes.fromhex(
        "0000000000000000" "0200000000000000"  # bucket header: inline, sequence 2
        "0000000000000000" "0200" "0200" "00000000"  # inline page: leaf, 2 elements
        "00000000" "20000000" "01000000" "01000000"  # a: pos 32, k 1, v 1
        "00000000" "12000000" "05000000" "00000000"  # empty: pos 18, k 5, v 0
    ) + b"a1empty"
    assert len(small[2]) == 71


def test_inline_limit_is_a_quarter_page(tmp_path):
    # 16 + (16 + 1 + v) <= 1024 inlines at v = 991; one more byte gets its own page.
    fits = _tree({b"b": {b"k": b"x" * 991}})
    over = _tree({b"b": {b"k": b"x" * 992}})
    data, layout = _write_bytes(tmp_path, fits, page_size=4096)
    assert struct.unpack_from("<Q", _elements(data, layout.root_pgid, 4096)[0][2])[0] == 0
    data, layout = _write_bytes(tmp_path, over, page_size=4096)
    (item,) = _elements(data, layout.root_pgid, 4096)
    assert len(item[2]) == 16
    child = struct.unpack_from("<Q", item[2])[0]
    assert _header(data, child, 4096)[1:] == (LEAF_PAGE, 1, 0)


def test_large_value_gets_overflow_pages(tmp_path):
    tree = _tree({b"b": {b"a": b"1", b"big": b"v" * 5000, b"c": b"3"}})
    data, layout = _write_bytes(tmp_path, tree, page_size=4096)
    child = struct.unpack_from("<Q", _elements(data, layout.root_pgid, 4096)[0][2])[0]
    assert _header(data, child, 4096) == (child, LEAF_PAGE, 3, 1)
    assert [v for _, _, v in _elements(data, child, 4096)] == [b"1", b"v" * 5000, b"3"]


def test_branch_keys_are_first_keys_of_children(tmp_path):
    keys = [b"key%04d" % i for i in range(3000)]
    tree = _tree({b"b": {k: b"value-" + k for k in keys}})
    data, layout = _write_bytes(tmp_path, tree, page_size=1024, fill_percent=0.5)
    root = struct.unpack_from("<Q", _elements(data, layout.root_pgid, 1024)[0][2])[0]

    def walk(pgid: int) -> list[bytes]:
        _, flags, _, _ = _header(data, pgid, 1024)
        if flags == LEAF_PAGE:
            return [k for _, k, _ in _elements(data, pgid, 1024)]
        assert flags == BRANCH_PAGE
        found = []
        for key, child in _elements(data, pgid, 1024):
            child_keys = walk(child)
            assert child_keys[0] == key
            found.extend(child_keys)
        return found

    assert walk(root) == keys
    flags = [f for _, f, _ in _page_sequence(data, 1024, layout.hwm)]
    assert flags.count(BRANCH_PAGE) >= 3  # at least two levels of branches


def test_split_points_follow_bbolt_node_split():
    # threshold 512: 16 + 4*100 = 416, a fifth element would pass it.
    assert split_points([100] * 20, 1024, 0.5) == [(0, 4), (4, 8), (8, 12), (12, 20)]
    assert split_points([100] * 20, 1024, 1.0) == [(0, 10), (10, 20)]
    # At most 4 elements never split, however large.
    assert split_points([40000] * 4, 4096, 1.0) == [(0, 4)]
    # Huge elements: first piece takes the minimum 2, the remainder keeps at least 3.
    assert split_points([40000] * 6, 4096, 1.0) == [(0, 2), (2, 6)]
    # No element passes the threshold before the last 3: cut right before them.
    assert split_points([10, 10, 10, 10, 4000, 4000], 4096, 1.0) == [(0, 3), (3, 6)]
    assert split_points([], 4096, 1.0) == [(0, 0)]


# --- input validation and atomic replace ------------------------------------------------


@pytest.mark.parametrize(
    "tree, message",
    [
        (_tree({b"v": b"plain"}), "only buckets"),
        (_tree({b"b": {b"": b"x"}}), "empty key"),
        (_tree({b"b": {b"k" * 32769: b"x"}}), "exceeds"),
        (_tree({b"b": {"text": b"x"}}), "not bytes"),
        (_tree({b"b": {b"k": "text"}}), "not bytes"),
        (_tree({b"b": (-1, {})}), "uint64"),
        (_tree({b"b": (1 << 64, {})}), "uint64"),
    ],
)
def test_invalid_trees_are_rejected_and_leave_the_file_alone(tmp_path, tree, message):
    path = tmp_path / "meta.db"
    path.write_bytes(b"original")
    with pytest.raises(InvalidTreeError, match=message):
        write_bolt(path, tree)
    assert path.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["meta.db"]


def test_longest_key_is_accepted(tmp_path):
    data, layout = _write_bytes(tmp_path, _tree({b"b": {b"k" * 32768: b""}}), page_size=1024)
    assert layout.hwm > 4


@pytest.mark.parametrize(
    "kwargs", [{"page_size": 1000}, {"page_size": 512}, {"txid": 0}, {"fill_percent": 1.5}]
)
def test_bad_parameters_are_programming_errors(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_bolt(tmp_path / "x.db", BucketTree(), **kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_replace_keeps_requested_mode(tmp_path, mode):
    path = tmp_path / "meta.db"
    path.write_bytes(b"old")
    os.chmod(path, 0o666)
    write_bolt(path, _tree({b"v1": {}}), mode=mode)
    assert path.stat().st_mode & 0o777 == mode
    assert path.read_bytes()[16:20] == bytes.fromhex("edda0ced")


def test_default_page_size_is_the_os_page_size(tmp_path):
    import mmap

    _, layout = _write_bytes(tmp_path, BucketTree())
    assert layout.page_size == mmap.PAGESIZE


def test_write_to_file_object_truncates_old_content(tmp_path):
    with open(tmp_path / "x.db", "w+b") as fh:
        fh.write(b"\xff" * 100000)
        layout = write_bolt_to(fh, BucketTree(), page_size=1024)
    assert (tmp_path / "x.db").stat().st_size == layout.file_size == 4 * 1024


# --- random trees -----------------------------------------------------------------------

_keys = st.binary(min_size=1, max_size=24)
_sequences = st.one_of(st.just(0), st.integers(0, 2**64 - 1))


def _blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


_values = st.one_of(
    st.binary(max_size=40),
    st.just(b""),
    st.builds(_blob, st.integers(1000, 20000), st.integers(0, 1000)),  # overflow pages
)
_big_keys = st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(30000, 32768))


def _bulk(count: int, seed: int, sequence: int) -> BucketTree:
    """Many keys in one bucket: multi-level branch trees."""
    rng = random.Random(seed)
    tree = BucketTree(sequence=sequence)
    for i in range(count):
        key = b"%s/%08d" % (rng.choice([b"sha256", b"k8s.io", b"default"]), i * 7919 % 100003)
        tree.entries[key] = rng.randbytes(rng.choice([0, 8, 40, 120, 600]))
    return tree


_small_buckets = st.builds(
    BucketTree,
    sequence=_sequences,
    entries=st.dictionaries(st.one_of(_keys, _big_keys), _values, max_size=12),
)
_bulk_buckets = st.builds(_bulk, st.integers(50, 2500), st.integers(0, 10**6), _sequences)
_buckets = st.recursive(
    st.one_of(_small_buckets, _small_buckets, _bulk_buckets),
    lambda children: st.builds(
        BucketTree,
        sequence=_sequences,
        entries=st.dictionaries(_keys, st.one_of(_values, children), max_size=8),
    ),
    max_leaves=8,
)
_roots = st.builds(BucketTree, entries=st.dictionaries(_keys, _buckets, max_size=5))
_options = st.fixed_dictionaries(
    {
        "page_size": st.sampled_from([1024, 4096, 16384]),
        "fill_percent": st.sampled_from([0.5, 1.0]),
        "freelist": st.booleans(),
        "txid": st.integers(1, 1000),
    }
)


@pytest.mark.interop
@ROUND_TRIP
@given(tree=_roots, options=_options, seed=st.integers(0, 2**31))
def test_go_reads_checks_and_mutates_what_we_write(tree, options, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "meta.db"
        layout = write_bolt(path, tree, **options)
        data = path.read_bytes()
        _page_sequence(data, layout.page_size, layout.hwm)
        assert go_dump(path) == tree.to_plain()
        assert go_check(path) == []
        go_mutate(path, seed, 5, no_freelist_sync=seed % 2 == 1)
        assert go_check(path) == []


@ROUND_TRIP
@given(tree=_roots, options=_options)
def test_own_reader_reads_what_we_write(tree, options):
    from ctrconv.bolt.reader import read_tree

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "meta.db"
        write_bolt(path, tree, **options)
        assert read_tree(path).to_plain() == tree.to_plain()


@pytest.mark.interop
def test_empty_tree_is_byte_identical_to_go_init(tmp_path):
    for page_size in (1024, 4096, 16384):
        go_init(tmp_path / "go.db", page_size)
        write_bolt(tmp_path / "py.db", BucketTree(), page_size=page_size, txid=1)
        assert (tmp_path / "py.db").read_bytes() == (tmp_path / "go.db").read_bytes()
        os.unlink(tmp_path / "go.db")


# --- a containerd-sized tree --------------------------------------------------------------


def _containerd_like(images: int) -> BucketTree:
    """~50 keys per image across images, content blobs and snapshots, like meta.db."""
    rng = random.Random(images)
    root = BucketTree()
    ns = root.bucket(b"v1", b"default", create=True)
    root.bucket(b"v1").put(b"version", b"\x06")
    for i in range(images):
        digest = b"sha256:" + rng.randbytes(32).hex().encode()
        image = ns.bucket(b"images", b"docker.io/library/img%d:latest" % i, create=True)
        image.put(b"createdat", rng.randbytes(15))
        image.put(b"updatedat", rng.randbytes(15))
        target = image.bucket(b"target", create=True)
        target.put(b"digest", digest)
        target.put(b"mediatype", b"application/vnd.oci.image.manifest.v1+json")
        target.put(b"size", b"\x8a\x07")
        for _ in range(6):
            blob = ns.bucket(b"content", b"blob", b"sha256:" + rng.randbytes(32).hex().encode(),
                             create=True)
            blob.put(b"createdat", rng.randbytes(15))
            blob.put(b"updatedat", rng.randbytes(15))
            blob.put(b"size", rng.randbytes(4))
            labels = blob.bucket(b"labels", create=True)
            labels.put(b"containerd.io/gc.ref.content.l.0", digest)
            labels.put(b"containerd.io/distribution.source.docker.io", b"library/img")
        snaps = ns.bucket(b"snapshots", b"overlayfs", create=True)
        snaps.sequence = i
        snap = snaps.bucket(b"sha256:" + rng.randbytes(32).hex().encode(), create=True)
        snap.put(b"name", b"default/%d/sha256:" % i + rng.randbytes(32).hex().encode())
        snap.put(b"parent", rng.randbytes(71))
        snap.bucket(b"children", create=True).put(rng.randbytes(71), b"")
    return root


def _count_keys(tree: BucketTree) -> int:
    return sum(
        1 + (_count_keys(v) if isinstance(v, BucketTree) else 0) for v in tree.entries.values()
    )


@pytest.fixture(scope="module")
def containerd_tree() -> BucketTree:
    return _containerd_like(1000)


def test_thousand_images_write_fast(tmp_path, containerd_tree):
    assert _count_keys(containerd_tree) > 50000
    start = time.perf_counter()
    layout = write_bolt(tmp_path / "meta.db", containerd_tree, page_size=4096)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"writing took {elapsed:.2f}s"
    _page_sequence((tmp_path / "meta.db").read_bytes(), 4096, layout.hwm)


@pytest.mark.interop
def test_go_accepts_a_thousand_image_meta_db(tmp_path, containerd_tree):
    path = tmp_path / "meta.db"
    write_bolt(path, containerd_tree, page_size=4096, fill_percent=0.5)
    assert go_dump(path) == containerd_tree.to_plain()
    assert go_check(path) == []
    go_mutate(path, 1, 20)


@pytest.mark.interop
def test_as_compact_as_a_go_made_copy(tmp_path):
    # Go replays the same tree in one transaction with its default fill (0.5); with the same
    # split rule we need no more pages (Go additionally keeps its 2 freed init pages).
    tree = _containerd_like(200)
    ours = write_bolt(tmp_path / "py.db", tree, page_size=4096, fill_percent=0.5)
    go_copy(tmp_path / "py.db", tmp_path / "go.db", 4096)
    go_meta = max((_meta((tmp_path / "go.db").read_bytes(), p, 4096) for p in (0, 1)),
                  key=lambda m: m["txid"])
    assert ours.hwm <= go_meta["pgid"]
    assert go_dump(tmp_path / "go.db") == tree.to_plain()
