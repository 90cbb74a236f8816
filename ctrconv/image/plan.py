"""Walk an image graph (index -> manifests -> config + layers) into a transfer plan.

The plan's objects (:class:`~ctrconv.image.model.ImagePlan`, ``PlannedManifest``) and the
:class:`~ctrconv.image.model.BlobSource` protocol are declared in :mod:`ctrconv.image.model`
and importable from here too (every caller of the walk needs them).

The walk follows containerd's ``ChildrenHandler`` wrapped in ``FilterPlatforms``: an index
child with a ``platform`` that the selector rejects is skipped (and recorded as skipped);
children without a platform are always taken. Index and manifest JSON is read verified
(digest and size) and validated against the schemas before anything is planned from it.
"""

from __future__ import annotations

from typing import Any, Callable

from ctrconv.digest import Digest, is_canonical
from ctrconv.errors import ContentError, FormatError, MissingContentError
from ctrconv.image.model import BlobSource, ImagePlan, PlannedManifest, config_platform, platform_string
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.platform import MatchComparer, Platform, select_children
from ctrconv.oci.validate import validate_json

MAX_INDEX_DEPTH = 8
#: ``(platform dict) -> bool``; ``None`` selects everything
PlatformSelector = Callable[[dict[str, Any]], bool]

__all__ = [
    "BlobSource", "DocumentCache", "ImagePlan", "digest_of", "MAX_INDEX_DEPTH", "PlannedManifest", "PlatformSelector",
    "config_platform", "image_platforms", "plan_image", "platform_string", "ranked_manifests", "read_json_blob",
]


def digest_of(desc: dict[str, Any]) -> str:
    """A descriptor's digest, strictly checked (:class:`InvalidDigestError` otherwise)."""
    text = desc.get("digest")
    if type(text) is str:
        return _canonical(text)
    return str(Digest.parse(text))


_digest = digest_of


def _canonical(text: str) -> str:
    """A digest string checked (a walk of 10,000 images checks 95,000 descriptors): a valid
    digest's canonical form is the text itself; :meth:`Digest.parse` words the refusal."""
    if is_canonical(text):
        return text
    return str(Digest.parse(text))


#: digest -> validated document, shared by the walks of one operation (documents are immutable)
DocumentCache = dict[tuple[str, str, int], dict[str, Any]]


def read_json_blob(source: BlobSource, desc: dict[str, Any], cache: DocumentCache | None = None) -> dict[str, Any]:
    """Read, verify (digest, size) and schema-validate an index/manifest/config blob.

    With ``cache``, a document already read under the same digest, media type and size is
    returned without reading or validating it again (``ls`` over many images sharing content).
    """
    key = (str(desc.get("digest")), str(desc.get("mediaType", "")), desc.get("size"))
    if cache is not None and key in cache:
        return cache[key]
    doc = _read_json_blob(source, desc)
    if cache is not None:
        cache[key] = doc  # type: ignore[index]
    return doc


def _read_json_blob(source: BlobSource, desc: dict[str, Any]) -> dict[str, Any]:
    digest = _digest(desc)
    size = desc.get("size")
    if not isinstance(size, int) or size < 0:
        raise FormatError(f"descriptor {digest} has invalid size {size!r}")
    if not source.exists(digest):
        raise MissingContentError(f"blob {digest} ({desc.get('mediaType')}) not found")
    data = source.read_small(digest, size)
    return validate_json(desc.get("mediaType", ""), data, digest=digest)


def plan_image(
    source: BlobSource,
    target: dict[str, Any],
    selector: PlatformSelector | None = None,
    cache: DocumentCache | None = None,
    *,
    filter_nested: bool = True,
) -> ImagePlan:
    """Plan the blobs of the image rooted at ``target``.

    Missing manifests/configs/layers are recorded in ``missing`` (not raised) so callers can
    say exactly what is absent; corrupt or invalid JSON raises. ``selector`` filters the
    children of every index (an import's walk, containerd's ``FilterPlatforms`` handler), or
    with ``filter_nested=False`` those of the target index only, everything below a child
    taken whole (``ctr images export``: each chosen child's tree is walked unfiltered).
    """
    plan = ImagePlan(target=target)
    seen: set[str] = set()

    def add(desc: dict[str, Any]) -> bool:
        d = _digest(desc)
        if d in seen:
            return False
        seen.add(d)
        plan.blobs.append(desc)
        if not source.exists(d):
            plan.missing.append(desc)
            return False
        return True

    def visit(desc: dict[str, Any], depth: int) -> None:
        media_type = desc.get("mediaType", "")
        if depth > MAX_INDEX_DEPTH:
            raise FormatError(f"index {_digest(desc)}: indexes nested deeper than {MAX_INDEX_DEPTH}")
        if not add(desc):
            return
        if mt.is_index(media_type):
            doc = read_json_blob(source, desc, cache)
            plan.indexes.append(desc)
            filtered = selector is not None and (filter_nested or depth == 0)
            for child in doc.get("manifests", []):
                if filtered and child.get("platform") and not selector(child["platform"]):  # type: ignore[misc]
                    plan.skipped.append(child)
                    continue
                visit(child, depth + 1)
        elif mt.is_manifest(media_type):
            doc = read_json_blob(source, desc, cache)
            config = doc["config"]
            layers = list(doc.get("layers") or [])
            platform = desc.get("platform")
            if add(config) and platform is None and mt.is_config(config.get("mediaType", "")):
                platform = config_platform(read_json_blob(source, config, cache))
            for layer in layers:
                add(layer)
            plan.manifests.append(PlannedManifest(desc, platform, config, layers, doc))

    visit(target, 0)
    return plan


def image_platforms(source: BlobSource, target: dict[str, Any], cache: DocumentCache | None = None) -> list[str]:
    """containerd ``images.Platforms`` as ``ctr images ls`` shows them (sorted, unique).

    Index children contribute their descriptor platform; a manifest without one contributes
    its config's ``os/architecture``.
    """
    found: set[str] = set()

    def visit(desc: dict[str, Any], depth: int) -> None:
        if desc.get("platform"):
            found.add(platform_string(desc["platform"]))  # type: ignore[arg-type]
            return
        media_type = desc.get("mediaType", "")
        if depth > MAX_INDEX_DEPTH or not source.exists(_digest(desc)):
            return
        if mt.is_index(media_type):
            for child in read_json_blob(source, desc, cache).get("manifests", []):
                visit(child, depth + 1)
        elif mt.is_manifest(media_type):
            visit(read_json_blob(source, desc, cache)["config"], depth + 1)
        elif mt.is_config(media_type):
            doc = read_json_blob(source, desc, cache)
            found.add(platform_string({"os": doc.get("os"), "architecture": doc.get("architecture")}))  # type: ignore[arg-type]

    try:
        visit(target, 0)
    except ContentError:
        pass
    return sorted(found)


class _Ranked:
    """A planned manifest seen through its index descriptor's platform (what containerd sorts by)."""

    __slots__ = ("manifest", "platform")

    def __init__(self, manifest: PlannedManifest) -> None:
        self.manifest = manifest
        p = manifest.descriptor.get("platform")
        self.platform = Platform.from_json(p) if p else None


def ranked_manifests(plan: ImagePlan, matcher: MatchComparer) -> list[PlannedManifest]:
    """The plan's manifests as containerd filters and orders an index's children for
    ``matcher`` (``platforms.Less``; children without a platform last): element 0 is the one
    ``LimitManifests(..., 1)`` and ``ctr images export``'s manifest.json pick."""
    return [r.manifest for r in select_children([_Ranked(m) for m in plan.manifests], matcher)]
