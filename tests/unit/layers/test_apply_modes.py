"""apply_layer's short path for new files: created with their final mode (no ``fchmod``) and
without an ``lstat`` first, yet every mode comes out exactly as the tar says.

The short path is taken only while the umask alone decides a new file's mode; a default ACL
(on the target, copied up from a lower, or set by the layer itself) and a target that was not
empty turn it off. Runs as root (chown, ACL xattrs), which is how CI runs.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path
from typing import Iterator

import pytest

from ctrconv.layers import apply_layer
from support.layer_tars import LayerTar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layer application tests need root")

ACL_DEFAULT = "system.posix_acl_default"
MODES = [0o777, 0o755, 0o644, 0o640, 0o600, 0o000, 0o4755, 0o2755, 0o1777, 0o6711]


def acl(user: int, group: int, other: int) -> bytes:
    """A minimal POSIX ACL xattr value (version 2: owner, group and other entries)."""
    entries = [(0x01, user), (0x04, group), (0x20, other)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in entries)


RESTRICTIVE = acl(6, 4, 0)  # rw- r-- ---: files created under it lose bits the tar sets


@pytest.fixture(params=[0o022, 0o077, 0o000])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield int(request.param)
    finally:
        os.umask(old)


def apply(data: bytes, root: Path, mode: str = "naive", lowers: list[Path] | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    apply_layer(io.BytesIO(data), root, mode=mode, lowers=lowers or [])  # type: ignore[arg-type]


def layer_of_modes(prefix: str = "", tar: LayerTar | None = None) -> bytes:
    tar = tar or LayerTar()
    for mode in MODES:
        tar.file(f"{prefix}f{mode:o}", f"{mode:o}".encode(), mode=mode, uid=1000, gid=1000)
    return tar.data()


def assert_modes(root: Path, prefix: str = "") -> None:
    for mode in MODES:
        path = root / f"{prefix}f{mode:o}"
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == mode, f"{path.name}: {stat.S_IMODE(st.st_mode):o}"
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        assert path.read_bytes() == f"{mode:o}".encode()


def acl_supported(path: Path) -> bool:
    try:
        os.setxattr(path, ACL_DEFAULT, RESTRICTIVE)
    except OSError:
        return False
    os.removexattr(path, ACL_DEFAULT)
    return True


def test_modes_exact_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    apply(layer_of_modes(), tmp_path / "fs")
    assert_modes(tmp_path / "fs")


def test_modes_exact_on_a_non_empty_target(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "fs"
    apply(LayerTar().file("old", b"o").data(), root)
    apply(layer_of_modes(), root)
    assert_modes(root)


def test_fresh_layer_needs_no_lstat_or_fchmod_per_plain_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the short path: with umask 022 a 0644 file costs open, write, fchown,
    futimens, close: no lstat of its path and no fchmod."""
    old = os.umask(0o022)
    calls: list[tuple[str, object]] = []
    real_chmod, real_lstat = os.chmod, os.lstat

    def chmod(target: object, *args: object, **kw: object) -> None:
        calls.append(("chmod", target))
        real_chmod(target, *args, **kw)  # type: ignore[arg-type]

    def lstat(target: object, *args: object, **kw: object) -> os.stat_result:
        calls.append(("lstat", os.fspath(target) if not isinstance(target, int) else target))  # type: ignore[arg-type]
        return real_lstat(target, *args, **kw)  # type: ignore[arg-type]

    root = tmp_path / "fs"
    root.mkdir()
    layer = LayerTar().dir("d", mode=0o755)
    for i in range(20):
        layer.file(f"d/f{i}", b"x" * i, mode=0o644)
    data = layer.data()
    try:
        monkeypatch.setattr(os, "chmod", chmod)
        monkeypatch.setattr(os, "lstat", lstat)
        apply_layer(io.BytesIO(data), root, mode="naive")
    finally:
        os.umask(old)
    file_calls = [c for c in calls if isinstance(c[1], int) or "/d/f" in str(c[1])]
    assert file_calls == [], file_calls
    assert ("chmod", str(root / "d")) in [(k, os.fspath(t)) for k, t in calls if not isinstance(t, int)]
    assert all(stat.S_IMODE(real_lstat(root / f"d/f{i}").st_mode) == 0o644 for i in range(20))


def test_default_acl_set_by_the_layer(tmp_path: Path, umask: int) -> None:
    if not acl_supported(tmp_path):
        pytest.skip("filesystem without POSIX ACLs")
    tar = LayerTar().dir("acl", mode=0o755, xattrs={ACL_DEFAULT: RESTRICTIVE})
    apply(layer_of_modes("acl/", tar), tmp_path / "fs")
    assert os.getxattr(tmp_path / "fs/acl", ACL_DEFAULT) == RESTRICTIVE
    assert_modes(tmp_path / "fs", "acl/")


def test_default_acl_on_the_target(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    if not acl_supported(root):
        pytest.skip("filesystem without POSIX ACLs")
    os.setxattr(root, ACL_DEFAULT, RESTRICTIVE)
    apply(layer_of_modes(), root)
    assert_modes(root)


def test_default_acl_copied_up_from_a_lower(tmp_path: Path, umask: int) -> None:
    lower = tmp_path / "lower"
    apply(LayerTar().dir("d", mode=0o755).data(), lower)
    if not acl_supported(lower / "d"):
        pytest.skip("filesystem without POSIX ACLs")
    os.setxattr(lower / "d", ACL_DEFAULT, RESTRICTIVE)
    upper = tmp_path / "upper"
    apply(layer_of_modes("d/"), upper, mode="overlay", lowers=[lower])  # "d" comes from the lower
    assert os.getxattr(upper / "d", ACL_DEFAULT) == RESTRICTIVE
    assert_modes(upper, "d/")


def test_memoised_parents_follow_a_directory_replaced_by_a_symlink(tmp_path: Path) -> None:
    """Parents are resolved from memoised ones (one lstat per entry); a directory replaced by
    a symlink later in the layer re-routes the entries after it, confined to the root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = (LayerTar().dir("a").dir("a/b").file("a/b/x", b"1")
             .symlink("a", str(outside)).file("a/b/y", b"2")
             .dir("c").symlink("c/d", "../a").file("c/d/b/z", b"3").data())
    root = tmp_path / "fs"
    apply(layer, root)
    assert os.listdir(outside) == []
    assert os.readlink(root / "a") == str(outside)
    confined = root / str(outside).lstrip("/")
    assert (confined / "b/y").read_bytes() == b"2" and (confined / "b/z").read_bytes() == b"3"
    assert not (confined / "b/x").exists()
