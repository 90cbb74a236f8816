"""Several inputs as one image source, so a preload of many archives is one transaction.

``import -i A -i B`` and ``import -i DIR`` (every archive in a directory, as k3s reads its
``agent/images`` directory) open each input and serve them together: one lock, one content
pass, one meta.db commit. Entries keep the input they came from (for the report); a blob is
read from the first input that holds it (same digest, same bytes: the reader verifies).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from ctrconv.digest import Digest
from ctrconv.errors import MissingContentError, NotFoundError, UsageError
from ctrconv.image.protocols import ImageSource, NamedEntry
from ctrconv.sources.oci_layout import LAYOUT_FILE

#: file names a directory of archives may hold (k3s: agent/images/*.tar[.gz|.zst])
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.zstd")


def expand_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Each ``-i``: a file, ``-``, an OCI layout directory, a skopeo ``dir:`` layout, or a
    directory of archives (its archive files, sorted by name; a directory holding none is a
    usage error naming the formats ctrconv reads)."""
    from ctrconv.sources import readable_formats
    from ctrconv.sources.skopeo_dir import is_skopeo_dir

    out: list[str] = []
    for raw in paths:
        path = Path(raw)
        if str(raw) != "-" and path.is_dir() and not (path / LAYOUT_FILE).is_file() and not is_skopeo_dir(path):
            archives = sorted(p for p in path.iterdir()
                              if p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES))
            if not archives:
                raise UsageError(
                    f"{path}: unrecognized image format: neither an OCI layout (no {LAYOUT_FILE} file), a skopeo "
                    f"dir: layout (no version and manifest.json) nor a directory of image archives "
                    f"({', '.join('*' + s for s in ARCHIVE_SUFFIXES)})", hint=readable_formats())
            out.extend(str(p) for p in archives)
        else:
            out.append(str(raw))
    if [p for p in out if p == "-"] and len(out) > 1:
        raise UsageError("- (stdin) can only be the only input")
    if len(set(out)) != len(out):
        raise UsageError("the same input is given twice")
    return out


class MultiSource:
    """The union of several opened sources (closed together)."""

    kind = "inputs"

    def __init__(self, sources: Sequence[tuple[str, ImageSource]]) -> None:
        self.sources = list(sources)
        self.what = ", ".join(label for label, _ in self.sources)

    def entries(self) -> list[NamedEntry]:
        out = []
        for label, source in self.sources:
            out.extend(replace(entry, origin=label) for entry in source.entries())
        return out

    def _holder(self, digest: Digest | str) -> ImageSource | None:
        for _, source in self.sources:
            if source.exists(digest):
                return source
        return None

    def exists(self, digest: Digest | str) -> bool:
        return self._holder(digest) is not None

    def size(self, digest: Digest | str) -> int | None:
        holder = self._holder(digest)
        return holder.size(digest) if holder is not None else None

    def open(self, digest: Digest | str) -> BinaryIO:
        holder = self._holder(digest)
        if holder is None:
            raise MissingContentError(f"blob {digest} is in none of the inputs ({self.what})")
        return holder.open(digest)

    def read_small(self, digest: Digest | str, size: int) -> bytes:
        holder = self._holder(digest)
        if holder is None:
            raise MissingContentError(f"blob {digest} is in none of the inputs ({self.what})")
        return holder.read_small(digest, size)

    def close(self) -> None:
        for _, source in self.sources:
            source.close()


def open_inputs(paths: Sequence[str | os.PathLike[str]], opener: Callable[[str], ImageSource]) -> ImageSource:
    """One source for every input of ``paths`` (see :func:`expand_inputs`); several inputs
    become a :class:`MultiSource`. Whatever was opened is closed again if one fails."""
    expanded = expand_inputs(paths)
    if not expanded:
        raise NotFoundError("no input given")
    opened: list[tuple[str, ImageSource]] = []
    try:
        for path in expanded:
            opened.append((path, opener(path)))
    except BaseException:
        for _, source in opened:
            source.close()
        raise
    if len(opened) == 1:
        return opened[0][1]
    return MultiSource(opened)
