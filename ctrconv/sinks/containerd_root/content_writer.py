"""Write blobs into a containerd content store, verified while they are copied.

Each blob goes to a private temp directory in the content plugin directory (same filesystem,
outside ``blobs/`` and ``ingest/``, which are the only places containerd looks at), is hashed
while it streams, fsynced, and renamed to ``blobs/<alg>/<hex>`` with mode 0444, exactly as
containerd's ``(*writer).Commit`` leaves it. A crash leaves only a ``.ctrconv-tmp-*`` directory
that containerd never reads and that the next ctrconv write removes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Protocol

from ctrconv import tempfiles
from ctrconv.digest import Digest
from ctrconv.errors import MissingContentError, UnreadableContentError
from ctrconv.progress import SILENT_STAGE, Stage
from ctrconv.streams import CHUNK, copy_verified, fsync_dir

TMP_PREFIX = ".ctrconv-tmp-"
BLOB_MODE = 0o444
DIR_MODE = 0o755


class BlobOpener(Protocol):
    def exists(self, digest: Digest | str) -> bool: ...

    def open(self, digest: Digest | str) -> BinaryIO: ...


def remove_stale_temp(directory: Path) -> None:
    """Delete ``.ctrconv-tmp-*`` leftovers of an interrupted run (caller holds the root lock)."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)


class _Flushed:
    """The temp file as :func:`copy_verified` writes it: every chunk reaches the file before the
    copy reports it, so a reader following the file (:mod:`.fetch`) finds what was reported.
    Chunks are large (up to 1 MiB), so this costs no extra system calls in practice."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst

    def write(self, data: bytes) -> int:
        n = self._dst.write(data)
        self._dst.flush()
        return n


class ContentWriter:
    """Adds blobs to ``<root>/io.containerd.content.v1.content``."""

    def __init__(self, content_dir: Path) -> None:
        self.content_dir = content_dir
        self._tmp: Path | None = None
        self.written: list[Path] = []

    def blob_path(self, digest: Digest | str) -> Path:
        d = Digest.parse(digest)
        return self.content_dir / "blobs" / d.algorithm / d.hex

    def present(self, digest: Digest | str, size: int) -> bool:
        """A blob file of the right size is already there (its digest was checked when written)."""
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return st.st_size == size

    def _matches(self, digest: Digest) -> bool:
        """The file on disk hashes to ``digest`` (read once, in chunks)."""
        h = digest.hasher()
        try:
            with open(self.blob_path(digest), "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        except OSError:
            return False
        return h.hexdigest() == digest.hex

    def prepare(self) -> None:
        """Create the store's directories and this writer's temp dir now (before threads write)."""
        self._tmp_dir()

    def temp_path(self, digest: Digest | str) -> Path:
        """Where :meth:`write` puts a blob while it is copied (renamed to :meth:`blob_path` once
        verified and synced)."""
        return self._tmp_dir() / Digest.parse(digest).hex

    def _tmp_dir(self) -> Path:
        if self._tmp is None:
            self.content_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            for sub in ("ingest", "blobs"):
                (self.content_dir / sub).mkdir(mode=DIR_MODE, exist_ok=True)
            self._tmp = tempfiles.temp_dir(self.content_dir, TMP_PREFIX)
        return self._tmp

    def write(
        self,
        source: BlobOpener,
        descriptor: Mapping[str, Any],
        stage: Stage = SILENT_STAGE,
        *,
        recorded: bool = True,
    ) -> bool:
        """Copy one blob in unless it is already there; True if it was written (``stage``
        advances by the bytes copied).

        ``recorded``: the target namespace holds a record of the blob, so a file of the right
        size is trusted (its digest was checked when it was written). A file no record of this
        namespace vouches for (another namespace's, or left by a crash) is hashed first and
        replaced if it does not match.
        """
        digest = Digest.parse(descriptor.get("digest"))
        size = int(descriptor["size"])
        if self.present(digest, size) and (recorded or self._matches(digest)):
            return False
        if not source.exists(digest):
            raise MissingContentError(f"blob {digest} is not in the input")
        tmp = self.temp_path(digest)
        with source.open(digest) as src, open(tmp, "wb") as dst:
            copy_verified(src, _Flushed(dst), digest, size, what=f"blob {digest}", stage=stage)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(tmp, BLOB_MODE)
        final = self.blob_path(digest)
        final.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if final.is_dir() and not final.is_symlink():
            # (the rename failed naming this writer's temp file; containerd names the blob path)
            raise UnreadableContentError(f"{final}: a directory stands where the blob's file belongs; "
                                         "move it away and import again")
        os.replace(tmp, final)
        self.written.append(final)
        fsync_dir(final.parent)
        return True

    def rollback(self) -> None:
        """Remove the blob files this writer added (the import failed before meta.db named them)."""
        for path in self.written:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.written.clear()

    def close(self) -> None:
        """Remove the temp directory (empty unless a copy failed)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            tempfiles.forget(self._tmp)
            self._tmp = None
