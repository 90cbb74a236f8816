"""Export's plans made small before the copy: what the copy, the names and the report still need.

An export of a whole root holds one plan per image from planning until its last byte is
written. Each plan kept every manifest document it read and its own
copy of every descriptor, although most images share their base layers: at 10,000 images that
was most of the export's memory. :class:`PlanCompactor` lets the documents go (their media type
stays, the one field read from them later) and makes equal descriptors one dict, so what is
left grows with the distinct blobs, not with the images times their layers. Nothing a sink
writes changes: equal descriptors are equal item for item, in the same order.
"""

from __future__ import annotations

from typing import Any

from ctrconv.image.plan import ImagePlan
from ctrconv.pipeline import regenerate as regen

Descriptor = dict[str, Any]


class PlanCompactor:
    """Shrinks the plans of one export as they are made: one dict per distinct plain
    descriptor (scalar fields only, the same items in the same order), interned digests and
    media types for the others, and no manifest document that nothing will read again."""

    def __init__(self) -> None:
        self._descriptors: dict[str, Descriptor] = {}  # digest -> the first plain descriptor of it
        self._strings: dict[str, str] = {}

    def _shared(self, desc: Descriptor) -> Descriptor:
        digest = desc.get("digest")
        if isinstance(digest, str) and all(isinstance(v, (str, int)) for v in desc.values()):
            found = self._descriptors.setdefault(digest, desc)
            if found is not desc and found == desc and list(found) == list(desc):
                return found
        for key in ("mediaType", "digest"):  # an image's own blobs share their media types
            value = desc.get(key)
            if isinstance(value, str):
                desc[key] = self._strings.setdefault(value, value)
        return desc

    def compact(self, plan: ImagePlan, rewritten: set[str]) -> None:
        """``plan`` in place; the documents of the manifests in ``rewritten`` (their layers are
        written again) and of those with zstd layers (a docker archive decompresses them) stay:
        a rewrite starts from the stored document."""
        canonical: dict[int, Descriptor] = {}

        def one(desc: Descriptor) -> Descriptor:
            found = canonical.get(id(desc))
            if found is None:
                found = canonical[id(desc)] = self._shared(desc)
            return found

        plan.blobs = [one(d) for d in plan.blobs]
        plan.missing = [one(d) for d in plan.missing]
        for m in plan.manifests:
            m.config = one(m.config)
            m.layers = [one(d) for d in m.layers]
            if m.descriptor.get("digest") in rewritten or any(regen.is_zstd(d.get("mediaType", "")) for d in m.layers):
                continue
            media_type = m.document.get("mediaType")
            m.document = {"mediaType": media_type} if media_type is not None else {}
