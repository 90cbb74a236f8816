"""Which stored images an ``--image`` reference means: names, image IDs and digest references.

Every command that takes ``--image`` resolves it here (:func:`resolve_images`), in this order:

1. the exact stored name (``sha256:<id>``, the alias CRI stores, is an exact name too);
2. the name normalised as docker/nerdctl do (``busybox`` -> ``docker.io/library/busybox:latest``);
3. an image ID: ``sha256:<64 hex>``, a bare 64-hex ID, or a unique prefix of at least
   :data:`MIN_ID_PREFIX` hex digits (with or without ``sha256:``). An image's ID is the config
   digest of its host-platform manifest, what ``crictl images`` shows under IMAGE ID (CRI's
   ``images.Config`` with ``platforms.Default()``); an index pulled or imported for another
   platform only has the configs of the platforms present. The target digest (the manifest or
   index digest ``nerdctl images`` shows as IMAGE ID) matches too. Several names of one image
   (same ID) are one match, and all of them are returned; a prefix that matches two different
   images is a usage error naming them;
4. ``repo[:tag]@sha256:<digest>``: every image of that repository (after normalisation) whose
   target is that digest, whatever tag it is stored under, as CRI and nerdctl resolve it.

Anything else is :class:`~ctrconv.errors.NotFoundError` (a usage error, exit 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable, Protocol, Sequence

from ctrconv.containerd.records import ImageRecord, Target
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, NotFoundError, UsageError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci import platform as plat
from ctrconv.image.protocols import NamedEntry
from ctrconv.oci import reference
from ctrconv.image.plan import BlobSource, DocumentCache, plan_image, ranked_manifests

#: shortest image ID prefix accepted (what ``crictl images`` and ``nerdctl images`` print)
MIN_ID_PREFIX = 12

_ID_RE = re.compile(r"(?:sha256:)?([0-9a-f]{%d,64})" % MIN_ID_PREFIX)
_SHORT_HEX_RE = re.compile(r"(?:sha256:)?[0-9a-f]{1,%d}" % (MIN_ID_PREFIX - 1))


class ImageIndex(Protocol):
    """Stored images by name: a meta.db (:class:`~ctrconv.containerd.metadata.MetadataDB`),
    or the named entries of a file source (:class:`EntryImages`)."""

    def image(self, namespace: str, name: str) -> ImageRecord | None: ...

    def images(self, namespace: str) -> Iterable[ImageRecord]: ...


def _place(namespace: str) -> str:
    """Where images were looked for: a namespace, or (``EntryImages``, namespace ``""``) the input."""
    return f"namespace {namespace!r}" if namespace else "the input"


def entry_annotations(entry: NamedEntry) -> dict[str, str]:
    """The annotations an image record of ``entry`` carries: its descriptor's, then its own."""
    ann = dict(entry.descriptor.get("annotations") or {})
    ann.update(entry.annotations or {})
    return {str(k): str(v) for k, v in ann.items()}


class EntryImages:
    """The named entries of an image source as image records (the first entry of a name wins,
    unnamed entries are left out), so ``--image`` means the same in ``convert`` as in ``export``."""

    def __init__(self, entries: Sequence[NamedEntry]) -> None:
        self._by_name: dict[str, ImageRecord] = {}
        for e in entries:
            if e.name and e.name not in self._by_name:
                d = e.descriptor
                self._by_name[e.name] = ImageRecord(
                    namespace="", name=e.name, target=Target(d.get("mediaType", ""), d["digest"], d["size"]),
                    annotations=entry_annotations(e))

    def image(self, namespace: str, name: str) -> ImageRecord | None:
        return self._by_name.get(name)

    def images(self, namespace: str) -> Iterable[ImageRecord]:
        return list(self._by_name.values())


def image_ids(content: BlobSource, record: ImageRecord, cache: DocumentCache | None = None) -> list[str]:
    """The image ID(s) of ``record``: ``sha256:<config digest>`` as CRI computes it.

    A manifest target: its config. An index: the config of the best host-platform match
    present (``platforms.Default()``, ordered like ``images.Manifest``); when no host
    platform is present (an index imported for another platform), the configs of every
    manifest present. Empty when the image's documents are missing or invalid.
    """
    target = {"mediaType": record.target.media_type, "digest": record.target.digest, "size": record.target.size}
    if not (mt.is_index(record.target.media_type) or mt.is_manifest(record.target.media_type)):
        return []
    try:
        plan = plan_image(content, target, None, cache)
        if not plan.indexes:
            manifests = plan.manifests[:1]
        else:
            manifests = ranked_manifests(plan, plat.default_matcher())[:1] or plan.manifests
        missing = {str(d.get("digest")) for d in plan.missing}
        ids = [str(Digest.parse(m.config.get("digest"))) for m in manifests]
    except CtrconvError:
        return []
    return sorted({i for i in ids if i not in missing})


