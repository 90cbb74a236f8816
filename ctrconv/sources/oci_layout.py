"""An OCI image layout (``oci-layout`` + ``index.json`` + ``blobs/<alg>/<hex>``) as an ImageSource.

The same reader serves layout directories and layout tars (including Docker 25+ ``docker save``
output and ``ctr images export`` output, which carry a ``manifest.json`` too: like ctr, the OCI
layout wins when both are present). The files come from a :class:`LayoutFiles` namespace.

* ``oci-layout`` must parse and declare ``imageLayoutVersion`` ``1.0.0``.
* ``index.json`` is validated against the OCI index schema (strict digests, so
  ``sha256:../../x`` never becomes a lookup); its bytes are also served as a blob under their
  own digest, with media type OCI index, as ctr ingests it (``--index-name`` needs it).
* Blobs are looked up at ``blobs/<alg>/<hex>`` built from the parsed digest. Their names are
  never trusted as digests: the consumer verifies every stream.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Protocol

from ctrconv.digest import Digest
from ctrconv.errors import FormatError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.validate import MAX_DOCUMENT_SIZE, validate_json
from ctrconv.image.protocols import NamedEntry
from ctrconv.sources.base import BlobSourceBase, Locator, named_entries

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
#: ``oci-layout`` is 30 bytes in practice.
MAX_LAYOUT_FILE = 64 * 1024


class LayoutFiles(Protocol):
    """A layout's file namespace: a directory or a tar archive."""

    what: str

    def locate(self, name: str) -> Locator | None: ...

    def read_file(self, name: str, limit: int) -> bytes | None: ...

    def close(self) -> None: ...


def blob_name(digest: Digest) -> str:
    """``blobs/<alg>/<hex>``, only ever built from a validated digest."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


class OciLayoutSource(BlobSourceBase):
    """ImageSource over an OCI image layout. Owns ``files`` (closed by :meth:`close`).

    ``base_name`` is ctr's ``--base-name`` (see :func:`ctrconv.sources.base.named_entries`).
    """

    kind = "oci-layout"

    def __init__(
        self, files: LayoutFiles, *, base_name: str | None = None, today: date | None = None
    ) -> None:
        super().__init__()
        self.files = files
        self.what = files.what
        self.base_name = base_name
        self._today = today
        try:
            self._check_layout_file()
            self.index_bytes = self._read_index()
        except BaseException:
            files.close()
            raise
        self.index_digest = self.add_memory_blob(self.index_bytes)
        self.index: dict[str, Any] = validate_json(
            mt.OCI_INDEX, self.index_bytes, digest=str(self.index_digest)
        )

    def _check_layout_file(self) -> None:
        data = self.files.read_file(LAYOUT_FILE, MAX_LAYOUT_FILE)
        if data is None:
            raise FormatError(f"{self.what}: not an OCI image layout: no {LAYOUT_FILE} file")
        try:
            validate_json(mt.OCI_LAYOUT_HEADER, data)
        except FormatError as exc:
            raise FormatError(
                f"{self.what}: unsupported or invalid {LAYOUT_FILE} (need imageLayoutVersion "
                f"{LAYOUT_VERSION!r}): {exc}"
            ) from None

    def _read_index(self) -> bytes:
        data = self.files.read_file(INDEX_FILE, MAX_DOCUMENT_SIZE)
        if data is None:
            raise FormatError(f"{self.what}: missing {INDEX_FILE} in OCI layout")
        return data

    @property
    def index_descriptor(self) -> dict[str, Any]:
        """The descriptor ctr gives ``index.json`` (its import root, and ``--index-name``'s target)."""
        return {"mediaType": mt.OCI_INDEX, "digest": str(self.index_digest), "size": len(self.index_bytes)}

    def entries(self) -> list[NamedEntry]:
        return named_entries(self.index["manifests"], self.base_name, today=self._today)

    def _locate(self, digest: Digest) -> Locator | None:
        return self.files.locate(blob_name(digest))

    def close(self) -> None:
        super().close()
        self.files.close()
