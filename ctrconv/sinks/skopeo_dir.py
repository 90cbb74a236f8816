"""``--format dir``: skopeo's ``dir:`` layout (containers/image ``directory`` transport, 1.1).

One image per directory, as skopeo writes it:

* ``version``: ``Directory Transport Version: 1.1`` and a newline;
* ``manifest.json``: the top-level manifest, byte for byte (digests survive): the chosen
  platform's manifest by default (``skopeo copy`` without ``--all``), or the image's index
  with ``--all-platforms`` (``skopeo copy --all``), whose child manifests are then
  ``<hex>.manifest.json``;
* every other blob (config, layers) as ``<hex>``.

The layout has no place for a name, so it holds exactly one image (several names of that one
image are fine). Written into a temp directory beside the target and renamed onto it at
commit, like the OCI directory (:class:`~ctrconv.sinks.oci_dir.OciDirSink`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ctrconv.digest import Digest
from ctrconv.errors import UsageError
from ctrconv.oci import mediatypes as mt
from ctrconv.sinks._blobfiles import BlobFiles
from ctrconv.sinks._publish import StagedDirectory
from ctrconv.sinks.base import BlobReader, ExportedImage
from ctrconv.sinks.oci_dir import check_target_dir

VERSION_BYTES = b"Directory Transport Version: 1.1\n"


class SkopeoDirSink(StagedDirectory):
    """``--format dir``; ``all_platforms``: ``manifest.json`` is the image's index."""

    def __init__(self, out: Path, *, all_platforms: bool = False) -> None:
        check_target_dir(out)
        self.single_manifest = not all_platforms
        self._top: str | None = None
        self._named = False
        self.linked = 0
        self._files = BlobFiles()
        self._stage(out)

    @property
    def bytes_written(self) -> int:
        return self._files.bytes_written

    def add_names(self, images: Sequence[ExportedImage]) -> None:
        if self.single_manifest:
            tops = {i.manifest.descriptor["digest"] for i in images if i.manifest is not None}
        else:
            tops = {i.entry["digest"] for i in images}
        if len(tops) != 1:
            raise UsageError(
                f"a dir: layout holds one image; {len(tops)} were selected ({', '.join(i.name for i in images)})",
                hint="export each image into its own directory",
            )
        self._top = tops.pop()
        self._named = True

    def _name(self, desc: dict[str, Any]) -> str:
        digest = Digest.parse(desc["digest"])
        if str(digest) == self._top:
            return "manifest.json"
        media_type = desc.get("mediaType", "")
        if mt.is_manifest(media_type) or mt.is_index(media_type):
            return f"{digest.hex}.manifest.json"
        return digest.hex

    def add_blob(self, desc: dict[str, Any], reader: BlobReader, *, source_path: Path | None = None) -> None:
        if not self._named:
            raise RuntimeError("add_names must come before add_blob")
        assert self._tmp is not None
        self._files.write(self._tmp / self._name(desc), reader, desc["size"])

    def commit(self) -> None:
        assert self._tmp is not None
        self._files.finish()
        if not (self._tmp / "manifest.json").is_file():
            raise RuntimeError("the image's manifest was never written")
        fd = os.open(self._tmp / "version", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(VERSION_BYTES)
            out.flush()
            os.fsync(out.fileno())
        self._publish()

    def abort(self) -> None:
        self._files.cancel()
        super().abort()