@dataclass(frozen=True)
class _Candidate:
    record: ImageRecord
    ids: tuple[str, ...]

    @property
    def identity(self) -> str:
        """What makes two names the same image: the ID (the target digest when none is known)."""
        return self.ids[0] if self.ids else self.record.target.digest


def _describe(candidates: Iterable[_Candidate]) -> str:
    groups: dict[str, list[str]] = {}
    for c in candidates:
        groups.setdefault(c.identity, []).append(c.record.name)
    return "; ".join(f"{ident[7:19]} ({', '.join(sorted(names))})" for ident, names in sorted(groups.items()))


def _by_id(
    meta: ImageIndex, content: BlobSource, namespace: str, ref: str, hexpart: str, cache: DocumentCache
) -> list[ImageRecord]:
    found: list[_Candidate] = []
    for record in meta.images(namespace):
        ids = tuple(image_ids(content, record, cache))
        keys = [*ids, record.target.digest]
        if any(k.startswith("sha256:" + hexpart) for k in keys):
            found.append(_Candidate(record, ids))
    if not found:
        return []
    if len({c.identity for c in found}) > 1:
        raise UsageError(
            f"image ID {ref!r} is ambiguous in {_place(namespace)}: it matches {_describe(found)}",
            hint="give more hex digits or a name",
        )
    return [c.record for c in found]


def _by_digest_reference(meta: ImageIndex, namespace: str, ref: reference.Reference) -> list[ImageRecord]:
    found = []
    for record in meta.images(namespace):
        if record.target.digest != str(ref.digest):
            continue
        try:
            stored = reference.parse_normalized_named(record.name)
        except UsageError:
            continue
        if stored.name == ref.name:
            found.append(record)
    return found


def resolve_image_ref(
    meta: ImageIndex, content: BlobSource, namespace: str, ref: str, cache: DocumentCache | None = None
) -> list[ImageRecord]:
    """The stored image(s) ``ref`` means (several names of one image are all returned).

    ``cache`` shares the documents read for image IDs between the references of one call.
    """
    record = meta.image(namespace, ref)
    if record is not None:
        return [record]
    parsed: reference.Reference | None
    try:
        parsed = reference.parse_docker_ref(ref)
    except UsageError:
        parsed = None
    if parsed is not None and str(parsed) != ref:
        record = meta.image(namespace, str(parsed))
        if record is not None:
            return [record]
    id_match = _ID_RE.fullmatch(ref)
    if id_match is not None:
        found = _by_id(meta, content, namespace, ref, id_match.group(1), {} if cache is None else cache)
        if found:
            return found
    if parsed is not None and parsed.digest is not None:
        found = _by_digest_reference(meta, namespace, parsed)
        if found:
            return found
    hint = None
    if _SHORT_HEX_RE.fullmatch(ref):
        hint = f"an image ID prefix needs at least {MIN_ID_PREFIX} hex digits"
    raise NotFoundError(f"image {ref!r} not found in {_place(namespace)}", hint=hint)


def resolve_images(
    meta: ImageIndex, content: BlobSource, namespace: str, refs: Sequence[str] | None
) -> list[ImageRecord]:
    """The requested images (each stored name once, in request order), or all of the namespace."""
    if refs is None:
        records = list(meta.images(namespace))
        if not records:
            raise NotFoundError(f"{_place(namespace)} has no images")
        return records
    if not refs:
        raise UsageError("no image given (use --image REF or --all)")
    out: dict[str, ImageRecord] = {}
    cache: DocumentCache = {}
    for ref in refs:
        for record in resolve_image_ref(meta, content, namespace, ref, cache):
            out.setdefault(record.name, record)
    return list(out.values())


def unnamed_by_id(
    meta: ImageIndex, content: BlobSource, namespace: str, refs: Sequence[str] | None, records: Sequence[ImageRecord]
) -> list[ImageRecord]:
    """``records`` with each image asked for only by its image ID standing as one record named
    ``sha256:<target digest hex>``, which names nothing (``docker save <ID>`` writes such an
    image unnamed); an image also asked for by a name keeps its names."""
    by_id: set[str] = set()
    named: set[str] = set()
    cache: DocumentCache = {}
    for ref in refs or ():
        if meta.image(namespace, ref) is None and _ID_RE.fullmatch(ref) and not _names_an_image(meta, namespace, ref):
            by_id |= {r.target.digest for r in resolve_image_ref(meta, content, namespace, ref, cache)}
        else:
            named |= {r.target.digest for r in resolve_image_ref(meta, content, namespace, ref, cache)}
    out: dict[str, ImageRecord] = {}
    for record in records:
        digest = record.target.digest
        if digest in by_id and digest not in named:
            out.setdefault(digest, replace(record, name=digest))
        else:
            out.setdefault(record.name, record)
    return list(out.values())


def _names_an_image(meta: ImageIndex, namespace: str, ref: str) -> bool:
    try:
        parsed = reference.parse_docker_ref(ref)
    except UsageError:
        return False
    return meta.image(namespace, str(parsed)) is not None

