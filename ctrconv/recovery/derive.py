"""Re-derive image records from the content store when meta.db lost them.

Manifests and indexes are recognised among the (verified) blobs by their JSON shape; the
top-level ones (not listed by another index) become images. Names come from the caller
(``--name DIGEST=REF``), from the document's own annotations, or a placeholder that keeps the
digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.validate import parse_json_bytes, validate_object

MAX_JSON_BLOB = 4 << 20
PLACEHOLDER_REPO = "recovered.ctrconv.invalid/image"
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


@dataclass(frozen=True)
class FoundDocument:
    descriptor: dict[str, Any]
    children: tuple[str, ...]
    annotations: dict[str, str]


def sniff_document(digest: Digest, path: Path) -> FoundDocument | None:
    """An index or manifest stored at ``path`` (already digest-verified), or None."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BLOB or size < 2:
            return None
        with open(path, "rb") as f:
            data = f.read()
        if data.lstrip()[:1] != b"{":
            return None
        doc = parse_json_bytes(data)
    except (OSError, CtrconvError):
        return None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        return None
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        if isinstance(doc.get("manifests"), list):
            media_type = mt.OCI_INDEX
        elif isinstance(doc.get("config"), dict) and isinstance(doc.get("layers"), list):
            media_type = mt.OCI_MANIFEST
        else:
            return None
    if not (mt.is_index(media_type) or mt.is_manifest(media_type)):
        return None
    try:
        validate_object(media_type, doc, digest=str(digest))
    except CtrconvError:
        return None
    if mt.is_index(media_type):
        children = tuple(str(m.get("digest")) for m in doc.get("manifests", []))
    else:
        children = (str(doc["config"].get("digest")), *(str(l.get("digest")) for l in doc.get("layers", [])))
    annotations = {k: v for k, v in (doc.get("annotations") or {}).items() if isinstance(v, str)}
    return FoundDocument({"mediaType": media_type, "digest": str(digest), "size": size}, children, annotations)


def top_level(documents: list[FoundDocument]) -> list[FoundDocument]:
    """Documents no found index lists: the roots of images."""
    listed = {c for d in documents if mt.is_index(d.descriptor["mediaType"]) for c in d.children}
    return [d for d in documents if d.descriptor["digest"] not in listed]


def derived_name(doc: FoundDocument, names: dict[str, str]) -> str:
    digest = doc.descriptor["digest"]
    if digest in names:
        return names[digest]
    for key in NAME_ANNOTATIONS:
        value = doc.annotations.get(key, "")
        if "/" in value or ":" in value:
            return value
    return f"{PLACEHOLDER_REPO}@{digest}"
