"""OCI image-layout directory: the same files as the oci-tar, unpacked.

Everything is written into a temp directory beside the target and renamed onto it on commit
(an existing *empty* directory is replaced; anything else is refused up front), so a failed
export leaves nothing behind.

``link=True`` hardlinks blobs from the content store instead of copying them (same filesystem
only; otherwise, or when the link is refused, the blob is copied). A linked blob is still read
once and hashed unless ``verify_links=False``: that costs a read but no write and no extra
space. Without verification only the file size is checked. The linked files share the store's
inode (mode 0444, owned by the store): never open them for writing in place.
"""

from __future__ import annotations

import errno
import os

from pathlib import Path
from typing import Any, Sequence

from ctrconv.errors import SizeMismatchError, UsageError
from ctrconv.sinks._blobfiles import BlobFiles
from ctrconv import tempfiles
from ctrconv.sinks._publish import StagedDirectory, temp_pattern
from ctrconv.sinks.base import BlobReader, ExportedImage, blob_path
from ctrconv.sinks.oci_tar import oci_name_documents
from ctrconv.streams import fsync_dir

#: link() failures that mean "cannot link here", so the blob is copied instead.
_LINK_FALLBACK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES})


def check_target_dir(out: Path) -> None:
    """Refuse an output that exists and is not an empty directory (exit 2)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        tempfiles.sweep(out.parent, *temp_pattern(out))  # (a killed run's temp beside it)
        raise UsageError(f"{out} exists and is not empty", hint="choose a new directory")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} does not exist")


class OciDirSink(StagedDirectory):
    """``--format oci-dir``."""

    single_manifest = False

    def __init__(
        self,
        out: Path,
        *,
        index_media_type: bool = False,
        manifest_json: bool = True,
        link: bool = False,
        verify_links: bool = True,
    ) -> None:
        check_target_dir(out)
        self._index_media_type = index_media_type
        self._manifest_json = manifest_json
        self._link = link
        self._verify_links = verify_links
        self._documents: list[tuple[str, bytes, int]] = []
        self._named = False
        self._dirs: set[Path] = set()
        self.linked = 0
        self.copied = 0
        self._files = BlobFiles()
        self._stage(out)

    @property
    def bytes_written(self) -> int:
        return self._files.bytes_written

    def add_names(self, images: Sequence[ExportedImage]) -> None:
        self._documents = oci_name_documents(images, self._index_media_type, self._manifest_json)
        self._named = True

    def _blob_dest(self, desc: dict[str, Any]) -> Path:
        assert self._tmp is not None
        dest = self._tmp / blob_path(desc["digest"])
        parent = dest.parent
        if parent not in self._dirs:
            parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chmod(parent, 0o755)
            os.chmod(parent.parent, 0o755)
            self._dirs.add(parent)
        return dest

    def add_blob(self, desc: dict[str, Any], reader: BlobReader, *, source_path: Path | None = None) -> None:
        if not self._named:
            raise RuntimeError("add_names must come before add_blob")
        dest = self._blob_dest(desc)
        if self._link and source_path is not None and self._try_link(source_path, dest):
            if self._verify_links:
                self._files.verify_linked(reader)
            elif dest.stat().st_size != desc["size"]:
                raise SizeMismatchError(
                    f"blob {desc['digest']}: file has {dest.stat().st_size} bytes, descriptor says {desc['size']}"
                )
            self.linked += 1
            return
        self._files.write(dest, reader, desc["size"], 0o444)
        self.copied += 1

    def _try_link(self, source: Path, dest: Path) -> bool:
        try:
            os.link(source, dest)
        except OSError as exc:
            if exc.errno in _LINK_FALLBACK:
                return False
            raise
        return True

    def commit(self) -> None:
        assert self._tmp is not None
        self._files.finish()
        for name, data, mode in self._documents:
            path = self._tmp / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fchmod(out.fileno(), mode)
                os.fsync(out.fileno())
        for directory in self._dirs | {self._tmp / "blobs"}:
            if directory.is_dir():
                fsync_dir(directory)
        self._publish()

    def abort(self) -> None:
        self._files.cancel()
        super().abort()
