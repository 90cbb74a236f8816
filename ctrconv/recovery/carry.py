"""What ``rebuild -o`` does not rebuild, carried into the new root as it is.

A root holds more than the stores a rebuild writes again (content, meta.db, the overlayfs and
native snapshotters): CRI's per-container status and sandbox files
(``io.containerd.grpc.v1.cri``), the daemon's identity (``io.containerd.grpc.v1.introspection``),
the runtimes' and other snapshotters' directories. The recovery runbook swaps the new root in
for the damaged one; without these a node's CRI found its containers' status gone (a docs red
team run). They are copied with their modes, owners, times and extended attributes, on the
root's own filesystem only (a mount below it is left empty: a snapshot a dead containerd left
mounted under ``tmpmounts``); symbolic links are copied as links, never followed; sockets are
left (meaningless without their listener).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from ctrconv.containerd import schema as K
from ctrconv.containerd.root import REBUILD_JOURNAL, ContainerdRoot
from ctrconv.recovery.content import QUARANTINE


def rebuilt_entries() -> frozenset[str]:
    """The top-level names of a root that a rebuild writes itself, or that are ctrconv's own."""
    return frozenset({K.CONTENT_PLUGIN_DIR, K.METADATA_PLUGIN_DIR, QUARANTINE, REBUILD_JOURNAL,
                      *(K.snapshotter_dir(sn) for sn in K.TREE_SNAPSHOTTERS)})


def carry_over(source: ContainerdRoot, target: Path) -> list[str]:
    """Copy every top-level entry of ``source`` the rebuild does not write into ``target``;
    returns their names. The root directory's own mode and owner are taken over too."""
    skip = rebuilt_entries()
    device = os.lstat(source.path).st_dev
    carried = []
    for entry in sorted(os.scandir(source.path), key=lambda e: e.name):
        if entry.name in skip or entry.name.startswith("."):
            continue  # (dot names: ctrconv's temp files and locks)
        _copy(Path(entry.path), target / entry.name, device)
        carried.append(entry.name)
    _take_metadata(source.path, target)
    return carried


def _copy(src: Path, dst: Path, device: int) -> None:
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dst, 0o700)
        if st.st_dev == device:  # (a mount point's contents are not the root's: a snapshot a
            # dead containerd left mounted under tmpmounts/, a bind mount; its directory stays)
            for child in sorted(os.scandir(src), key=lambda e: e.name):
                _copy(Path(child.path), dst / child.name, device)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
    elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        os.mknod(dst, st.st_mode, st.st_rdev)
    else:
        return  # a socket
    _take_metadata(src, dst, st)


def _take_metadata(src: Path, dst: Path, st: os.stat_result | None = None) -> None:
    """Owner, mode, extended attributes and times of ``src`` onto ``dst`` (a symlink's own)."""
    st = st or os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    link = stat.S_ISLNK(st.st_mode)
    try:
        for name in os.listxattr(src, follow_symlinks=False):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    except OSError:
        pass  # (a filesystem without xattrs on either side)
    if not link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
