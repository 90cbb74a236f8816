"""OCI image-layout tar, laid out exactly like ``ctr images export`` (1.6.20).

Entries in byte order of their names: ``blobs/``, ``blobs/<alg>/`` (0755), each blob (0444),
``index.json`` (0644), ``manifest.json`` (0644, docker-compatible), ``oci-layout`` (0444);
headers as Go's ``archive/tar`` writes them (:mod:`ctrconv.sinks._tar`).

A file output is written to a temp file beside the target and renamed over it on commit, so a
failed export leaves nothing behind. ``-`` (a stream) is written as it goes; a failure then
truncates the stream before the end-of-archive marker, which every tar reader reports.
"""

from __future__ import annotations

import os

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from ctrconv import tempfiles
from ctrconv.commitpoint import committing
from ctrconv.sinks import _layout
from ctrconv.sinks._publish import publish
from ctrconv.sinks._tar import TarWriter
from ctrconv.sinks.base import BlobReader, ExportedImage, blob_path
from ctrconv.streams import CHUNK, PendingVerdicts
from ctrconv.writeback import EarlyWriteback, preallocate


#: blobs at least this large get their region of the output preallocated before the copy
PREALLOCATE_MIN = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class TarSink(ABC):
    """Shared mechanics of the tar formats: temp file, ordered blob entries, name documents."""

    single_manifest = False

    def __init__(self, out: Path | BinaryIO) -> None:
        self._final: Path | None = None
        self._tmp: Path | None = None
        if isinstance(out, Path):
            self._final = out
            fd, self._tmp = tempfiles.temp_file(out.parent, f".{out.name}.", ".ctrconv-tmp", sweep=True)
            self._stream: BinaryIO = os.fdopen(fd, "wb")
            self._writeback: EarlyWriteback | None = EarlyWriteback(fd)
        else:
            self._stream = out
            self._writeback = None
        self._tar = TarWriter(self._stream)
        #: digests of kernel-copied blobs still being hashed: settled before the rename
        self._verdicts = PendingVerdicts()
        self._documents: list[tuple[str, bytes, int]] = []
        self._dirs: set[str] = set()
        self._last_path = ""
        self._named = False
        self._closed = False

    @property
    def bytes_written(self) -> int:
        return self._tar.bytes_written

    @abstractmethod
    def _name_documents(self, images: Sequence[ExportedImage]) -> list[tuple[str, bytes, int]]:
        """(tar name, bytes, mode) of the format's name documents."""

    def add_names(self, images: Sequence[ExportedImage]) -> None:
        docs = self._name_documents(images)
        self._documents = sorted(docs)
        self._named = True

    def add_blob(self, desc: dict[str, Any], reader: BlobReader, *, source_path: Path | None = None) -> None:
        if not self._named:
            raise RuntimeError("add_names must come before add_blob")
        path = blob_path(desc["digest"])
        if path <= self._last_path:
            raise RuntimeError(f"blob {path} out of order (tar entries must be sorted)")
        self._last_path = path
        for directory in ("blobs/", path.rsplit("/", 1)[0] + "/"):
            if directory not in self._dirs:
                self._tar.add_dir(directory, 0o755)
                self._dirs.add(directory)
        self._tar.begin_file(path, desc["size"], 0o444)
        if not self._copy_in_kernel(reader, desc["size"]):
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                self._tar.write(chunk)
                if self._writeback is not None:
                    self._writeback.wrote(self._stream.tell())
        self._tar.end_file()

    def _copy_in_kernel(self, reader: BlobReader, size: int) -> bool:
        """Into a file output, let the kernel copy the blob (verified as it goes: the digest
        verdict may come with a later blob, and always before :meth:`commit` renames the
        output into place); False when the reader or the files do not allow it (then nothing
        was written)."""
        copy_to_fd = getattr(reader, "copy_to_fd", None)
        if self._writeback is None or copy_to_fd is None:
            return False
        self._stream.flush()
        fd = self._stream.fileno()
        position = self._stream.tell()
        writeback = self._writeback
        if size >= PREALLOCATE_MIN:
            preallocate(fd, position, size)  # one allocation, not one per page

        def advanced(n: int) -> None:
            nonlocal position
            position += n
            self._tar.wrote_directly(n)
            writeback.wrote(position)

        if not copy_to_fd(fd, advanced, verdicts=self._verdicts):
            return False
        self._stream.seek(position)  # the buffered stream continues where the kernel stopped
        return True

    def commit(self) -> None:
        self._verdicts.settle()
        for name, data, mode in self._documents:
            self._tar.add_bytes(name, data, mode)
        self._tar.close()
        if self._tmp is None:
            with committing():  # the stream is complete once flushed
                self._stream.flush()
            return
        self._stream.flush()
        assert self._writeback is not None
        self._writeback.close()
        os.fchmod(self._stream.fileno(), 0o666 & ~_umask())
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._closed = True
        assert self._final is not None
        publish(self._tmp, self._final)
        self._tmp = None

    def abort(self) -> None:
        self._verdicts.cancel()
        if self._tmp is None:
            return
        if self._writeback is not None:
            self._writeback.close()
        if not self._closed:
            try:
                self._stream.close()
            except OSError:
                pass
            self._closed = True
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass
        tempfiles.forget(self._tmp)
        self._tmp = None


class OciTarSink(TarSink):
    """``--format oci-tar``: ctr's archive, optionally without ``manifest.json``."""

    def __init__(self, out: Path | BinaryIO, *, index_media_type: bool = False, manifest_json: bool = True) -> None:
        super().__init__(out)
        self._index_media_type = index_media_type
        self._manifest_json = manifest_json

    def _name_documents(self, images: Sequence[ExportedImage]) -> list[tuple[str, bytes, int]]:
        return oci_name_documents(images, self._index_media_type, self._manifest_json)


def oci_name_documents(
    images: Sequence[ExportedImage], index_media_type: bool, manifest_json: bool
) -> list[tuple[str, bytes, int]]:
    """(name, bytes, mode) of ``index.json``, ``manifest.json`` and ``oci-layout`` for a layout."""
    docs = [
        ("index.json", _layout.index_json([i.entry for i in images], media_type=index_media_type), 0o644),
        ("oci-layout", _layout.OCI_LAYOUT, 0o444),
    ]
    manifest = _layout.ctr_manifest_json(images) if manifest_json else None
    if manifest is not None:
        docs.append(("manifest.json", manifest, 0o644))
    return docs
