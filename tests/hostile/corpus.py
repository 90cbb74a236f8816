"""The hostile-input corpus: each :class:`Case` builds one attack and names the command it targets.

A case is built into a fresh directory laid out as ``inputs/`` (the hostile file),
``root/`` (the containerd root written or read) and ``sentinel/`` (files the attack tries to
reach). ``tests/unit/robustness/test_hostile.py`` runs the CLI on every case and checks: exit code, one clean
``ctrconv: error:`` line on failure, the sentinel and everything outside ``root/`` untouched.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fuzz import seeds
from fuzz.mutators import _fix_meta_checksum
from hostile.images import desc, doc, image, member, raw_tar, tar

from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt

OCI_INDEX = seeds.OCI_INDEX
OCI_MANIFEST = seeds.OCI_MANIFEST


@dataclass(frozen=True)
class Ctx:
    """Where a case lives: the attack may aim at ``sentinel`` by absolute or relative path."""

    base: Path

    @property
    def inputs(self) -> Path:
        return self.base / "inputs"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def sentinel(self) -> Path:
        return self.base / "sentinel"


@dataclass(frozen=True)
class Case:
    """One attack. ``build`` writes the input and returns the CLI arguments to run.

    ``outcome``: ``"refuse"`` = must fail (exit 1/2, one error line); ``"handle"`` = may also
    succeed (exit 0), e.g. duplicate entries where the last one wins as in ctr.
    ``expect`` is a fragment (lower case) the error line must contain, when refused.
    """

    name: str
    build: Callable[[Ctx], list[str]]
    outcome: str = "refuse"
    expect: str = ""
    tags: tuple[str, ...] = field(default=())
    #: a reported, not yet fixed bug in another module: the case is xfail(strict) until fixed
    known: str = ""


def _write(ctx: Ctx, name: str, data: bytes) -> Path:
    ctx.inputs.mkdir(parents=True, exist_ok=True)
    path = ctx.inputs / name
    path.write_bytes(data)
    return path


def _import(data: bytes) -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        path = _write(ctx, "image.tar", data)
        return ["import", "--root", str(ctx.root), "-i", str(path), "--snapshotter", "native", "-q", "--no-backup"]
    return build


def _import_built(make: Callable[[Ctx], bytes]) -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        return _import(make(ctx))(ctx)
    return build


def _layer(*entries, fmt: int = tarfile.PAX_FORMAT) -> Callable[[Ctx], list[str]]:
    """An image whose one layer holds ``entries`` (callables of ctx, or members)."""
    def make(ctx: Ctx) -> bytes:
        built = [e(ctx) if callable(e) else e for e in entries]
        return image([tar(built, fmt)])
    return _import_built(make)


def _up(ctx: Ctx) -> str:
    """Enough ``../`` to climb from any snapshot dir in ``ctx.root`` to the case directory and above."""
    return "../" * (len(ctx.root.parts) + 8)


# -- layer attacks ---------------------------------------------------------------------------

LAYER_CASES = [
    Case("layer-dotdot", _layer(lambda c: member(_up(c) + "sentinel/pwned", data=b"x")),
         expect="escapes", tags=("traversal",)),
    Case("layer-nested-dotdot", _layer(member("a/", tarfile.DIRTYPE, mode=0o755),
                                       lambda c: member("a/../../" + _up(c) + "sentinel/pwned", data=b"x")),
         expect="escapes", tags=("traversal",)),
    Case("layer-absolute-name", _layer(lambda c: member(str(c.sentinel / "pwned"), data=b"x")),
         outcome="handle", tags=("traversal",)),  # leading / dropped: written inside the snapshot
    Case("layer-abs-symlink-then-write", _layer(
        lambda c: member("esc", tarfile.SYMTYPE, linkname=str(c.sentinel)),
        member("esc/pwned", data=b"x")), outcome="handle", tags=("symlink",)),
    Case("layer-rel-symlink-then-write", _layer(
        lambda c: member("esc", tarfile.SYMTYPE, linkname=_up(c) + "sentinel"),
        member("esc/pwned", data=b"x")), outcome="handle", tags=("symlink",)),
    Case("layer-symlink-replaced-by-file", _layer(
        lambda c: member("victim", tarfile.SYMTYPE, linkname=str(c.sentinel / "canary")),
        member("victim", data=b"overwritten")), outcome="handle", tags=("symlink",)),
    Case("layer-symlink-dir-then-hardlink", _layer(
        lambda c: member("esc", tarfile.SYMTYPE, linkname=str(c.sentinel)),
        member("h", tarfile.LNKTYPE, linkname="esc/canary")), expect="hardlink", tags=("hardlink",)),
    Case("layer-hardlink-dotdot", _layer(
        lambda c: member("h", tarfile.LNKTYPE, linkname=_up(c) + "sentinel/canary")),
         expect="escapes", tags=("hardlink",)),
    Case("layer-hardlink-absolute", _layer(
        lambda c: member("h", tarfile.LNKTYPE, linkname=str(c.sentinel / "canary"))),
         expect="hardlink", tags=("hardlink",)),
    Case("layer-whiteout-dotdot", _layer(member("a/", tarfile.DIRTYPE, mode=0o755), member("a/.wh..", data=b"")),
         expect="whiteout", tags=("whiteout",)),
    Case("layer-whiteout-dot", _layer(member(".wh..", data=b"")), expect="whiteout", tags=("whiteout",)),
    Case("layer-whiteout-empty", _layer(member(".wh.", data=b"")), expect="whiteout", tags=("whiteout",)),
    Case("layer-whiteout-escape", _layer(lambda c: member(_up(c) + "sentinel/.wh.canary", data=b"")),
         expect="escapes", tags=("whiteout",)),
    Case("layer-devices", _layer(member("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
                                 member("dev/sda", tarfile.BLKTYPE, mode=0o660, devmajor=8),
                                 member("dev/fifo", tarfile.FIFOTYPE)),
         outcome="handle", tags=("device",)),  # containerd creates them too (we are root)
    Case("layer-name-nul", _import_built(lambda c: image([raw_tar([(b"a\0b/../../x", b"x")])])),
         outcome="handle", tags=("names",)),  # ustar names end at the first NUL: "a"
    Case("layer-pax-name-nul", _layer(member("ok", data=b"x", pax={"path": "a\x00/../../x"})),
         expect="nul", tags=("names",)),
    Case("layer-non-utf8-name", _import_built(lambda c: image([raw_tar([(b"caf\xe9-\xff\xfe", b"x")])])),
         outcome="handle", tags=("names",)),
    Case("layer-duplicate-entries", _layer(member("f", data=b"one"), member("f", data=b"two"),
                                           member("d/", tarfile.DIRTYPE, mode=0o755), member("d", data=b"file now")),
         outcome="handle", tags=("duplicates",)),
    Case("layer-gzip-trailing-garbage", _import_built(lambda c: image(
        [tar([member("f", data=b"x")])], compress=lambda raw: gzip.compress(raw, mtime=0) + b"GARBAGE" * 10)),
         outcome="handle", tags=("compression",)),
    Case("layer-size-lie", _import_built(lambda c: image([_size_lie()])), expect="", tags=("sizes",)),
    Case("layer-diff-id-mismatch", _import_built(lambda c: _diff_id_mismatch()), expect="diff", tags=("digests",)),
]


def _size_lie() -> bytes:
    """A member whose header claims 1 MiB while 10 bytes follow, then the end of the tar."""
    raw = bytearray(tar([member("f", data=b"0123456789")]))
    raw[124:136] = b"%011o\0" % (1 << 20)
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    return bytes(raw[:1024])


def _diff_id_mismatch() -> bytes:
    """The layer blob decompresses to another tar than the one the config's diff ID names."""
    other = tar([member("g", data=b"y")])
    return image([tar([member("f", data=b"x")])], compress=lambda raw: gzip.compress(other, mtime=0))


