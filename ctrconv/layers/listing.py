"""Describe an unpacked snapshot tree, and compare two descriptions.

The shape is the one the fixture builder records for containerd's own snapshots
(``fixtures/fx_snapshots.py``), so a tree unpacked by ctrconv can be diffed against it directly.
Each entry, keyed by its path (``/`` is the tree root, others ``/a/b``):

``path``, ``type`` (file, dir, symlink, char, block, fifo, socket), ``mode`` (``"%04o"`` of the
permission bits incl. setuid/setgid/sticky), ``uid``, ``gid``, ``size`` (files and symlinks, else
0), ``mtime_ns``, ``nlink``, ``xattrs`` (all namespaces, ``trusted.*`` included; UTF-8 values as
text, others as ``"hex:<hex>"``), plus ``sha256`` (files, ``sha256:<hex>``), ``link`` (symlink
target), ``rdev`` ([major, minor] for char/block) and ``hardlink_group`` (non-dirs with nlink > 1:
the first path, in sorted order, sharing the inode).

:func:`compare_listings` compares everything except what containerd sets to the time of the
apply: ``mtime_ns`` of directories (``./`` is ignored, parents are created on demand, children
touch them) and of overlay whiteouts (char 0/0 devices get no times). Pass ``ignore`` to change it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any, Callable, Iterable, Mapping

CHUNK = 1 << 20

Entry = dict[str, Any]
Listing = dict[str, Entry]

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        try:
            out[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            out[name] = "hex:" + value.hex()
    return out


def describe(path: str, rel: str) -> tuple[Entry, tuple[int, int]]:
    """One entry (see module doc) and its (device, inode) key."""
    st = os.lstat(path)
    kind = _TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
    entry: Entry = {
        "path": rel,
        "type": kind,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": st.st_size if kind in ("file", "symlink") else 0,
        "mtime_ns": st.st_mtime_ns,
        "nlink": st.st_nlink,
        "xattrs": _xattrs(path),
    }
    if kind == "file":
        entry["sha256"] = _sha256(path)
    elif kind == "symlink":
        entry["link"] = os.readlink(path)
    elif kind in ("char", "block"):
        entry["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    return entry, (st.st_dev, st.st_ino)


def tree_listing(top: str | os.PathLike[str]) -> Listing:
    """Every path under ``top`` (itself as ``/``), keyed by path, in sorted order."""
    root = os.fspath(top)
    found: list[tuple[Entry, tuple[int, int]]] = [describe(root, "/")]
    stack = [(root, "")]
    while stack:
        current, rel = stack.pop()
        with os.scandir(current) as it:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in children:
            path, child_rel = current + "/" + name, rel + "/" + name
            found.append(describe(path, child_rel))
            if is_dir:
                stack.append((path, child_rel))
    found.sort(key=lambda item: item[0]["path"])
    groups: dict[tuple[int, int], str] = {}
    listing: Listing = {}
    for entry, key in found:
        if entry["type"] != "dir" and entry["nlink"] > 1:
            entry["hardlink_group"] = groups.setdefault(key, entry["path"])
        listing[entry["path"]] = entry
    return listing


def as_listing(entries: Iterable[Entry] | Mapping[str, Entry]) -> Listing:
    """Accept the fixture builder's list form as well as a :func:`tree_listing` dict."""
    if isinstance(entries, Mapping):
        return dict(entries)
    return {entry["path"]: entry for entry in entries}


def _apply_time_field(field: str, entry: Entry) -> bool:
    if field != "mtime_ns":
        return False
    return entry.get("type") == "dir" or (
        entry.get("type") == "char" and entry.get("rdev") == [0, 0]
    )


def compare_listings(
    expected: Iterable[Entry] | Mapping[str, Entry],
    actual: Iterable[Entry] | Mapping[str, Entry],
    *,
    ignore: Callable[[str, Entry], bool] = _apply_time_field,
) -> list[str]:
    """Human-readable differences (empty when equal); ``ignore(field, entry)`` skips a field."""
    want, got = as_listing(expected), as_listing(actual)
    problems: list[str] = []
    for path in sorted(want.keys() | got.keys()):
        if path not in got:
            problems.append(f"{path}: missing")
            continue
        if path not in want:
            problems.append(f"{path}: unexpected {got[path].get('type')}")
            continue
        a, b = want[path], got[path]
        for field in sorted(a.keys() | b.keys()):
            if ignore(field, a) or ignore(field, b):
                continue
            if a.get(field) != b.get(field):
                problems.append(f"{path}: {field} {a.get(field)!r} != {b.get(field)!r}")
    return problems
