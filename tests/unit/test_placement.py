"""Inode placement (``ctrconv.placement``): the temp directory snapshot trees are built in is
flagged "top of directory hierarchy" where the filesystem knows the flag, other flags are kept,
nothing else is changed, and filesystems without the flag are left alone without an error."""

from __future__ import annotations

import array
import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from ctrconv import placement
from ctrconv.containerd import schema as K
from ctrconv.placement import FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL, has_spread_flag, spread_subdirectories
from ctrconv.sinks.containerd_root import copy_images_to_root
from ctrconv.sinks.containerd_root import snapshots as snapshots_module

from support.layouts import LayoutBuilder, LayoutSource

FS_NOATIME_FL = 0x00000080
OVERLAY = Path(K.snapshotter_dir("overlayfs"))


def _flags(path: Path) -> int | None:
    """The directory's inode flags, None where the filesystem has none."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        return buf[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def _needs_flags(path: Path) -> None:
    if _flags(path) is None:
        pytest.skip(f"{path}'s filesystem has no inode flags (FS_IOC_GETFLAGS)")


def test_the_flag_is_set_and_other_flags_kept(tmp_path: Path) -> None:
    _needs_flags(tmp_path)
    target = tmp_path / "d"
    target.mkdir()
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:  # another flag the directory already has must survive
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("i", [(_flags(target) or 0) | FS_NOATIME_FL]), True)
    finally:
        os.close(fd)
    assert not has_spread_flag(target)
    assert spread_subdirectories(target) is True
    flags = _flags(target)
    assert flags is not None and flags & FS_TOPDIR_FL and flags & FS_NOATIME_FL
    assert spread_subdirectories(target) is True  # again: unchanged, still True
    assert _flags(target) == flags


def test_where_the_flag_cannot_be_set_nothing_happens(tmp_path: Path) -> None:
    assert spread_subdirectories(tmp_path / "missing") is False
    (tmp_path / "file").write_bytes(b"")
    assert spread_subdirectories(tmp_path / "file") is False
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    assert spread_subdirectories(tmp_path / "link") is False  # never through a symlink
    assert not has_spread_flag(tmp_path / "real")



def test_a_filesystem_that_refuses_the_flag_is_left_as_it_was() -> None:
    """tmpfs: no inode flags at all on older kernels, some but not this one on newer ones."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    directory = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        before = _flags(directory)
        result = spread_subdirectories(directory)
        assert result is has_spread_flag(directory)  # True only if the flag really is there
        if not result:
            assert _flags(directory) == before
    finally:
        directory.rmdir()


def test_snapshot_trees_are_built_in_a_flagged_dir_and_installed_without_the_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_flags(tmp_path)
    builder = LayoutBuilder(tmp_path / "layout")
    builder.image("docker.io/library/t:1", [{"etc/hello": b"hello\n"}, {"etc/new": b"n", "bin/x": b"x"}])
    seen: list[tuple[Path, bool]] = []

    def recording(directory: str | os.PathLike[str]) -> bool:
        result = placement.spread_subdirectories(directory)
        seen.append((Path(directory), result and has_spread_flag(directory)))
        return result

    monkeypatch.setattr(snapshots_module, "spread_subdirectories", recording)
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root)
    # one temp dir for both layers' trees, flagged while they were built
    assert [(p.parent, p.name.startswith(".ctrconv-tmp-"), flagged) for p, flagged in seen] == [
        (root / OVERLAY, True, True)]
    assert not seen[0][0].exists()
    installed = sorted((root / OVERLAY / "snapshots").iterdir())
    assert len(installed) == 2
    for snap in installed:  # the flag is not inherited: what containerd gets is unchanged
        assert not has_spread_flag(snap) and not has_spread_flag(snap / "fs")
    assert (installed[0] / "fs" / "etc" / "hello").read_bytes() == b"hello\n"
