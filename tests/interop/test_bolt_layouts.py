"""The byte layouts of ``ctrconv.bolt.layouts``: one construct declaration per layout, fast
codecs derived from it and generated into ``ctrconv.bolt._structs``, element strides per page type, and the writer's output pinned byte for
byte.

The pinned digests were taken from the writer before its layouts were derived from construct,
so any change of what it emits (a field order, a size, padding) fails here, not only in Go.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
from pathlib import Path

import pytest
from construct import Int16ul, Int32ub, Int32ul, Int64ul, PrefixedArray, Struct

from ctrconv.bolt import _structs as S
from ctrconv.bolt import layouts as L
from ctrconv.bolt.check import check_bolt
from ctrconv.bolt.reader import BoltFile
from ctrconv.bolt.salvage import salvage
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import meta_page, write_bolt_to
from support.go_bbolt import go_check

# -- derived codecs agree with the declarations ------------------------------------------------

_DECLARED = [
    (L.PageHeader, S.PAGE_HEADER),
    (L.BucketHeader, S.BUCKET_HEADER),
    (L.LeafElement, S.LEAF_ELEMENT),
    (L.BranchElement, S.BRANCH_ELEMENT),
    (L.FreelistCount, S.FREELIST_COUNT),
    (L.FreelistId, S.FREELIST_ID),
    (L.Meta, S.META),
]


def _names(layout) -> list[tuple[str, ...]]:
    """Field paths of a (nested) construct Struct in byte order; [()] for a bare integer."""
    if not isinstance(layout, Struct):
        return [()]
    return [(sub.name,) + rest for sub in layout.subcons for rest in _names(sub.subcon)]


def _nest(paths: list[tuple[str, ...]], values: list[int]) -> object:
    """The value construct builds from: nested dicts for a Struct, the integer for a field."""
    if paths == [()]:
        return values[0]
    out: dict = {}
    for path, value in zip(paths, values):
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return out


def _flat(paths: list[tuple[str, ...]], parsed: object) -> list[int]:
    values = []
    for path in paths:
        node = parsed
        for name in path:
            node = node[name]  # type: ignore[index]
        values.append(node)
    return values  # type: ignore[return-value]


@pytest.mark.parametrize("layout, derived", _DECLARED, ids=lambda v: getattr(v, "format", ""))
def test_derived_codec_reads_and_writes_what_construct_does(layout, derived):
    paths = _names(layout)
    widths = [struct.calcsize(S.BYTE_ORDER + ch) for ch in derived.format[len(S.BYTE_ORDER) :]]
    assert len(widths) == len(paths) and derived.size == layout.sizeof() == sum(widths)
    rng = random.Random(derived.format)
    for _ in range(200):
        values = [rng.choice((0, 1, (1 << 8 * w) - 1, rng.randrange(1 << 8 * w))) for w in widths]
        packed = derived.pack(*values)
        assert layout.build(_nest(paths, values)) == packed
        assert _flat(paths, layout.parse(packed)) == values


def test_declared_sizes_and_offsets_are_bbolts():
    assert (S.PAGE_HEADER_SIZE, S.ELEMENT_SIZE, S.BUCKET_HEADER_SIZE) == (16, 16, 16)
    assert (S.META_OFFSET, S.META_SIZE, S.META_CHECKSUMMED, S.META_END) == (16, 64, 56, 80)
    # construct spells u32 "L"; with "<" every letter has its standard size
    assert S.PAGE_HEADER.format == "<QHHL" and S.BUCKET_HEADER.format == "<QQ"
    assert S.LEAF_ELEMENT.format == "<LLLL" and S.BRANCH_ELEMENT.format == "<LLQ"
    assert L.derive(L.Meta).format == "<LLLLQQQQQQ"


def test_the_generated_codecs_are_the_declarations():
    """_structs.py's codecs are generated from the declarations; an edit of either side alone
    fails here (python3 -m ctrconv.bolt.layouts --write makes them agree again)."""
    text = L.STRUCTS.read_text()
    assert L.with_block(text) == text, "python3 -m ctrconv.bolt.layouts --write"
    for name, layout in L.CODECS.items():
        assert getattr(S, name).format == L.derive(layout).format, name
    assert S.META_FIELDS == L.field_names(L.Meta)
    assert S.META_CHECKSUMMED == L.offset_of(L.Meta, "checksum")


def test_reading_a_root_does_not_import_construct(tmp_path: Path):
    """construct is the declaration; readers run the generated codecs, so ls, export and verify
    do not pay construct's import (pdb included)."""
    import subprocess
    import sys

    path = tmp_path / "x.db"
    tree = BucketTree()
    tree.bucket(b"b", create=True).entries[b"k"] = b"v"  # type: ignore[union-attr]
    with open(path, "wb") as out:
        write_bolt_to(out, tree, page_size=4096)
    code = ("import sys; from ctrconv.bolt.reader import read_tree; t = read_tree(sys.argv[1]);"
            "assert t.entries[b'b'].entries[b'k'] == b'v'; print('construct' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_little_endian_fixed_size_integers_can_be_derived():
    with pytest.raises(TypeError, match="fixed-size integer"):
        L.derive(Struct("n" / PrefixedArray(Int16ul, Int32ul)))
    with pytest.raises(TypeError, match="byte order"):
        L.derive(Struct("a" / Int64ul, "b" / Struct("c" / Int32ub)))


def test_array_codec_reads_a_run_of_ids():
    ids = [2, 3, 0xFFFFFFFFFFFFFFF0, 7]
    data = b"".join(S.FREELIST_ID.pack(i) for i in ids)
    assert list(S.freelist_ids(len(ids)).unpack(data)) == ids
    assert S.freelist_ids(0).size == 0


def test_meta_checksum_covers_the_fields_before_it():
    page = meta_page(0, page_size=4096, root_pgid=3, root_sequence=0, freelist_pgid=2, hwm=4, txid=0)
    meta = L.Meta.parse(page[S.META_OFFSET : S.META_END])
    assert meta.checksum == S.meta_checksum(page[S.META_OFFSET :]) == 0x07516E114689FDEE


# -- element strides per page type -------------------------------------------------------------


def _save(tmp_path: Path, data: bytes, name: str = "damaged.db") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _with_free_pages(tmp_path: Path, free: int) -> Path:
    """A file whose synced freelist lists ``free`` unreachable pages (ids are 8 bytes each)."""
    tree = BucketTree()
    bucket = tree.bucket(b"b", create=True)
    assert bucket is not None
    for i in range(500):
        bucket.entries[b"k%04d" % i] = b"v" * 50
    out = io.BytesIO()
    layout = write_bolt_to(out, tree, page_size=4096, freelist=True, txid=2)
    data = bytearray(out.getvalue()) + bytes(free * 4096)
    hwm = layout.hwm + free
    at = layout.freelist_pgid * 4096
    S.PAGE_HEADER.pack_into(data, at, layout.freelist_pgid, S.FREELIST_PAGE, free, 0)
    S.freelist_ids(free).pack_into(data, at + S.PAGE_HEADER_SIZE, *range(layout.hwm, hwm))
    for pgid, txid in ((0, 2), (1, 1)):
        data[pgid * 4096 : (pgid + 1) * 4096] = meta_page(
            pgid, page_size=4096, root_pgid=layout.root_pgid, root_sequence=0,
            freelist_pgid=layout.freelist_pgid, hwm=hwm, txid=txid,
        )
    return _save(tmp_path, data, "free.db")


def test_a_freelist_of_more_than_255_ids_in_one_page_is_clean(tmp_path):
    # 300 ids take 2,400 bytes; counted at the 16-byte element stride they would not fit, and
    # a containerd 1.6 meta.db (synced freelist) gets that many after a prune.
    path = _with_free_pages(tmp_path, 300)
    assert go_check(path) == []
    assert check_bolt(str(path)) == []
    with BoltFile(path) as db:
        assert db.page(db.meta.freelist, expect=(S.FREELIST_PAGE,)).count == 300


def test_salvage_records_an_inline_bucket_too_short_for_its_page_header(tmp_path):
    tree = BucketTree()
    inner = tree.bucket(b"b", b"c", create=True)
    outer = tree.bucket(b"b")
    assert inner is not None and outer is not None
    inner.entries[b"k"] = b"v"
    outer.entries[b"z"] = b"kept"
    out = io.BytesIO()
    write_bolt_to(out, tree, page_size=4096, freelist=True)
    data = bytearray(out.getvalue())
    with BoltFile(_save(tmp_path, data, "clean.db")) as db:
        b = db.bucket(b"b")
        assert b is not None
        (pgid,) = [page.pgid for page in b.pages()]
    at = pgid * 4096 + S.PAGE_HEADER_SIZE  # element 0 of b's leaf: the inline bucket c
    flags, pos, ksize, _ = S.LEAF_ELEMENT.unpack_from(data, at)
    assert flags == S.BUCKET_LEAF_FLAG
    S.LEAF_ELEMENT.pack_into(data, at, flags, pos, ksize, S.BUCKET_HEADER_SIZE + 4)
    result = salvage(_save(tmp_path, data))
    assert [(d.path, "no room for its header" in d.message) for d in result.damage] == [((b"b", b"c"), True)]
    salvaged = result.tree.bucket(b"b")
    assert salvaged is not None and salvaged.get(b"z") == b"kept"


# -- the writer's bytes are pinned -------------------------------------------------------------


def _random_bucket(rng: random.Random, depth: int, width: int) -> BucketTree:
    tree = BucketTree(sequence=rng.choice((0, 0, 1, 41, (1 << 64) - 1)))
    for _ in range(rng.randrange(width)):
        key = rng.randbytes(rng.choice((1, 3, 8, 30, 200)))
        roll = rng.random()
        if depth and roll < 0.15:
            tree.entries[key] = _random_bucket(rng, depth - 1, max(2, min(30, width // 3)))
        elif roll < 0.2:
            tree.entries[key] = b""
        elif roll < 0.23:
            tree.entries[key] = rng.randbytes(rng.choice((3000, 9000, 70000)))
        else:
            tree.entries[key] = rng.randbytes(rng.choice((1, 8, 15, 64, 300)))
    return tree


def _pinned_tree(seed: int) -> BucketTree:
    """Nested, inline and page-rooted buckets, empty and overflowing values, branch levels."""
    rng = random.Random(seed)
    root = BucketTree()
    for i in range(4):
        root.entries[b"b%d" % i] = _random_bucket(rng, depth=3 - i, width=(6, 40, 300, 2500)[i])
    root.entries[b"empty"] = BucketTree()
    return root


def _digest(tree: BucketTree, **options) -> str:
    out = io.BytesIO()
    write_bolt_to(out, tree, **options)
    return hashlib.sha256(out.getvalue()).hexdigest()


_PINNED = [
    (1, dict(page_size=4096), "e4273991ccbc6b8e764c2c53e389e02bc2098492004a605c81662739b5f41438"),
    (2, dict(page_size=1024), "6627bbb4f39a1bb2208968d8629534dea83aa1632bb9077a17df3c13562e56b3"),
    (3, dict(page_size=16384, freelist=False, txid=7), "58a2d70cbc0ee7a5b36273b739a6fefcecbb1cbcce86fa349f970f14c1513407"),
    (4, dict(page_size=4096, fill_percent=0.5, txid=1), "27da8af8baa0ac30623543dd09843fd2617ec49d6ea41942dedfabb0ee312500"),
    (5, dict(page_size=65536, freelist=False), "4bd3dbaaeab6bc4307e74164c636dadd6b47b3fba5eac1ef67ba9c475b789f29"),
]


@pytest.mark.parametrize("seed, options, digest", _PINNED)
def test_writer_output_is_byte_identical_to_the_pinned_files(seed, options, digest):
    assert _digest(_pinned_tree(seed), **options) == digest


def test_pinned_trees_cover_branches_overflow_and_inline_buckets(tmp_path):
    # The pins are only worth something if the trees exercise every layout the writer emits.
    path = tmp_path / "pinned.db"
    with open(path, "wb") as fh:
        write_bolt_to(fh, _pinned_tree(2), page_size=1024)
    kinds: set[str] = set()
    with BoltFile(path) as db:
        stack = [db.root]
        while stack:
            bucket = stack.pop()
            kinds.add("inline" if bucket.inline is not None else "paged")
            for page in bucket.pages():
                kinds.add({S.BRANCH_PAGE: "branch", S.LEAF_PAGE: "leaf"}[page.flags])
                kinds.update(["overflow"] if page.overflow else [])
            for _, value in bucket.items():
                if isinstance(value, bytes):
                    kinds.add("empty value" if not value else "value")
                else:
                    stack.append(value)
    assert kinds == {"inline", "paged", "branch", "leaf", "overflow", "empty value", "value"}
    assert go_check(path) == []
