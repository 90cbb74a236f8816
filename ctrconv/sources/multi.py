"""Several inputs as one image source, so a preload of many archives is one transaction.

``import -i A -i B`` and ``import -i DIR`` (every archive in a directory, as k3s reads its
``agent/images`` directory) open each input and serve them together: one lock, one content
pass, one meta.db commit. Entries keep the input they came from (for the report); a blob is
read from the first input that holds it (same digest, same bytes: the reader verifies), local
inputs asked before registries (a blob an archive holds is never downloaded, and a registry is
asked about a blob only when no local input has it). With a registry among the inputs, the
union offers the importer its parallel reads (:attr:`MultiSource.parallel_reads`), so the
blobs of every input share one pool of ``--jobs`` downloads.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from ctrconv.digest import Digest
from ctrconv.errors import MissingContentError, NotFoundError, UsageError
from ctrconv.image.protocols import ImageSource, NamedEntry
from ctrconv.sources.oci_layout import LAYOUT_FILE

#: file names a directory of archives may hold (k3s: agent/images/*.tar[.gz|.zst])
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.zstd")


def refuse_empty_input(raw: str | os.PathLike[str]) -> None:
    """``-i ""`` (a variable that expanded to nothing) names nothing: ``Path("")`` is the current
    directory, which made ``import -i "$ARCHIVES"`` import every archive in it."""
    if os.fspath(raw) == "":
        raise UsageError("-i: an empty path names nothing (did a variable expand to nothing?)")


def expand_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Each ``-i``: a file, ``-``, an OCI layout directory, a skopeo ``dir:`` layout, or a
    directory of archives (its archive files, sorted by name; a directory holding none is a
    usage error naming the formats ctrconv reads)."""
    from ctrconv.sources import readable_formats
    from ctrconv.sources.skopeo_dir import is_skopeo_dir

    out: list[str] = []
    for raw in paths:
        refuse_empty_input(raw)
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
    if len({_identity(p) for p in out}) != len(out):  # (however it is spelt: ./a, ../x/a, a link to it)
        raise UsageError("the same input is given twice")
    return out


def _identity(path: str) -> object:
    """What makes two inputs one: the file itself (device and inode) when it exists, else its
    real path (a registry reference stays as it is written)."""
    if "://" in path:
        return path
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


class MultiSource:
    """The union of several opened sources (closed together)."""

    kind = "inputs"

    def __init__(self, sources: Sequence[tuple[str, ImageSource]]) -> None:
        self.sources = list(sources)
        self.what = ", ".join(label for label, _ in self.sources)
        # local inputs first: asking a registry about a blob may cost a request (HEAD)
        self._lookup = sorted((s for _, s in self.sources), key=_is_remote)
        self._holders: dict[str, ImageSource] = {}
        self._lock = threading.Lock()

    @property
    def parallel_reads(self) -> int:
        """The most blobs any input may stream at once (a registry's ``--jobs``; 1 for local
        inputs): the importer fetches the blobs of all inputs in one pool of that size."""
        return max((getattr(s, "parallel_reads", 1) for _, s in self.sources), default=1)

    def abort(self) -> None:
        """Cut the downloads of every input that can (the import failed or was stopped)."""
        for _, source in self.sources:
            abort = getattr(source, "abort", None)
            if abort is not None:
                abort()

    def entries(self) -> list[NamedEntry]:
        out = []
        for label, source in self.sources:
            out.extend(replace(entry, origin=label) for entry in source.entries())
        return out

    def _holder(self, digest: Digest | str) -> ImageSource | None:
        """The input that serves ``digest``, looked up once (fetch threads ask concurrently)."""
        key = str(digest)
        with self._lock:
            known = self._holders.get(key)
        if known is not None:
            return known
        for source in self._lookup:
            if source.exists(digest):
                with self._lock:
                    self._holders[key] = source
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


def _is_remote(source: ImageSource) -> bool:
    """A registry: asking it whether it holds a blob may cost a request, reading it a download."""
    return getattr(source, "kind", None) == "registry"


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
