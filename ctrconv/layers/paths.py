"""Confined path resolution for layer entries (continuity ``fs.RootPath`` semantics).

Entry names are cleaned like Go's ``filepath.Clean``. Where containerd silently maps an escaping
name (``../../etc/passwd``, ``/../x``) onto the root, ctrconv refuses it with
:class:`UnsafePathError`: no legitimate layer contains one. A leading ``/`` alone is not hostile
and is dropped, as containerd and GNU tar do.

Symlinks met while resolving a *parent* are followed but confined: an absolute target restarts at
the snapshot root, ``..`` never climbs above it, and the path is cleaned lexically after each
substitution exactly as ``RootPath`` does. The last component is never followed.
"""

from __future__ import annotations

import os
import stat
from typing import Sequence

from ctrconv.errors import FormatError, UnsafePathError

#: continuity's limit before "too many links"
MAX_LINKS = 255

Parts = tuple[str, ...]


def clean_name(name: str) -> Parts:
    """Components of a tar entry name, cleaned; ``()`` is the root itself.

    Raises:
        UnsafePathError: a ``..`` would climb above the root.
        FormatError: the name contains a NUL byte.
    """
    if "\x00" in name:
        raise FormatError(f"tar entry name {name!r} contains a NUL byte")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp == "" or comp == ".":
            continue
        if comp == "..":
            if not parts:
                raise UnsafePathError(f"tar entry {name!r} escapes the layer root")
            parts.pop()
        else:
            parts.append(comp)
    return tuple(parts)


def host_path(root: str, parts: Sequence[str]) -> str:
    """``root`` joined with already-resolved components."""
    return root + "/" + "/".join(parts) if parts else root


def _lexical(parts: Sequence[str]) -> list[str]:
    """Clean components that may contain ``.``/``..``; ``..`` stops at the root."""
    out: list[str] = []
    for comp in parts:
        if comp == "" or comp == ".":
            continue
        if comp == "..":
            if out:
                out.pop()
        else:
            out.append(comp)
    return out


def resolve(root: str, parts: Sequence[str]) -> Parts:
    """Resolve every component of ``parts`` inside ``root``, following symlinks confined to it.

    Missing components count as plain names (they will be created). Returns the resolved
    components relative to ``root``.

    Raises:
        FormatError: a component is not a directory, or there are more than 255 symlinks.
    """
    todo = _lexical(parts)
    done: list[str] = []
    links = 0
    i = 0
    while i < len(todo):
        comp = todo[i]
        candidate = host_path(root, done + [comp])
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            done.append(comp)
            i += 1
            continue
        except NotADirectoryError:
            raise FormatError(
                f"cannot resolve {'/'.join(parts)!r}: {'/'.join(done)!r} is not a directory"
            ) from None
        if not stat.S_ISLNK(st.st_mode):
            done.append(comp)
            i += 1
            continue
        links += 1
        if links > MAX_LINKS:
            raise FormatError(f"cannot resolve {'/'.join(parts)!r}: too many symlinks")
        target = os.readlink(candidate)
        base = [] if target.startswith("/") else done
        todo = _lexical([*base, *target.split("/"), *todo[i + 1:]])
        done = []
        i = 0
    return tuple(done)


def hardlink_target(root: str, linkname: str) -> str:
    """Host path a hardlink entry points at: parent resolved in ``root``, last name kept as is.

    Raises:
        UnsafePathError: the link name escapes the root or names the root itself.
    """
    parts = clean_name(linkname)
    if not parts:
        raise UnsafePathError(f"hardlink target {linkname!r} is the layer root")
    parent = resolve(root, parts[:-1])
    return host_path(root, (*parent, parts[-1]))
