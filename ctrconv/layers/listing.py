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
from typing import Any, Callable, Iterable, Iterator, Mapping

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


def describe(path: str, rel: str, *, contents: bool = True) -> tuple[Entry, tuple[int, int]]:
    """One entry (see module doc) and its (device, inode) key; ``contents=False`` leaves a
    file's ``sha256`` to the caller (a hard link's is its group's)."""
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
    if kind == "file" and contents:
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


def walk_entries(top: str | os.PathLike[str]) -> Iterator[Entry]:
    """The entries of :func:`tree_listing`, one at a time: depth first, each directory's
    names sorted (so :func:`entry_order` increases), memory bounded by the open
    directories' names, not by the tree. ``hardlink_group`` is the first path of the inode in
    this order, and each inode is hashed once (its other links take the same ``sha256``)."""
    root = os.fspath(top)
    groups: dict[tuple[int, int], tuple[str, str | None]] = {}

    def one(path: str, rel: str) -> Entry:
        entry, key = describe(path, rel, contents=False)
        linked = entry["type"] != "dir" and entry["nlink"] > 1
        found = groups.get(key) if linked else None
        if found is None:
            sha = _sha256(path) if entry["type"] == "file" else None
            if linked:
                found = groups[key] = (rel, sha)
        else:
            sha = found[1]
        if sha is not None:
            entry["sha256"] = sha
        if found is not None:
            entry["hardlink_group"] = found[0]
        return entry

    yield one(root, "/")
    stack: list[tuple[str, str, Iterator[str]]] = [(root, "", iter(sorted(os.listdir(root))))]
    while stack:
        current, rel, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        path, child_rel = current + "/" + name, rel + "/" + name
        entry = one(path, child_rel)
        yield entry
        if entry["type"] == "dir":
            stack.append((path, child_rel, iter(sorted(os.listdir(path)))))


def entry_order(path: str) -> list[str]:
    """The key :func:`walk_entries` yields paths in (its components)."""
    return [] if path == "/" else path[1:].split("/")


def compare_walks(expected: Iterator[Entry], actual: Iterator[Entry], *, limit: int = 1000,
                  ignore: Callable[[str, Entry], bool] | None = None) -> tuple[list[str], int]:
    """:func:`compare_listings` of two :func:`walk_entries` streams, merged as they come: the
    first ``limit`` differences and how many there are in all. Memory stays flat however many
    entries the trees hold (two whole listings took ~1.7 KB per entry)."""
    skip = ignore or _apply_time_field
    problems: list[str] = []
    total = 0

    def note(text: str) -> None:
        nonlocal total
        total += 1
        if len(problems) < limit:
            problems.append(text)

    want, got = _keyed(next(expected, None)), _keyed(next(actual, None))
    while want is not None or got is not None:
        if got is None or (want is not None and want[0] < got[0]):
            note(f"{want[1]['path']}: missing")  # type: ignore[index]
            want = _keyed(next(expected, None))
        elif want is None or want[0] > got[0]:
            note(f"{got[1]['path']}: unexpected {got[1].get('type')}")
            got = _keyed(next(actual, None))
        else:
            for problem in _entry_differences(want[1], got[1], skip):
                note(problem)
            want, got = _keyed(next(expected, None)), _keyed(next(actual, None))
    return problems, total


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
        problems.extend(_entry_differences(want[path], got[path], ignore))
    return problems


def _entry_differences(a: Entry, b: Entry, ignore: Callable[[str, Entry], bool]) -> list[str]:
    """The fields of one path that differ (``ignore(field, entry)`` skips a field)."""
    return [f"{a['path']}: {field} {a.get(field)!r} != {b.get(field)!r}" for field in sorted(a.keys() | b.keys())
            if not (ignore(field, a) or ignore(field, b)) and a.get(field) != b.get(field)]


def _keyed(entry: Entry | None) -> tuple[list[str], Entry] | None:
    """(its :func:`entry_order` key, the entry): the key computed once per entry."""
    return None if entry is None else (entry_order(entry["path"]), entry)
