"""The file namespace of an OCI layout *directory*, confined to that directory.

A name is resolved (symlinks included) and must stay below the layout root and be a regular
file; anything else counts as absent. So a layout whose ``blobs/sha256/<hex>`` is a symlink to
``/etc/shadow`` or a FIFO never gets opened, and a hostile name never leaves the directory.
"""

from __future__ import annotations

import os
import stat
from datetime import date
from pathlib import Path

from ctrconv.errors import FormatError, NotFoundError, UsageError
from ctrconv.sources.base import Locator
from ctrconv.sources.oci_layout import LAYOUT_FILE, OciLayoutSource


class DirFiles:
    """Read-only, root-confined access to the files of one directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._real_root = os.path.realpath(self.root)
        self.what = f"OCI layout {self.root}"

    def _path(self, name: str) -> str | None:
        """The real path of regular file ``name`` inside the root, or None."""
        if name.startswith("/") or ".." in name.split("/"):
            return None
        real = os.path.realpath(os.path.join(self._real_root, name))
        if os.path.commonpath([self._real_root, real]) != self._real_root:
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        return real if stat.S_ISREG(st.st_mode) else None

    def locate(self, name: str) -> Locator | None:
        path = self._path(name)
        if path is None:
            return None
        size = os.stat(path).st_size
        return Locator(size, lambda: open(path, "rb"))

    def read_file(self, name: str, limit: int) -> bytes | None:
        path = self._path(name)
        if path is None:
            return None
        with open(path, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise FormatError(f"{self.what}: {name} is larger than the {limit} bytes allowed")
        return data

    def close(self) -> None:
        """Nothing is held open between calls."""


def open_layout_dir(
    path: str | os.PathLike[str], *, base_name: str | None = None, today: date | None = None
) -> OciLayoutSource:
    """An :class:`OciLayoutSource` over directory ``path``.

    Raises :class:`NotFoundError` if it does not exist and :class:`UsageError` ("unrecognized
    image format") if it is a directory without an ``oci-layout`` file.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"{root}: no such directory")
    if not (root / LAYOUT_FILE).is_file():
        raise UsageError(
            f"{root}: unrecognized image format (a directory without an {LAYOUT_FILE} file)"
        )
    return OciLayoutSource(DirFiles(root), base_name=base_name, today=today)
