"""What ``rebuild -o`` does not rebuild, carried into the new root as it is.

A root holds more than the stores a rebuild writes again (content, meta.db, the overlayfs and
native snapshotters): CRI's per-container status and sandbox files
(``io.containerd.grpc.v1.cri``), the daemon's identity (``io.containerd.grpc.v1.introspection``),
the runtimes' and other snapshotters' directories. The recovery runbook swaps the new root in
for the damaged one; without these a node's CRI found its containers' status gone (a docs red
team run). They are copied with their modes, owners, times, extended attributes, hard links
and holes (a blockfile snapshotter's sparse scratch file stays sparse), on the root's own
mounts only: a mount below the root (a snapshot a dead containerd left mounted under
``tmpmounts``, a bind mount) is left as an empty directory. Symbolic links are copied as links,
never followed; sockets are left (meaningless without their listener). A directory the
rebuild made itself (a snapshotter's) is merged into: what it wrote is never replaced.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ctrconv.containerd import schema as K
from ctrconv.containerd.root import REBUILD_JOURNAL, ContainerdRoot
from ctrconv.layers.copy import copy_file_data
from ctrconv.recovery.content import QUARANTINE


def rebuilt_entries() -> frozenset[str]:
    """The top-level names of a root that a rebuild writes itself, or that are ctrconv's own."""
    return frozenset({K.CONTENT_PLUGIN_DIR, K.METADATA_PLUGIN_DIR, QUARANTINE, REBUILD_JOURNAL,
                      *(K.snapshotter_dir(sn) for sn in K.TREE_SNAPSHOTTERS)})


def carry_over(source: ContainerdRoot, target: Path) -> list[str]:
    """Copy every top-level entry of ``source`` the rebuild does not write into ``target``;
    returns the names of those copied. The root directory's own mode and owner are taken over."""
    skip = rebuilt_entries()
    copier = _Copier(_mount_points_below(source.path), os.lstat(source.path).st_dev)
    carried = []
    for entry in sorted(os.scandir(source.path), key=lambda e: e.name):
        if entry.name in skip or entry.name.startswith("."):
            continue  # (dot names: ctrconv's temp files and locks)
        if copier.copy_tree(Path(entry.path), target / entry.name):
            carried.append(entry.name)
    _take_metadata(source.path, target, os.lstat(source.path))
    return carried


def _mount_points_below(root: Path) -> frozenset[str]:
    """Mount points strictly below ``root`` (``/proc/self/mountinfo``: bind mounts of the same
    filesystem have the device of their parent, so ``st_dev`` alone misses them)."""
    base = os.path.realpath(root)
    found = set()
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) > 4:
                    point = _unescape(fields[4])
                    if point.startswith(base + "/"):
                        found.add(point)
    except OSError:
        pass
    return frozenset(found)


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class _Copier:
    """One copy of trees: hard links kept by inode, mounts not entered, no recursion (a tree
    nested deeper than Python's stack is copied whole)."""

    def __init__(self, mounts: frozenset[str], device: int) -> None:
        self.mounts = mounts
        self.device = device
        self.linked: dict[tuple[int, int], Path] = {}

    def copy_tree(self, src: Path, dst: Path) -> bool:
        """Copy ``src`` to ``dst``; False when ``src`` is nothing to copy (a socket)."""
        st = os.lstat(src)
        if stat.S_ISSOCK(st.st_mode):
            return False
        finish: list[tuple[Path, Path, os.stat_result]] = []  # directories: metadata last
        stack = [(src, dst, st)]
        while stack:
            s, d, st = stack.pop()
            if stat.S_ISDIR(st.st_mode):
                made = not d.is_dir()
                if made:
                    os.mkdir(d, 0o700)
                if st.st_dev == self.device and os.path.realpath(s) not in self.mounts:
                    for child in os.scandir(s):
                        cst = os.lstat(child.path)
                        if not stat.S_ISSOCK(cst.st_mode):
                            stack.append((Path(child.path), d / child.name, cst))
                if made:  # (a directory the rebuild made keeps its own metadata)
                    finish.append((s, d, st))
            elif not os.path.lexists(d):  # (never over what the rebuild wrote)
                self._copy_entry(s, d, st)
        for s, d, st in reversed(finish):  # (children first: their writes move the dir's mtime)
            _take_metadata(s, d, st)
        return True

    def _copy_entry(self, src: Path, dst: Path, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) and key in self.linked:
            os.link(self.linked[key], dst)
            return
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(src, dst, st.st_size)
        else:  # a fifo or a device node
            os.mknod(dst, st.st_mode, st.st_rdev)
        _take_metadata(src, dst, st)
        if st.st_nlink > 1:
            self.linked[key] = dst


def _copy_file(src: Path, dst: Path, size: int) -> None:
    """The file's data extents only: holes stay holes (:func:`~ctrconv.layers.copy.copy_file_data`)."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        copy_file_data(fin.fileno(), fout.fileno(), size)


def _take_metadata(src: Path, dst: Path, st: os.stat_result) -> None:
    """Owner, mode, extended attributes and times of ``src`` onto ``dst`` (a symlink's own);
    an attribute the target refuses does not cost the others."""
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            continue
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
