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
from typing import BinaryIO, Callable

from ctrconv.containerd import schema as K
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError


class CompressedLayers:
    """``uncompressed digest -> (compressed digest, size, where)`` (:data:`ReuseCompressed`) of
    the destination namespace, as containerd's walk leaves it: of the blobs labelled with the
    layer's digest, the last in digest order (each match replaces the one before). ``where`` is
    the blob's file in the root, or, for a blob an earlier input of the same run brings
    (:meth:`learn`), a function opening it there (that input serves it). The root is read on
    the first call (only docker archives ask)."""

    def __init__(self, root: str | os.PathLike[str], namespace: str) -> None:
        self._root = Path(root)
        self._namespace = namespace
        self._found: dict[str, tuple[Digest, int, str | Callable[[], BinaryIO]]] | None = None
        self._learnt: dict[str, tuple[Digest, int, Callable[[], BinaryIO]]] = {}
        self._to_learn: list[Callable[[], dict[str, tuple[Digest, int, Callable[[], BinaryIO]]]]] = []

    def __call__(self, uncompressed: Digest) -> tuple[Digest, int, str | Callable[[], BinaryIO]] | None:
        if self._found is None:
            self._found = dict(_compressed_forms(self._root, self._namespace))
        while self._to_learn:
            self._learn(self._to_learn.pop(0)())
        key = str(uncompressed)
        forms = [f for f in (self._found.get(key), self._learnt.get(key)) if f is not None]
        return max(forms, key=lambda f: str(f[0])) if forms else None

    def learn(self, forms: Callable[[], dict[str, tuple[Digest, int, Callable[[], BinaryIO]]]]) -> None:
        """Layers an earlier input of this run unpacks (and so labels with their diff IDs): a
        docker archive after it names them, as after a separate ``ctr images import``.
        ``forms`` is called only when a docker archive asks (planning every input twice was
        the cost of every import otherwise)."""
        self._to_learn.append(forms)

    def _learn(self, forms: dict[str, tuple[Digest, int, Callable[[], BinaryIO]]]) -> None:
        for key, form in forms.items():
            known = self._learnt.get(key)
            if known is None or str(form[0]) > str(known[0]):
                self._learnt[key] = form


def compressed_layer_lookup(root: str | os.PathLike[str], namespace: str) -> CompressedLayers:
    """The destination's compressed layers for a docker-archive import (:class:`CompressedLayers`)."""
    return CompressedLayers(root, namespace)


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


__all__: list[str] = ["CompressedLayers", "compressed_layer_lookup"]
