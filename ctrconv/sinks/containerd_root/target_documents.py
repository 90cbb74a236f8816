"""Documents the target root already holds are read from it, not asked of the input again.

containerd's pull looks in its content store before it fetches anything: ``ctr images pull`` of
an image the root holds GETs the tag's manifest and nothing else, and an image whose index,
manifests and config are present pulls even from a registry that lost or mangles them (a
pruned mirror, a proxy). ctrconv read every index, manifest and config from its input while
planning, labelling and unpacking: a second pull asked the registry for each document again,
a first pull of an index fetched its config twice (once into the content store, once for the
unpack), and a registry answering 404 for a config the root holds failed an import that
containerd completes.

:class:`TargetFirst` stands in for the input while an import plans and writes: a document whose
blob file the target's content store holds (digest and size checked as it is read, as every
document is) comes from there; anything else, every blob stream and every answer to whether
the input has a blob (an input lacking one is still refused), from the input. A file there
that does not hash to its digest is read from the input and noted, so that the import writes
it again instead of trusting it because a record names it. A
registry input is told of documents found this way (``remember_document``), so it still learns
where their children are without a request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from ctrconv.containerd.content import ContentStore
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError
from ctrconv.oci.validate import MAX_DOCUMENT_SIZE


class TargetFirst:
    """An image source whose small documents come from ``content_dir`` when it holds them."""

    def __init__(self, source: Any, content_dir: Path) -> None:
        self._source = source
        self._target = ContentStore(content_dir)
        #: digests whose blob file in the target did not hash to them (read from the input
        #: instead): the import writes them again rather than trust the file its records name
        self.mismatched: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        # entries(), parallel_reads, abort(), what, ...: the input's own
        return getattr(self._source, name)

    def _held(self, digest: Digest | str, size: int) -> bool:
        try:
            return os.stat(self._target.blob_file(digest)).st_size == size
        except (OSError, CtrconvError):
            return False

    def open(self, digest: Digest | str) -> BinaryIO:
        """The input's stream: blob copies are the content writer's, which skips what is present
        (and whether the input has a blob, ``exists``, stays the input's to say)."""
        return self._source.open(digest)

    def read_small(self, digest: Digest | str, size: int) -> bytes:
        """The document from the target when it holds it whole; a file that does not hash to
        its digest there is noted in :attr:`mismatched` (the import writes it again) and the
        document read from the input instead."""
        if size <= MAX_DOCUMENT_SIZE and self._held(digest, size):
            try:
                data = self._target.read_small(digest, size, MAX_DOCUMENT_SIZE)
            except (CtrconvError, OSError):
                data = None
                self.mismatched.add(str(Digest.parse(digest)))
            if data is not None:
                remember = getattr(self._source, "remember_document", None)
                if remember is not None:
                    remember(Digest.parse(digest), data)
                return data
        return self._source.read_small(digest, size)


__all__: list[str] = ["TargetFirst"]