# -- archive / document attacks --------------------------------------------------------------

SEED_TAR = [member("x", data=b"x")]


def _index_edit(fn: Callable) -> Callable[[Ctx], list[str]]:
    return _import_built(lambda c: image([tar(SEED_TAR)], edit_index=fn))


def _manifests(index, blobs, value):  # noqa: ANN001
    index["manifests"][0]["digest"] = value
    return index


def _deep_json(index, blobs):  # noqa: ANN001
    return b"[" * 100_000 + b"]" * 100_000


def _nested_indexes(index, blobs):  # noqa: ANN001
    child = index["manifests"][0]
    for i in range(20):
        data = doc({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child]})
        blobs[f"i{i}"] = data
        child = desc(OCI_INDEX, data)
    index["manifests"] = [dict(child, annotations={"io.containerd.image.name": "docker.io/library/deep:1"})]
    return index


def _diamond(index, blobs):  # noqa: ANN001
    manifest = dict(index["manifests"][0])
    manifest.pop("annotations")
    inner = doc({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [manifest, manifest]})
    blobs["inner"] = inner
    index["manifests"].append(desc(OCI_INDEX, inner, annotations={"io.containerd.image.name": "docker.io/library/diamond:1"}))
    return index


def _self_index(index, blobs):  # noqa: ANN001
    """index.json lists a descriptor with the digest of an earlier index.json (a fixed point is impossible)."""
    first = doc(index)
    index["manifests"].append(desc(OCI_INDEX, first, annotations={"io.containerd.image.name": "docker.io/library/self:1"}))
    return index


