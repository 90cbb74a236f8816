"""Where the filesystem puts the inodes of a tree about to be unpacked: a fresh region.

Why: on ext4 *without a journal* (a common VM and CI set-up; ``/proc/fs/ext4/<dev>/journal_task``
reads ``<none>``) every new inode is searched for with ``find_inode_bit``, which skips free
inodes deleted in the last 60 s (360 s while their inode-table block is still dirty) and calls
``recently_deleted`` - a buffer-cache lookup - for each one it skips, from the start of the
group on every allocation. A directory whose block group holds thousands of such inodes (a
previous unpack or test tree removed nearby a moment ago) makes every ``open(O_CREAT)``,
``mkdir`` and ``symlink`` below it walk them all: measured on this project's VM, a pull of the
~5,700-entry ``bench_registry`` layer into a root whose previous copy had just been removed
spent 4-6 s of kernel time there instead of ~1 s, growing with each create/remove cycle.

ext4's answer is the "top of directory hierarchy" flag (``chattr +T``, ``FS_TOPDIR_FL``): the
Orlov allocator places each subdirectory of a flagged directory in the block group with the
fewest directories among those with more free inodes and blocks than average - unrelated to
the parent's group, which is where recent removals pile up - and the subdirectory's own files
and subdirectories then stay in that new group. Snapshot trees are built in a temp directory
ctrconv creates and removes itself (``.ctrconv-tmp-*``), and so are the trees ``verify --deep``
re-applies; flagging it costs one ``ioctl``, changes nothing that is read back (the flag is not
inherited: not the trees, not their attributes), and is a no-op where the filesystem does not
know the flag. The group search starts from a hash of the subdirectory's *name*, so each tree
needs a name of its own (a fixed name lands where the previous tree was just removed).
"""

from __future__ import annotations

import array
import fcntl
import os

#: ``_IOR('f', 1, long)`` / ``_IOW('f', 2, long)``; the kernel reads and writes an ``int``
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def spread_subdirectories(directory: str | os.PathLike[str]) -> bool:
    """Mark ``directory`` (one ctrconv created) as a top of a directory hierarchy, so the
    filesystem places each new subdirectory in a fresh block group. Advisory: False where the
    filesystem or the platform does not support it (nothing changed then)."""
    return _top_of_hierarchy(directory, mark=True)


def has_spread_flag(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` carries the flag (False where flags cannot be read)."""
    return _top_of_hierarchy(directory, mark=False)


def _top_of_hierarchy(directory: str | os.PathLike[str], *, mark: bool) -> bool:
    """Whether ``directory`` carries the flag, once set when ``mark``; False where its flags
    cannot be read or set (ENOTTY on tmpfs and overlayfs, EOPNOTSUPP, EPERM) or it cannot be
    opened as a directory (a symlink is not followed)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        if mark and not flags[0] & FS_TOPDIR_FL:
            flags[0] |= FS_TOPDIR_FL
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
        return bool(flags[0] & FS_TOPDIR_FL)
    except OSError:
        return False
    finally:
        os.close(fd)
