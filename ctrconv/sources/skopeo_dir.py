"""skopeo's ``dir:`` layout (containers/image ``directory`` transport) as an image source.

What ``skopeo copy ... dir:DIR`` writes:

* ``version``: ``Directory Transport Version: 1.1`` (1.0 in old releases) and a newline;
* ``manifest.json``: the image's manifest, byte for byte (an index or manifest list with
  ``--all``, whose per-platform manifests are then ``<hex>.manifest.json``);
* every other blob (config, layers) as a file named by its digest's hex, ``<hex>`` (1.0:
  ``<hex>.tar``);
* optionally ``signature-<n>`` files, which are not images and are ignored.

The layout carries no image name, so its one entry is unnamed (``import --name`` names it).
Blob files are found only through a parsed digest, inside the directory (the confined
:class:`~ctrconv.sources.layout_dir.DirFiles`), and every stream is verified by the consumer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ctrconv.digest import Digest
from ctrconv.errors import FormatError, NotFoundError, UsageError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.validate import MAX_DOCUMENT_SIZE
from ctrconv.image.protocols import NamedEntry
from ctrconv.sources.base import BlobSourceBase, Locator
from ctrconv.sources.layout_dir import DirFiles

VERSION_FILE = "version"
MANIFEST_FILE = "manifest.json"
VERSION_PREFIX = "Directory Transport Version: "
#: what skopeo 1.x writes; 1.0 (``<hex>.tar`` blob names) is still read
VERSION = "1.1"
READABLE_VERSIONS = ("1.0", "1.1")


def is_skopeo_dir(path: str | os.PathLike[str]) -> bool:
    """A directory with a ``version`` file of the directory transport and a ``manifest.json``."""
    root = Path(path)
    try:
        with open(root / VERSION_FILE, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return head.startswith(VERSION_PREFIX.encode()) and (root / MANIFEST_FILE).is_file()


def sniff_media_type(doc: Any) -> str:
    """The media type of a top-level document that may not state one (OCI allows that)."""
    if not isinstance(doc, dict):
        raise FormatError("manifest.json is not a JSON object")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        raise FormatError("docker schema 1 manifests are not supported (convert with skopeo --format v2s2)")
    if "manifests" in doc:
        return mt.OCI_INDEX
    config = doc.get("config")
    if isinstance(config, dict) and config.get("mediaType") == mt.DOCKER_CONFIG:
        return mt.DOCKER_MANIFEST
    return mt.OCI_MANIFEST


class SkopeoDirSource(BlobSourceBase):
    """ImageSource over a skopeo ``dir:`` layout (one unnamed image)."""

    kind = "skopeo-dir"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.files = DirFiles(path)
        self.what = self.files.what = f"skopeo dir layout {path}"
        version = self.files.read_file(VERSION_FILE, 4096)
        if version is None:
            raise FormatError(f"{self.what}: no {VERSION_FILE} file")
        text = version.decode("utf-8", "replace").strip()
        if not text.startswith(VERSION_PREFIX) or text[len(VERSION_PREFIX):] not in READABLE_VERSIONS:
            raise FormatError(f"{self.what}: unsupported directory transport version {text!r} "
                              f"(ctrconv reads {', '.join(READABLE_VERSIONS)})")
        self.version = text[len(VERSION_PREFIX):]
        data = self.files.read_file(MANIFEST_FILE, MAX_DOCUMENT_SIZE)
        if data is None:
            raise FormatError(f"{self.what}: no {MANIFEST_FILE}")
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise FormatError(f"{self.what}: {MANIFEST_FILE} is not JSON: {exc}") from None
        self.media_type = sniff_media_type(doc)
        if not (mt.is_index(self.media_type) or mt.is_manifest(self.media_type)):
            raise FormatError(f"{self.what}: {MANIFEST_FILE} is a {self.media_type}, not an image manifest or index")
        self.manifest_digest = self.add_memory_blob(data)
        self.manifest_size = len(data)

    @property
    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": str(self.manifest_digest), "size": self.manifest_size}

    def entries(self) -> list[NamedEntry]:
        return [NamedEntry(descriptor=self.descriptor, name=None)]

    def _locate(self, digest: Digest) -> Locator | None:
        names = [f"{digest.hex}.manifest.json", digest.hex]
        if self.version == "1.0":
            names.append(f"{digest.hex}.tar")
        for name in names:
            found = self.files.locate(name)
            if found is not None:
                return found
        return None

    def close(self) -> None:
        super().close()
        self.files.close()


def open_skopeo_dir(path: str | os.PathLike[str]) -> SkopeoDirSource:
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"{root}: no such directory")
    if not is_skopeo_dir(root):
        raise UsageError(f"{root}: not a skopeo dir: layout (no {VERSION_FILE} of the directory transport "
                         f"or no {MANIFEST_FILE})")
    return SkopeoDirSource(root)