def _big_label(index, blobs):  # noqa: ANN001
    index["manifests"][0]["annotations"]["org.example.huge"] = "v" * (8 << 20)
    return index


def _size(index, blobs, value):  # noqa: ANN001
    index["manifests"][0]["size"] = value
    return index


def _name(index, blobs, name):  # noqa: ANN001
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = name
    return index


def _archive_file(entries: list) -> Callable[[Ctx], list[str]]:
    return _import(tar(entries))


def _seed_with(*extra) -> Callable[[Ctx], list[str]]:
    """The seed OCI tar with extra members appended (later entries win, as in ctr)."""
    def make(ctx: Ctx) -> bytes:
        base = seeds.oci_tar().rstrip(b"\0")
        base += b"\0" * (-len(base) % 512)
        return base + tar([e(ctx) if callable(e) else e for e in extra])
    return _import_built(make)


def _pax_huge_header() -> bytes:
    info = tarfile.TarInfo("victim")
    info.pax_headers = {"comment": "x"}
    block = bytearray(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")[:-512])
    block[124:136] = b"77777777777\0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block[:512])
    return bytes(block) + seeds.oci_tar()


def _docker_layers(path: str) -> bytes:
    blobs = seeds.image_blobs()
    config_name = seeds.sha256(blobs["config"])[7:] + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["hostile:1"], "Layers": [path]}]).encode()
    return tar([member("manifest.json", data=manifest), member(config_name, data=blobs["config"])])


ARCHIVE_CASES = [
    Case("digest-traversal", _index_edit(lambda i, b: _manifests(i, b, "sha256:../../x")), expect="digest", tags=("digests",)),
    Case("digest-unknown-algorithm", _index_edit(lambda i, b: _manifests(i, b, "md5:d41d8cd98f00b204e9800998ecf8427e")),
         expect="digest", tags=("digests",)),
    Case("digest-uppercase", _index_edit(lambda i, b: _manifests(i, b, "sha256:" + "A" * 64)), expect="digest", tags=("digests",)),
    Case("size-too-small", _index_edit(lambda i, b: _size(i, b, 10)), tags=("sizes",)),
    Case("size-too-large", _index_edit(lambda i, b: _size(i, b, 1 << 20)), tags=("sizes",)),
    Case("size-2-60", _index_edit(lambda i, b: _size(i, b, 1 << 60)), tags=("sizes", "memory")),
    Case("size-negative", _index_edit(lambda i, b: _size(i, b, -1)), tags=("sizes",)),
    Case("json-deep-100k", _index_edit(_deep_json), expect="nested", tags=("json",)),
    Case("index-nested-20", _index_edit(_nested_indexes), expect="nested", tags=("cycles",)),
    Case("index-diamond", _index_edit(_diamond), outcome="handle", tags=("cycles",)),
    Case("index-lists-index-json", _index_edit(_self_index), outcome="handle", tags=("cycles",)),
    Case("label-8mib", _index_edit(_big_label), outcome="handle", tags=("labels",)),
    # containerd's image store does not parse names either (metadata validateImage): stored as is
    Case("name-with-nul", _index_edit(lambda i, b: _name(i, b, "docker.io/library/a\x00b:1")),
         outcome="handle", tags=("names",)),
    # a lone surrogate escape decodes to U+FFFD, as in Go
    Case("name-non-utf8", _index_edit(lambda i, b: _name(i, b, "docker.io/library/caf\udce9:1")),
         outcome="handle", tags=("names",)),
    Case("archive-dotdot-member", _seed_with(member("../../escape", data=b"x")), expect="unsafe", tags=("traversal",)),
    Case("archive-absolute-member", _seed_with(lambda c: member(str(c.sentinel / "pwned"), data=b"x")),
         expect="unsafe", tags=("traversal",)),
    Case("archive-symlink-blob-escape", _seed_with(member(
        "blobs/sha256/" + seeds.sha256(seeds.image_blobs()["config"])[7:], tarfile.SYMTYPE, linkname="../../../../etc/passwd")),
         expect="outside", tags=("symlink",)),
    Case("archive-symlink-loop", _seed_with(member("a", tarfile.SYMTYPE, linkname="b"), member("b", tarfile.SYMTYPE, linkname="a")),
         expect="loop", tags=("symlink",)),
    Case("archive-hardlink-to-outside", _seed_with(member("h", tarfile.LNKTYPE, linkname="/etc/passwd")),
         outcome="handle", tags=("hardlink",)),  # ignored like ctr does
    Case("archive-duplicate-index", _seed_with(member("index.json", data=seeds.image_blobs()["index"])),
         outcome="handle", tags=("duplicates",)),
    Case("archive-pax-8gib-header", _import(_pax_huge_header()), expect="too large", tags=("memory",)),
    Case("archive-not-a-tar", _import(b"\x00\x01garbage" * 100), tags=("format",)),
    Case("archive-empty", _import(b""), tags=("format",)),
    Case("archive-gzip-trailing-garbage", _import(gzip.compress(seeds.oci_tar(), mtime=0) + b"\x1f\x8bGARBAGE"),
         outcome="handle", tags=("compression",)),
    Case("docker-layer-traversal", _import(_docker_layers("../../../etc/passwd")), tags=("traversal",)),
    Case("docker-layer-absolute", _import(_docker_layers("/etc/passwd")), tags=("traversal",)),
]


