"""The destination's compressed forms of layers, for a docker-archive import.

containerd's archive importer (``images/archive/importer.go`` ``resolveLayers``, 1.6 to 2.x)
walks the destination namespace's content for a blob labelled ``containerd.io/uncompressed``
with a docker-archive layer's digest and, when it finds one, puts that compressed blob in the
manifest it synthesises instead of the uncompressed tar. On a node that already holds an image
(pulled, or imported as OCI with gzip layers), ``ctr images import`` of its ``docker save`` tar
therefore records another manifest digest than on an empty root, and stores no second copy of
the layers: so does ``ctrconv import``, with this lookup.

The lookup reads the destination's meta.db once, before the import takes the root's lock (the
sources are opened first); a blob the import then finds gone fails it with one clear line.
"""

from __future__ import annotations

import os
from pathlib import Path

from ctrconv.containerd import schema as K
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError
from ctrconv.image.protocols import ReuseCompressed


def compressed_layer_lookup(root: str | os.PathLike[str], namespace: str) -> ReuseCompressed:
    """``uncompressed digest -> (compressed digest, size, file)`` of the namespace's content, as
    containerd's walk leaves it: of the records whose label names the layer (and whose blob
    file is there), the last in key (digest) order, each match replacing the one before. Read
    on the first call (only docker archives ask)."""
    found: dict[str, tuple[Digest, int, str]] | None = None

    def lookup(uncompressed: Digest) -> tuple[Digest, int, str] | None:
        nonlocal found
        if found is None:
            found = _compressed_forms(Path(root), namespace)
        return found.get(str(uncompressed))

    return lookup


def _compressed_forms(root: Path, namespace: str) -> dict[str, tuple[Digest, int, str]]:
    from ctrconv.bolt import BoltFile
    from ctrconv.containerd.metadata import MetadataDB
    from ctrconv.containerd.root import ContainerdRoot

    croot = ContainerdRoot(root)
    if not croot.meta_db.is_file():
        return {}
    forms: dict[str, tuple[Digest, int, str]] = {}
    try:
        with BoltFile(croot.meta_db) as db:
            for record in MetadataDB(db).blobs(namespace):
                uncompressed = record.labels.get(K.LABEL_UNCOMPRESSED)
                if uncompressed is None:
                    continue
                digest = Digest.parse(record.digest)
                if croot.content.exists(digest):
                    forms[uncompressed] = (digest, record.size, str(croot.content.blob_path(digest)))
    except CtrconvError:
        return forms  # a damaged meta.db: the import itself reports it
    return forms


__all__: list[str] = ["compressed_layer_lookup"]
