"""apply_layer: containerd's entry semantics, whiteouts in both modes, and hostile input.

Runs as root (chown, mknod, trusted.* xattrs), which is how CI runs.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from ctrconv.errors import CtrconvError, DigestMismatchError, FormatError, UnsafePathError
from ctrconv.layers import apply_layer, copy_tree, effective_mode, tree_listing
from support.layer_tars import MTIME, LayerTar, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layer application tests need root")

NS = 1_000_000_000
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def apply(data: bytes, root: Path, mode: str = "naive", lowers: list[Path] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    return apply_layer(io.BytesIO(data), root, mode=mode, lowers=lowers or [])  # type: ignore[arg-type]


def st(path: Path) -> os.stat_result:
    return os.lstat(path)


# -- entry kinds and metadata -----------------------------------------------------------------

def test_files_dirs_modes_owners_and_times(tmp_path: Path) -> None:
    layer = (LayerTar()
             .dir("bin", mode=0o755, mtime=MTIME + 5)
             .file("bin/tool", b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000)
             .file("zero", b"secret", mode=0o000)
             .dir("tmp", mode=0o1777)
             .dir("shared", mode=0o2775, gid=1000)
             .file("shared/f", b"x" * 3_000_000, mode=0o640)
             .data())
    root = tmp_path / "fs"
    result = apply(layer, root)
    tool = st(root / "bin/tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4755, "setuid must survive the chown"
    assert (tool.st_uid, tool.st_gid) == (1000, 1000)
    assert (root / "bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert tool.st_mtime_ns == MTIME * NS
    assert stat.S_IMODE(st(root / "zero").st_mode) == 0
    assert (root / "zero").read_bytes() == b"secret"
    assert stat.S_IMODE(st(root / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(st(root / "shared").st_mode) == 0o2775
    assert st(root / "shared/f").st_size == 3_000_000
    # directory times are applied after their children were written
    assert st(root / "bin").st_mtime_ns == (MTIME + 5) * NS
    assert st(root / "shared").st_mtime_ns == MTIME * NS
    assert result.diff_id == sha256(layer) and result.bytes == len(layer)
    assert result.entries == 6 and result.mode == "naive"


def test_symlinks_devices_and_fifos(tmp_path: Path) -> None:
    layer = (LayerTar()
             .symlink("sh", "busybox", uid=5, gid=6, mtime=MTIME - 100)
             .symlink("abs", "/etc/passwd")
             .device("null", tarfile.CHRTYPE, 1, 3, mode=0o666)
             .device("loop0", tarfile.BLKTYPE, 7, 0, mode=0o660, gid=6)
             .device("pipe", tarfile.FIFOTYPE, mode=0o600)
             .data())
    root = tmp_path / "fs"
    apply(layer, root)
    link = st(root / "sh")
    assert os.readlink(root / "sh") == "busybox"
    assert (link.st_uid, link.st_gid) == (5, 6)
    assert link.st_mtime_ns == (MTIME - 100) * NS
    assert os.readlink(root / "abs") == "/etc/passwd"
    null = st(root / "null")
    assert stat.S_ISCHR(null.st_mode) and stat.S_IMODE(null.st_mode) == 0o666
    assert (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    loop = st(root / "loop0")
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 0)
    assert loop.st_gid == 6
    assert stat.S_ISFIFO(st(root / "pipe").st_mode)


def test_xattrs_set_except_trusted(tmp_path: Path) -> None:
    layer = (LayerTar()
             .dir("d", xattrs={"user.foo": "bar"})
             .file("d/f", b"1", xattrs={"user.bin": b"\xff\x00\x01", "trusted.evil": "1"})
             .data())
    root = tmp_path / "fs"
    apply(layer, root)
    assert os.getxattr(root / "d", "user.foo") == b"bar"
    assert os.getxattr(root / "d/f", "user.bin") == b"\xff\x00\x01"
    assert "trusted.evil" not in os.listxattr(root / "d/f")


def test_an_access_acl_does_not_widen_the_file_s_mode(tmp_path: Path) -> None:
    """A 0640 file whose access ACL gives a named user rw- (mask rw-): setting the ACL sets the
    group bits from the mask; containerd's chmod after the xattrs sets the mask back from the
    mode (0640, mask r--). ctrconv skipped that chmod where the umask kept the mode, and the file
    came out 0660 with mask rw-: group and user 1000 could write it (a red-team run)."""
    import struct

    every = 0xFFFFFFFF
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, qualifier) for tag, perm, qualifier in
                                          [(1, 6, every), (2, 6, 1000), (4, 4, every), (0x10, 6, every), (0x20, 0, every)])
    layer = LayerTar().file("pa", b"x", mode=0o640, xattrs={"system.posix_acl_access": acl}).data()
    root = tmp_path / "fs"
    try:
        apply(layer, root)
    except OSError as exc:  # pragma: no cover - a filesystem without ACLs
        pytest.skip(f"no POSIX ACLs here: {exc}")
    if "system.posix_acl_access" not in os.listxattr(root / "pa"):
        pytest.skip("no POSIX ACLs on this filesystem")
    assert stat.S_IMODE(st(root / "pa").st_mode) == 0o640
    stored = os.getxattr(root / "pa", "system.posix_acl_access")
    entries = {struct.unpack_from("<H", stored, 4 + 8 * i)[0]: struct.unpack_from("<H", stored, 6 + 8 * i)[0]
               for i in range((len(stored) - 4) // 8)}
    assert entries[0x10] == 4  # mask r--, from the mode's group bits


def test_numbers_beyond_64_bits_are_refused_and_owners_taken_as_32_bits(tmp_path: Path) -> None:
    """Go's tar reader refuses a PAX mtime or uid beyond an int64 (containerd: "invalid tar
    header"); ctrconv clamped the mtime to 0 and unpacked it. A uid within 64 bits but beyond 32
    is what containerd's Lchown hands the kernel as 32 bits (2^32 is root); ctrconv refused it.
    (Both found by a red-team run, checked against ctr images import of 1.6, 1.7 and 2.x.)"""
    from ctrconv.layers.tarread import _num

    for pax in ({"mtime": "99999999999999999999"}, {"uid": "99999999999999999999"}):
        with pytest.raises(FormatError, match="invalid tar header"):
            apply(LayerTar().file("f", pax=pax).data(), tmp_path / f"fs-{len(pax)}-{next(iter(pax))}")
    with pytest.raises(FormatError, match="invalid tar header"):
        _num(b"\x80" + (1 << 80).to_bytes(11, "big"))
    root = tmp_path / "owners"
    apply(LayerTar().file("wraps-to-root", pax={"uid": str(1 << 32)})
          .file("wraps-to-one", pax={"uid": str((1 << 33) + 1), "gid": str((1 << 32) + 7)}).data(), root)
    assert (st(root / "wraps-to-root").st_uid, st(root / "wraps-to-one").st_uid) == (0, 1)
    assert st(root / "wraps-to-one").st_gid == 7


def test_times_atime_max_fraction_and_bounds(tmp_path: Path) -> None:
    layer = (LayerTar()
             .file("later-atime", pax={"atime": str(MTIME + 50)})
             .file("earlier-atime", pax={"atime": str(MTIME - 50)})
             .file("fraction", pax={"mtime": "1700000000.123456789123"})
             .file("negative", mtime=-5)
             .data())
    root = tmp_path / "fs"
    apply(layer, root)
    later = st(root / "later-atime")
    assert (later.st_atime_ns, later.st_mtime_ns) == ((MTIME + 50) * NS, MTIME * NS)
    earlier = st(root / "earlier-atime")
    assert earlier.st_atime_ns == MTIME * NS
    assert st(root / "fraction").st_mtime_ns == 1_700_000_000_123_456_789
    assert st(root / "negative").st_mtime_ns == 0


def test_root_entry_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    os.chmod(root, 0o711)
    apply(LayerTar().dir("./", mode=0o700, uid=1234).file("./a", b"a").data(), root)
    assert stat.S_IMODE(st(root).st_mode) == 0o711 and st(root).st_uid == 0
    assert (root / "a").read_bytes() == b"a"


def test_long_and_non_ascii_names(tmp_path: Path) -> None:
    deep = "/".join(["segment-" + str(i) for i in range(20)]) + "/file"
    layer = LayerTar().file(deep, b"deep").file("caf\u00e9-\u65e5\u672c", b"u").data()
    root = tmp_path / "fs"
    apply(layer, root)
    assert (root / deep).read_bytes() == b"deep"
    assert (root / "caf\u00e9-\u65e5\u672c").read_bytes() == b"u"
    # implicit parents get 0755 root-owned directories
    assert stat.S_IMODE(st(root / "segment-0").st_mode) == 0o755


def test_pax_global_header_does_not_leak_into_entries(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"SCHILY.xattr.user.global": "g", "mtime": "5"}) as tar:
        info = tarfile.TarInfo("f")
        info.mtime = MTIME
        tar.addfile(info, io.BytesIO(b""))
    root = tmp_path / "fs"
    apply(buf.getvalue(), root)
    assert "user.global" not in os.listxattr(root / "f")
    assert st(root / "f").st_mtime_ns == MTIME * NS


# -- hardlinks ---------------------------------------------------------------------------------

def test_hardlinks_share_the_inode(tmp_path: Path) -> None:
    layer = (LayerTar().file("a", b"data", mode=0o640, uid=7)
             .hardlink("b", "a", mode=0o640, uid=7)
             .symlink("s", "a").hardlink("s2", "s").data())
    root = tmp_path / "fs"
    apply(layer, root)
    a, b = st(root / "a"), st(root / "b")
    assert a.st_ino == b.st_ino and a.st_nlink == 2 and b.st_uid == 7
    # a hardlink to a symlink links the symlink itself (never followed)
    assert st(root / "s2").st_ino == st(root / "s").st_ino
    assert stat.S_ISLNK(st(root / "s2").st_mode)


def test_hardlink_escaping_the_root_is_refused(tmp_path: Path) -> None:
    layer = LayerTar().hardlink("passwd", "../../../../etc/passwd").data()
    with pytest.raises(UnsafePathError):
        apply(layer, tmp_path / "fs")


def test_hardlink_through_symlink_stays_inside(tmp_path: Path) -> None:
    layer = LayerTar().symlink("hostetc", "/etc").hardlink("x", "hostetc/passwd").data()
    with pytest.raises(FormatError, match="not in"):
        apply(layer, tmp_path / "fs")  # resolves to <root>/etc/passwd, which does not exist


def test_symlink_loop_in_parent_fails(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="too many symlinks"):
        apply(LayerTar().symlink("etc", "/etc").file("etc/x", b"x").data(), tmp_path / "fs")


def test_overlay_hardlink_to_lower_only_file_fails(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    apply(LayerTar().file("a", b"lower").data(), lower)
    with pytest.raises(FormatError, match="not in this layer"):
        apply(LayerTar().hardlink("b", "a").data(), tmp_path / "upper", "overlay", [lower])


# -- path safety ------------------------------------------------------------------------------

def test_symlinked_parent_never_writes_outside(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    layer = (LayerTar().symlink("etc", str(outside)).file("etc/evil", b"x")
             .symlink("up", "../../../..").file("up/evil2", b"y").data())
    root = tmp_path / "fs"
    apply(layer, root)
    assert not (outside / "evil").exists()
    # absolute link target re-rooted at the snapshot root
    assert (root / str(outside).lstrip("/") / "evil").read_bytes() == b"x"
    # relative link climbing out is clamped at the root
    assert (root / "evil2").read_bytes() == b"y"
    assert os.readlink(root / "etc") == str(outside)


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/../evil", "./../x"])
def test_names_escaping_the_root_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        apply(LayerTar().file(name, b"x").data(), tmp_path / "fs")
    assert not (tmp_path / "evil").exists()


def test_absolute_names_are_confined(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    apply(LayerTar().file("/abs/file", b"a").data(), root)
    assert (root / "abs/file").read_bytes() == b"a"


@pytest.mark.parametrize("name", ["d/.wh..", "d/.wh.", ".wh.."])
@pytest.mark.parametrize("mode", ["naive", "overlay"])
def test_whiteout_of_dotdot_is_refused(tmp_path: Path, name: str, mode: str) -> None:
    lower = tmp_path / "lower"
    apply(LayerTar().file("d/keep", b"k").data(), lower)
    with pytest.raises(UnsafePathError):
        apply(LayerTar().file(name).data(), tmp_path / "fs", mode, [lower])
    assert (lower / "d/keep").exists()


def test_existing_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"original")
    layer = LayerTar().symlink("f", str(target)).file("f", b"replaced").data()
    root = tmp_path / "fs"
    apply(layer, root)
    assert target.read_bytes() == b"original"
    assert stat.S_ISREG(st(root / "f").st_mode) and (root / "f").read_bytes() == b"replaced"


# -- duplicates --------------------------------------------------------------------------------

def test_duplicate_entries_last_one_wins(tmp_path: Path) -> None:
    layer = (LayerTar()
             .file("f", b"first").file("f", b"second", mode=0o600)
             .dir("d", mode=0o700).file("d/child", b"c").dir("d", mode=0o750, uid=3)
             .dir("gone").file("gone/x", b"x").file("gone", b"now a file")
             .file("was-file", b"f").dir("was-file", mode=0o711)
             .data())
    root = tmp_path / "fs"
    apply(layer, root)
    assert (root / "f").read_bytes() == b"second" and stat.S_IMODE(st(root / "f").st_mode) == 0o600
    d = st(root / "d")
    assert stat.S_IMODE(d.st_mode) == 0o750 and d.st_uid == 3 and (root / "d/child").exists()
    assert (root / "gone").read_bytes() == b"now a file"
    assert stat.S_ISDIR(st(root / "was-file").st_mode)


# -- whiteouts ---------------------------------------------------------------------------------

def base_tree(root: Path) -> None:
    apply((LayerTar().dir("data", mode=0o750, uid=1000, mtime=MTIME - 1000,
                          xattrs={"user.keep": "1"})
           .file("data/remove-me", b"r").file("data/stay", b"s")
           .dir("data/opq").file("data/opq/old", b"o").dir("data/opq/sub").file("data/opq/sub/deep")
           .dir("data/gone-dir").file("data/gone-dir/inner").symlink("lib", "usr/lib")
           .dir("usr/lib", mode=0o711, uid=2).file("usr/lib/libc.so").data()), root)
    os.setxattr(root / "data", "trusted.lower", b"no-copy")


def test_naive_whiteouts_delete(tmp_path: Path) -> None:
    lower, native = tmp_path / "lower", tmp_path / "native"
    base_tree(lower)
    copy_tree(lower, native)
    layer = (LayerTar().whiteout("data/remove-me").whiteout("data/gone-dir")
             .file("data/opq/before", b"b").opaque("data/opq").file("data/opq/after", b"a")
             .whiteout("data/never-existed").data())
    result = apply(layer, native, "naive")
    assert result.mode == "naive"
    names = set(os.listdir(native / "data"))
    assert names == {"stay", "opq"}
    assert sorted(os.listdir(native / "data/opq")) == ["after", "before"]
    assert not any(n.startswith(".wh.") for n in tree_listing(native))


def test_naive_opaque_removes_nested_lower_content_under_new_dirs(tmp_path: Path) -> None:
    native = tmp_path / "native"
    base_tree(native)
    layer = LayerTar().dir("data/opq/sub").file("data/opq/sub/new").opaque("data/opq").data()
    apply(layer, native, "naive")
    assert os.listdir(native / "data/opq") == ["sub"]
    assert os.listdir(native / "data/opq/sub") == ["new"]


def test_overlay_whiteouts_are_devices_and_xattrs(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    base_tree(lower)
    layer = (LayerTar().whiteout("data/remove-me", uid=11, gid=12).opaque("data/opq")
             .file("data/opq/new", b"n").data())
    result = apply(layer, upper, "overlay", [lower])
    assert result.mode == "overlay"
    wh = st(upper / "data/remove-me")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0 and stat.S_IMODE(wh.st_mode) == 0
    assert (wh.st_uid, wh.st_gid) == (11, 12)
    assert os.getxattr(upper / "data/opq", "trusted.overlay.opaque") == b"y"
    assert os.listdir(upper / "data/opq") == ["new"]
    assert (lower / "data/remove-me").exists(), "lower layers are never touched"


def test_overlay_mkparent_copies_nearest_lower_attributes(tmp_path: Path) -> None:
    older, lower, upper = tmp_path / "older", tmp_path / "lower", tmp_path / "upper"
    apply(LayerTar().dir("data", mode=0o700, uid=99).dir("other", mode=0o700).data(), older)
    base_tree(lower)
    layer = (LayerTar().file("data/new", b"n").file("lib/added", b"l")
             .file("other/x", b"x").file("fresh/y", b"y").data())
    apply(layer, upper, "overlay", [lower, older])
    data = st(upper / "data")
    assert stat.S_IMODE(data.st_mode) == 0o750 and data.st_uid == 1000, "nearest lower wins"
    assert os.getxattr(upper / "data", "user.keep") == b"1"
    assert "trusted.lower" not in os.listxattr(upper / "data")
    # lower symlink lib -> usr/lib: upper gets a real dir with the link target's attributes
    lib = st(upper / "lib")
    assert stat.S_ISDIR(lib.st_mode) and stat.S_IMODE(lib.st_mode) == 0o711 and lib.st_uid == 2
    assert stat.S_IMODE(st(upper / "other").st_mode) == 0o700, "found in a farther lower"
    assert stat.S_IMODE(st(upper / "fresh").st_mode) == 0o755, "default when no lower has it"


def test_overlay_whiteout_colliding_with_same_layer_file_fails(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    base_tree(lower)
    layer = LayerTar().file("data/stay", b"new").whiteout("data/stay").data()
    with pytest.raises(FormatError, match="already created"):
        apply(layer, tmp_path / "upper", "overlay", [lower])


def test_first_overlay_layer_is_applied_naively(tmp_path: Path) -> None:
    assert effective_mode("overlay", []) == "naive"
    assert effective_mode("overlay", ["x"]) == "overlay"
    layer = LayerTar().file("a", b"a").whiteout("a").whiteout("b").opaque("").data()
    root = tmp_path / "fs"
    result = apply(layer, root, "overlay")
    assert result.mode == "naive"
    assert os.listdir(root) == []
    assert "trusted.overlay.opaque" not in os.listxattr(root)


# -- stream integrity --------------------------------------------------------------------------

def test_diff_id_covers_trailing_bytes(tmp_path: Path) -> None:
    layer = LayerTar().file("a", b"a").data() + b"trailing garbage after the end"
    result = apply(layer, tmp_path / "fs")
    assert result.diff_id == sha256(layer) and result.bytes == len(layer)


def test_expected_diff_id_mismatch(tmp_path: Path) -> None:
    layer = LayerTar().file("a", b"a").data()
    with pytest.raises(DigestMismatchError, match="wrong diff id"):
        apply_layer(io.BytesIO(layer), tmp_path, mode="naive", expected_diff_id=EMPTY_LAYER)
    ok = apply_layer(io.BytesIO(layer), tmp_path / ".", mode="naive",
                     expected_diff_id=sha256(layer))
    assert ok.diff_id == sha256(layer)


def test_empty_layers(tmp_path: Path) -> None:
    assert apply(b"\0" * 1024, tmp_path / "a").diff_id == EMPTY_LAYER
    assert apply(b"", tmp_path / "b").entries == 0
    assert apply(LayerTar().data(), tmp_path / "c").entries == 0


def test_corrupt_header_mid_stream_fails(tmp_path: Path) -> None:
    layer = bytearray(LayerTar().file("a", b"a").file("b", b"b").data())
    second = layer.index(b"b\0", 1024)  # the second entry's ustar name field
    layer[second + 148:second + 156] = b"9999999\0"  # bad checksum
    with pytest.raises(FormatError, match="invalid tar header"):
        apply(bytes(layer), tmp_path / "fs")


def test_truncated_stream_fails(tmp_path: Path) -> None:
    layer = LayerTar().file("big", b"z" * 100_000).data()
    with pytest.raises(FormatError):
        apply(layer[:50_000], tmp_path / "fs")


def test_zero_block_followed_by_data_fails(tmp_path: Path) -> None:
    header = LayerTar().file("a", b"a").data()[:1024]
    with pytest.raises(FormatError, match="zero block"):
        apply(header + b"\0" * 512 + b"x" * 512, tmp_path / "fs")


@pytest.mark.parametrize("kind", [tarfile.CONTTYPE, b"V"])
def test_unsupported_entry_types_fail(tmp_path: Path, kind: bytes) -> None:
    with pytest.raises(FormatError, match="unsupported type"):
        apply(LayerTar().add(LayerTar.info("x", kind), b"").data(), tmp_path / "fs")


def test_target_must_exist(tmp_path: Path) -> None:
    with pytest.raises(CtrconvError):
        apply_layer(io.BytesIO(b""), tmp_path / "missing", mode="naive")


# -- chown skipped where the kernel already gives the right owner --------------------------------

def test_root_owned_entries_skip_chown_but_setgid_parents_do_not(tmp_path: Path, monkeypatch) -> None:
    """New entries owned by us in a directory handing down our group need no chown; a setgid
    directory (or one of another group) hands down its own group, so its children are chowned."""
    calls: list[object] = []
    real = os.chown
    monkeypatch.setattr(os, "chown", lambda path, *a, **kw: (calls.append(path), real(path, *a, **kw)))
    layer = (LayerTar().dir("plain").file("plain/a", b"a").symlink("plain/s", "a")
             .dir("sgid", mode=0o2775, gid=1000).file("sgid/b", b"b").dir("sgid/sub")
             .dir("other", gid=7).file("other/c", b"c")
             .file("mine", b"m", uid=5).data())
    root = tmp_path / "fs"
    apply(layer, root)
    for name, gid in [("plain/a", 0), ("plain/s", 0), ("sgid/b", 0), ("sgid/sub", 0), ("other/c", 0)]:
        assert st(root / name).st_gid == gid and st(root / name).st_uid == 0, name
    assert st(root / "mine").st_uid == 5
    assert stat.S_IMODE(st(root / "sgid/sub").st_mode) == 0o755
    # chowned: the two dirs of other groups (their own entries), the children of sgid and
    # other, and the file of uid 5; not plain, plain/a, plain/s
    assert len(calls) == 6


def test_setgid_root_and_lower_parents_still_chown(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    os.chown(root, 0, 1234)
    os.chmod(root, 0o2755)
    apply(LayerTar().file("top", b"t").dir("d").file("d/x", b"x").data(), root)
    assert st(root / "top").st_gid == 0 and st(root / "d").st_gid == 0 and st(root / "d/x").st_gid == 0
    lower = tmp_path / "lower"
    apply(LayerTar().dir("data", mode=0o2775, gid=1000).data(), lower)
    upper = tmp_path / "upper"
    apply(LayerTar().file("data/new", b"n").data(), upper, "overlay", [lower])
    assert st(upper / "data").st_gid == 1000 and st(upper / "data/new").st_gid == 0


def test_replaced_directory_forgets_its_group(tmp_path: Path) -> None:
    """x/e is plain, then removed with x; mkparent recreates it from a setgid lower."""
    lower = tmp_path / "lower"
    apply(LayerTar().dir("x").dir("x/e", mode=0o2775, gid=1000).data(), lower)
    upper = tmp_path / "upper"
    layer = (LayerTar().dir("x/e").file("x", b"now a file").dir("x")
             .file("x/e/g", b"g").data())
    apply(layer, upper, "overlay", [lower])
    e = st(upper / "x/e")
    assert e.st_gid == 1000 and stat.S_IMODE(e.st_mode) == 0o2775, "copied up from the lower"
    assert st(upper / "x/e/g").st_gid == 0


# -- early writeback ---------------------------------------------------------------------------

def test_writeback_is_started_for_each_large_file_as_it_is_written(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of 1 MiB or more are handed to the kernel's writeback as soon as their data is in
    (the final syncfs then finds little left); small ones are left to the syncfs."""
    from ctrconv import writeback

    started: list[tuple[int, int]] = []
    monkeypatch.setattr(writeback, "_sync_file_range",
                        lambda fd, offset, length, flags: started.append((os.fstat(fd).st_ino, flags)) or 0)
    big, huge = os.urandom(1 << 20), os.urandom(3 << 20)
    layer = (LayerTar().file("a/big", big).file("a/small", b"s" * ((1 << 20) - 1)).file("b/huge", huge)
             .hardlink("b/link", "b/huge").data())
    root = tmp_path / "fs"
    before = {int(n) for n in os.listdir("/proc/self/fd")}
    apply(layer, root)
    # the apply waited for its helper: every call made, every duplicate descriptor closed
    assert sorted(started) == sorted([(st(root / "a/big").st_ino, 2), (st(root / "b/huge").st_ino, 2)])
    assert {int(n) for n in os.listdir("/proc/self/fd")} == before
    assert (root / "a/big").read_bytes() == big and (root / "b/huge").read_bytes() == huge


def test_a_failed_apply_leaves_no_writeback_thread_or_descriptor(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from ctrconv import writeback

    started: list[int] = []
    monkeypatch.setattr(writeback, "_sync_file_range", lambda fd, offset, length, flags: started.append(fd) or 0)
    layer = LayerTar().file("big", os.urandom(1 << 20)).file("cut", os.urandom(2 << 20)).data()
    before = {int(n) for n in os.listdir("/proc/self/fd")}
    with pytest.raises(FormatError):
        apply(layer[:(2 << 20)], tmp_path / "fs")  # ends inside the second file
    assert {int(n) for n in os.listdir("/proc/self/fd")} == before
    assert not [t for t in threading.enumerate() if t.name == "file-writeback"]
    assert len(started) <= 1  # only the complete file could have been handed over