# -- bolt attacks (dump, ls) -----------------------------------------------------------------


def _bolt(mutate: Callable[[bytearray], None], name: str = "meta.db") -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        data = bytearray(seeds.bolt_seed(name))
        mutate(data)
        return ["dump", str(_write(ctx, name, bytes(data)))]
    return build


def _meta(field_offset: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    def mutate(data: bytearray) -> None:
        for page in (0, 1):
            struct.pack_into(fmt, data, page * 4096 + 16 + field_offset, value)
            _fix_meta_checksum(data, page, 4096)
    return mutate


def _root_overflow(data: bytearray) -> None:
    root = struct.unpack_from("<Q", data, 16 + 16)[0]
    struct.pack_into("<I", data, root * 4096 + 12, 0xFFFFFFFF)


def _ls_root(tree: BucketTree) -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        meta = ctx.root / "io.containerd.metadata.v1.bolt" / "meta.db"
        meta.parent.mkdir(parents=True)
        write_bolt(meta, tree)
        return ["ls", "--root", str(ctx.root), "-A"]
    return build


def _images_tree(names: list[bytes], label: bytes = b"v") -> BucketTree:
    images = BucketTree()
    for name in names:
        target = BucketTree(entries={b"digest": b"sha256:" + b"0" * 64, b"mediatype": OCI_MANIFEST.encode(),
                                     b"size": b"\x02"})
        images.entries[name] = BucketTree(entries={b"target": target, b"labels": BucketTree(entries={b"big": label})})
    ns = BucketTree(entries={b"images": images})
    return BucketTree(entries={b"v1": BucketTree(entries={b"version": b"\x06", b"default": ns})})


BOLT_CASES = [
    Case("bolt-hwm-2-60", _bolt(_meta(40, "<Q", 1 << 60)), expect="truncated", tags=("sizes", "memory")),
    Case("bolt-page-size-1mib", _bolt(_meta(8, "<I", 1 << 20)), tags=("sizes",)),
    Case("bolt-root-overflow", _bolt(_root_overflow), expect="overflow", tags=("sizes",)),
    Case("bolt-root-is-meta", _bolt(_meta(16, "<Q", 0)), expect="root", tags=("pointers",)),
    Case("bolt-truncated-half", lambda c: ["dump", str(_write(c, "meta.db", seeds.bolt_seed("meta.db")[:65536]))],
         expect="truncated", tags=("sizes",)),
    Case("bolt-empty", lambda c: ["dump", str(_write(c, "meta.db", b""))], tags=("format",)),
    Case("bolt-text", lambda c: ["dump", str(_write(c, "meta.db", b"not a bolt file\n" * 200))], tags=("format",)),
    Case("bolt-names-nul-non-utf8", _ls_root(_images_tree([b"docker.io/library/a\x00b:1", b"caf\xe9:1"])),
         outcome="handle", tags=("names",)),
    Case("bolt-label-4mib", _ls_root(_images_tree([b"docker.io/library/big:1"], b"v" * (4 << 20))),
         outcome="handle", tags=("labels",)),
    Case("bolt-snapshotter-garbage", _bolt(_meta(40, "<Q", 3), "metadata.db"), tags=("pointers",)),
]

CASES: list[Case] = LAYER_CASES + ARCHIVE_CASES + BOLT_CASES


def prepare(ctx: Ctx) -> None:
    """The sentinel the attacks aim at: a file, and a directory readable through a symlink."""
    ctx.sentinel.mkdir(parents=True)
    (ctx.sentinel / "canary").write_text("untouched\n")
    ctx.inputs.mkdir(exist_ok=True)
    os.chmod(ctx.sentinel, 0o755)
