"""What images a root holds: names, targets, platforms, sizes and whether content is present.

Sizes and platforms are computed the way ``ctr images ls`` computes them, so the two agree.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Generic, Iterator, TypeVar

from ctrconv.containerd.content import ContentStore, ListingContent, NamespaceContent, blob_listing
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.imagerecords import Element, StoredImages
from ctrconv.containerd.records import ImageRecord, Target
from ctrconv.errors import CtrconvError
from ctrconv.forked import Beside, can_split, map_balanced
from ctrconv.listingfacts import FACTS_FROM, ConfigFacts, IndexFacts, Key, ListingFacts, ManifestFacts
from ctrconv.oci import platform as plat
from ctrconv.pipeline.completeness import LabelsOf, SnapshotExists, assess
from ctrconv.pipeline.completeness import lookups_in
from ctrconv.image.model import PlannedManifest
from ctrconv.image.plan import (
    DocumentCache, ImagePlan, digest_of, image_platforms, platform_string, ranked_manifests,
)
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.validate import validate_json
from ctrconv.sizes import human_size  # noqa: F401 - (its home was here: kept importable)

T = TypeVar("T")


@dataclass
class ImageSummary:
    namespace: str
    name: str
    media_type: str
    digest: str
    size: int
    platforms: list[str]
    complete: bool
    missing: list[str]
    problem: str | None = None
    #: the platform completeness was judged for (``ls --platform``, default the host)
    judged_platform: str = ""
    #: "complete", "incomplete", "platform-absent" (an index whose judged platform this
    #: namespace never pulled, while another platform is usable), "layers-discarded" (layer
    #: blobs let go after unpacking, CRI ``discard_unpacked_layers``: it runs) or "error"
    status: str = "incomplete"
    #: platforms of the image a container can start from (whole, or unpacked with layers discarded)
    present_platforms: list[str] = field(default_factory=list)

    def __reduce__(self) -> tuple[type["ImageSummary"], tuple[Any, ...]]:
        """Pickled as its constructor's arguments: a split listing sends half its summaries
        through a pipe, and this takes half the time of pickling the instance's ``__dict__``
        (and a third less to load)."""
        return ImageSummary, (self.namespace, self.name, self.media_type, self.digest, self.size, self.platforms,
                              self.complete, self.missing, self.problem, self.judged_platform, self.status,
                              self.present_platforms)

    def to_json(self) -> dict[str, Any]:
        """:func:`dataclasses.asdict` of the summary (the same keys in the same order; its deep
        copy is the slowest part of ``ls --json`` at 10,000 images)."""
        return {"namespace": self.namespace, "name": self.name, "media_type": self.media_type,
                "digest": self.digest, "size": self.size, "platforms": list(self.platforms),
                "complete": self.complete, "missing": list(self.missing), "problem": self.problem,
                "judged_platform": self.judged_platform, "status": self.status,
                "present_platforms": list(self.present_platforms)}


def judged_platform(matcher: plat.MatchComparer) -> str:
    """The platform a matcher stands for, as ``ls`` names it (``linux/amd64``)."""
    platforms = getattr(matcher, "platforms", None)
    first = platforms[0] if platforms else plat.host_platform()
    return plat.format_platform(first)


def summarize(
    image: ImageRecord, content: ContentStore | NamespaceContent, matcher: plat.MatchComparer,
    cache: DocumentCache | None = None, *, labels_of: LabelsOf | None = None,
    snapshot_exists: SnapshotExists | None = None, facts: ListingFacts | None = None,
    judged: str | None = None,
) -> ImageSummary:
    """Walk one image for ``matcher``: ctr-compatible size, all platforms, completeness
    (:mod:`ctrconv.pipeline.completeness`, the rule ``verify`` applies). ``judged``: the
    matcher's :func:`judged_platform`, when the caller made it once for many images."""
    judged = judged_platform(matcher) if judged is None else judged
    target = image.target.descriptor()
    whole = whole_manifest(image, target, content, cache, facts)
    if whole is None:
        whole = flat_index(image, target, content, matcher, cache, facts)
    if whole is not None:
        whole.judged_platform = judged
        return whole
    summary = ImageSummary(
        namespace=image.namespace, name=image.name, media_type=image.target.media_type,
        digest=image.target.digest, size=0, platforms=[], complete=False, missing=[],
        judged_platform=judged,
    )
    try:
        selected = assess(content, target, selector=plat.selector(matcher), cache=cache,
                          labels_of=labels_of, snapshot_exists=snapshot_exists)
        summary.platforms = image_platforms(content, target, cache)
        if selected.plan.indexes:
            everything = assess(content, target, cache=cache, labels_of=labels_of, snapshot_exists=snapshot_exists)
            summary.present_platforms = sorted({platform_string(m.platform) or "unknown"
                                                for m in everything.usable if m.platform})
    except CtrconvError as exc:
        summary.problem = str(exc)
        summary.status = "error"
        return summary
    plan = selected.plan
    summary.missing = [d["digest"] for d in plan.missing]
    # complete as ``ctr images check`` says it: every blob of the judged platform present
    summary.complete = bool(plan.manifests) and not plan.missing
    summary.size = ctr_size(plan, matcher)
    if summary.complete:
        summary.status = "complete"
    elif selected.discarded and not selected.broken:
        summary.status = "layers-discarded"
    elif plan.indexes and not selected.usable and summary.present_platforms:
        summary.status = "platform-absent"
    return summary


def whole_manifest(image: ImageRecord, target: dict[str, Any], content: ContentStore | NamespaceContent,
                   cache: DocumentCache | None, facts: ListingFacts | None = None) -> ImageSummary | None:
    """The summary of an image whose target is a manifest with every blob present (most images
    of a large root), or None for anything else: an index, a missing blob, a document that does
    not read or validate. It is what :func:`summarize`'s walks conclude for such an image (no
    platform is selected below a manifest: complete; ``ctr``'s size is the manifest, config and
    layers; the platform is the config's ``os/architecture``), reached with one read of each
    document and one presence check per blob instead of three walks; None leaves the image to
    them, so every other case (and every error's wording) is theirs. With ``facts``, what an
    earlier run learnt from a document whose bytes are still the same replaces parsing and
    validating it (:mod:`ctrconv.listingfacts`)."""
    if not mt.is_manifest(target["mediaType"]):
        return None
    try:
        if not content.exists(digest_of(target)):  # (the record's digest: checked here)
            return None
        # the manifest read here is left in the walks' cache while the image may go to them
        # (a layer missing: CRI's discarded layers), taken out again when it does not
        key = _key(target)
        kept_already = cache is not None and key in cache  # type: ignore[operator]
        manifest = _MANIFEST.of(content, key, cache, facts, keep=True)
        if manifest is None:
            return None
        config_type, config_digest, config_size, config_has_platform, layers = manifest
        if config_has_platform or not mt.is_config(config_type):
            return None
        exists = content.exists  # (the manifest's digests passed its validation)
        if not exists(config_digest):
            return None
        for digest, _ in layers:
            if not exists(digest):
                return None
        config = _CONFIG.of(content, (config_digest, config_type, config_size), cache, facts)
        if config is None:
            return None
    except CtrconvError:
        return None
    if not kept_already and cache is not None:
        cache.pop(key, None)  # type: ignore[attr-defined]  # (whole: the walks will not ask for it)
    platform = _config_platform_text(config)
    return ImageSummary(
        namespace=image.namespace, name=image.name, media_type=image.target.media_type,
        digest=image.target.digest, size=target["size"] + config_size + sum(size for _, size in layers),
        platforms=[platform], complete=True, missing=[], status="complete",  # type: ignore[list-item]
    )


def _config_platform_text(config: ConfigFacts) -> str | None:
    """``platform_string`` of a config's ``os`` and ``architecture``; the few pairs a root holds
    are formatted once each."""
    try:
        return _PLATFORM_TEXTS[config]
    except KeyError:
        text = _PLATFORM_TEXTS[config] = platform_string({"os": config[0], "architecture": config[1]})
        if len(_PLATFORM_TEXTS) > 1024:
            _PLATFORM_TEXTS.clear()
        return text
    except TypeError:  # (a value that is no string: the schema check let no such config through)
        return platform_string({"os": config[0], "architecture": config[1]})


_PLATFORM_TEXTS: dict[ConfigFacts, str | None] = {}


def flat_index(image: ImageRecord, target: dict[str, Any], content: ContentStore | NamespaceContent,
               matcher: plat.MatchComparer, cache: DocumentCache | None,
               facts: ListingFacts | None = None) -> ImageSummary | None:
    """The summary of an image whose target is an index of platform manifests (what a
    registry pull records: every child a manifest with a ``platform``, each either absent,
    as the platforms a pull skipped are, or present with every blob), or None for anything
    else (nested indexes, a child without a platform, a partly stored child, a shared digest,
    a document that does not read or validate). It is what :func:`summarize`'s three walks
    conclude for such an image, reached with one read of each document: the platforms are
    the children's; the present ones are usable; the judged platform's children are the
    selected plan (complete when some are and none of them is absent); ``ctr``'s size is the
    index and the best of those. Configs are not read (the walks do not read a config whose
    manifest's descriptor names the platform). None leaves the image to the walks, so every
    other case (and every error's wording) is theirs."""
    if not mt.is_index(target["mediaType"]):
        return None
    try:
        index_digest = digest_of(target)  # (the record's digest: checked here)
        if not content.exists(index_digest):
            return None
        seen = {index_digest}
        children = _INDEX.of(content, _key(target), cache, facts, keep=True)
        if children is None:
            return None
        present: list[PlannedManifest] = []
        absent: list[dict[str, Any]] = []
        inner: set[str] = set()
        for child in children:
            platform = child.get("platform")
            if not platform or not isinstance(platform, dict) or not mt.is_manifest(child.get("mediaType", "")):
                return None
            digest = digest_of(child)
            if digest in seen:
                return None
            seen.add(digest)
            if not content.exists(digest):
                absent.append(child)
                continue
            manifest = _MANIFEST.of(content, _key(child), cache, facts, keep=True)
            if manifest is None:
                return None
            _, config_digest, config_size, _, layers = manifest
            for blob in (config_digest, *(layer for layer, _ in layers)):  # (validated digests)
                if not content.exists(blob):
                    return None
                inner.add(blob)
            present.append(PlannedManifest(child, platform, {"size": config_size},
                                           [{"size": size} for _, size in layers], {}))
        if inner & seen:  # a config or layer that is also a manifest of this image: the walks' case
            return None
    except CtrconvError:
        return None
    wanted = plat.selector(matcher)
    plan = ImagePlan(target=target, indexes=[target], manifests=[m for m in present if wanted(m.platform)],
                     missing=[child for child in absent if wanted(child["platform"])])
    summary = ImageSummary(
        namespace=image.namespace, name=image.name, media_type=image.target.media_type,
        digest=image.target.digest, size=ctr_size(plan, matcher),
        platforms=sorted({platform_string(child["platform"]) for child in children}),
        complete=bool(plan.manifests) and not plan.missing, missing=[child["digest"] for child in plan.missing],
        present_platforms=sorted({platform_string(m.platform) or "unknown" for m in present}),
    )
    if summary.complete:
        summary.status = "complete"
    elif not plan.manifests and summary.present_platforms:
        summary.status = "platform-absent"
    return summary


@dataclass(frozen=True)
class _Facts(Generic[T]):
    """What the fast paths take from one kind of document, and where the listing facts keep
    it: ``extract`` of the parsed document; ``lookup``/``remember`` in :class:`ListingFacts`."""

    extract: Callable[[dict[str, Any]], T]
    lookup: Callable[[ListingFacts, Key], T | None]
    remember: Callable[[ListingFacts, Key, T], None]

    def of(self, content: ContentStore | NamespaceContent, key: Key, cache: DocumentCache | None,
           facts: ListingFacts | None, *, keep: bool = False) -> T | None:
        """The facts of the document ``key`` names: remembered (its file still holding its
        bytes), else read, validated and learnt; None where the walks must word a problem.
        ``keep``: a document read here goes into the walks' ``cache`` too (where the caller
        often leaves the image to them: an index whose children are partly stored)."""
        if facts is not None:
            known = self.lookup(facts, key)
            if known is not None and (key in facts.checked or _unchanged(content, key)):
                facts.checked.add(key)  # read and hashed once per listing (tags share documents)
                return known
        doc = _present_document(content, key, cache)
        if doc is None:
            return None
        if keep and cache is not None:
            cache[key] = doc  # type: ignore[index]
        found = self.extract(doc)
        if facts is not None:
            self.remember(facts, key, found)
        return found


def _manifest_extract(doc: dict[str, Any]) -> ManifestFacts:
    config = doc["config"]
    return (config.get("mediaType", ""), config["digest"], config["size"], "platform" in config,
            [(layer["digest"], layer["size"]) for layer in doc.get("layers") or []])


#: a manifest's config descriptor (media type, digest, size, whether it names a platform) and
#: its layers' digests and sizes
_MANIFEST = _Facts(_manifest_extract, ListingFacts.manifest, ListingFacts.remember_manifest)
#: a config's ``os`` and ``architecture``, as the document holds them
_CONFIG: _Facts[ConfigFacts] = _Facts(lambda doc: (doc.get("os"), doc.get("architecture")),
                                      ListingFacts.config, ListingFacts.remember_config)
#: an index's ``manifests`` array, as the document holds it ([] when it has none)
_INDEX: _Facts[IndexFacts] = _Facts(lambda doc: doc.get("manifests") or [], ListingFacts.index,
                                    ListingFacts.remember_index)


def _key(desc: dict[str, Any]) -> Key:
    """A descriptor's key in the document cache (and in the listing facts)."""
    return (str(desc.get("digest")), str(desc.get("mediaType", "")), desc.get("size"))


def _unchanged(content: ContentStore | NamespaceContent, key: Key) -> bool:
    """Whether the blob's file still holds exactly the bytes ``key`` names (size and digest)."""
    size = key[2]
    if type(size) is not int or not 0 <= size <= _SMALL_DOCUMENT_LIMIT:
        return False
    return _reader(content).read_exact(key[0], size) is not None


def _present_document(content: ContentStore | NamespaceContent, key: Key,
                      cache: DocumentCache | None) -> dict[str, Any] | None:
    """:func:`~ctrconv.image.plan.read_json_blob` of a document (by its cache ``key``) whose
    blob the caller found present, or None where that would raise or read through the
    verifying reader (another size, another digest, unreadable, too large): the walks then meet
    the problem and word it. One ``open``/``read``/``close`` and the schema check, without the
    namespace and verifying-reader layers. A document the walks read is taken from their cache;
    one read here is not put there (the names of one target share its summary, and a document
    of two targets is rare: keeping every document cost more than reading those again)."""
    if cache is not None:
        found = cache.get(key)  # type: ignore[call-overload]
        if found is not None:
            return found
    size = key[2]
    if type(size) is not int or not 0 <= size <= _SMALL_DOCUMENT_LIMIT:
        return None
    data = _reader(content).read_exact(key[0], size)
    if data is None:
        return None
    return validate_json(key[1], data, digest=key[0])


def _reader(content: ContentStore | NamespaceContent) -> ContentStore | ListingContent:
    """What reads a present document's bytes: a listing's view (its blob directories held
    open), else the store (a namespace's view only adds the record check, made already)."""
    if isinstance(content, ListingContent) or not isinstance(content, NamespaceContent):
        return content
    return content.store


#: :meth:`ContentStore.read_small`'s limit: a larger "document" is the walks' error to word
_SMALL_DOCUMENT_LIMIT = 16 << 20


def ctr_size(plan: ImagePlan, matcher: plat.MatchComparer) -> int:
    """containerd ``Image.Size`` with ``LimitManifests(..., 1)``: indexes + the best manifest."""
    size = sum(d["size"] for d in plan.indexes)
    if not plan.indexes and not plan.manifests:
        return plan.target["size"]

    ranked = ranked_manifests(plan, matcher)
    if ranked:
        best = ranked[0]
        size += best.descriptor["size"] + best.config["size"] + sum(l["size"] for l in best.layers)
    return size


class RecentDocuments(OrderedDict):  # type: ignore[type-arg]
    """A :data:`DocumentCache` that keeps the ``limit`` documents read last.

    Images are listed by name, so the tags of one repository, which share manifests and
    configs, come one after another; a root of 10,000 images need not keep its 20,000 parsed
    documents alive until the listing ends. A document dropped and needed again is only read
    (and verified) again. The oldest read goes first, however often it was used since: a
    lookup is a plain ``dict`` lookup (an LRU's bookkeeping on every hit cost more than the
    rare second read of a shared document it saves); an ``OrderedDict`` drops its oldest in
    constant time (a ``dict`` skips every slot deleted before it to find it).
    """

    def __init__(self, limit: int = 4096) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and len(self) >= self.limit:
            self.popitem(last=False)
        super().__setitem__(key, value)


#: images in a namespace from which the listing is split between two processes (a fork costs
#: a few milliseconds; 2,000 images take a second or more on one core)
SPLIT_FROM = 2000


#: the collector's generation-0 threshold while a listing runs (:func:`_fewer_collections`)
LISTING_GC_THRESHOLD = 250_000


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Let the cyclic collector run at most every :data:`LISTING_GC_THRESHOLD` new objects
    while a listing runs (unless it runs less often already, or not at all). A listing makes
    hardly any cyclic garbage: its documents, records and summaries are freed by reference
    counting, and each collection only traverses the objects it keeps (a 10,000-image ``ls``
    ran two collections of ~50,000 objects in each process, ~16 ms each, all of them
    reclaiming nothing). What an image that goes through the walks leaves in cycles (closures
    of the plan walk, tens of objects) is still collected, at the new pace: at most a few
    tens of megabytes wait for it. What is left uncollected at the end waits for the next
    collection of the oldest generation."""
    young, *older = gc.get_threshold()
    if young == 0 or young >= LISTING_GC_THRESHOLD:
        yield
        return
    frozen = gc.get_freeze_count()
    gc.set_threshold(LISTING_GC_THRESHOLD, *older)
    try:
        yield
    finally:
        # the objects the listing made and keeps go to the oldest generation untraversed:
        # with the old threshold back, the next allocation would otherwise set off a
        # collection of all of them at once (~20 ms after a 10,000-image listing); not when
        # the caller froze objects of its own (unfreezing would thaw them too)
        if not frozen:
            gc.freeze()
            gc.unfreeze()
        gc.set_threshold(young, *older)


def list_images(meta: MetadataDB, content: ContentStore, namespaces: list[str], matcher: plat.MatchComparer) -> list[ImageSummary]:
    with _fewer_collections():
        return _list_images(meta, content, namespaces, matcher)


def _list_images(meta: MetadataDB, content: ContentStore, namespaces: list[str],
                 matcher: plat.MatchComparer) -> list[ImageSummary]:
    out = []
    # the documents the walks read (and those flat_index hands them): an image's three walks,
    # and images sharing an index's children, read each once
    cache: DocumentCache = RecentDocuments()  # type: ignore[assignment]
    facts: ListingFacts | None = None
    facts_looked_for = False
    judged = judged_platform(matcher)
    for ns in namespaces:
        try:  # first, to know whether the listing will be split (read again below if it raised)
            stored: StoredImages | None = meta.stored_images(ns)
        except Exception:  # noqa: BLE001 -- raised again in its turn, after what is read before it
            stored = None
        split = stored is not None and len(stored.elements) >= SPLIT_FROM and can_split()
        # a split listing needs the blob directories listed: a forked child lists them while
        # this process reads the content records (each ~30 ms at 10,000 images)
        with Beside(partial(blob_listing, content)) if split else nullcontext() as listing:
            visible = ListingContent(content, ns, meta.content_digests(ns))
            labels_of, snapshot_exists = lookups_in(meta, ns)
            if stored is None:
                stored = meta.stored_images(ns)  # (raises what it raised)
            if not facts_looked_for and len(stored.elements) >= FACTS_FROM:
                facts_looked_for = True
                loaded = ListingFacts.load(content.path)
                facts = loaded if loaded.path is not None else None  # no cache directory: nothing to learn for
            if isinstance(listing, Beside):  # (split) once, before the fork, not once in each process
                visible.list_now(listing.result())

        by_target: dict[Target, ImageSummary] = {}

        def one(image: ImageRecord, facts: ListingFacts | None = facts,
                by_target: dict[Target, ImageSummary] = by_target) -> ImageSummary:
            known = by_target.get(image.target)
            if known is not None:  # another name of the same target in this namespace
                return _renamed(known, image)
            summary = by_target[image.target] = summarize(
                image, visible, matcher, cache, labels_of=labels_of, snapshot_exists=snapshot_exists, facts=facts,
                judged=judged)
            return summary

        try:
            out += _records(stored, one, split, facts)
        finally:
            visible.close()
    if facts is not None:  # a listing of some namespaces keeps the facts of the others
        facts.save(keep_unused=set(namespaces) != set(meta.namespaces()))
    return out


def image_names(meta: MetadataDB, namespaces: list[str]) -> list[str]:
    """The image names of ``namespaces`` in :func:`list_images`' order, each record decoded
    as it decodes them (a record that does not read raises its error, the walk's after
    them), and nothing else read."""
    names = []
    for ns in namespaces:
        stored = meta.stored_images(ns)
        names += [stored.decode(element).name for element in stored.elements]
        if stored.error is not None:
            raise stored.error
    return names


def _renamed(summary: ImageSummary, image: ImageRecord) -> ImageSummary:
    """The summary of another name of ``summary``'s target in the same namespace: what a
    summary says is a function of the target descriptor, the namespace's content and labels and
    the platform judged, never of the name (a CRI node records each image as its tag, its
    ``repo@digest`` and its config ID, all of one target; tags often share one too)."""
    return replace(summary, name=image.name, platforms=list(summary.platforms), missing=list(summary.missing),
                   present_platforms=list(summary.present_platforms))


def _records(stored: StoredImages, one: Callable[[ImageRecord], ImageSummary], split: bool,
             facts: ListingFacts | None = None) -> list[ImageSummary]:
    """``one`` of each image record; when ``split``, the records are shared out in runs of
    :func:`_run_length` between this process and a forked one as each takes the next run
    (:func:`~ctrconv.forked.map_balanced`: halves by count are not halves of the work), each
    run decoded and summarised where it was taken, and what the other process learnt comes
    back with its summaries (``facts``). A record that does not read raises its error, as a
    loop over the records would have (the runs fail as that loop, in order); the walk's error
    after them all."""
    elements = stored.elements
    if split:
        def run(part: list[Element]) -> tuple[list[ImageSummary], Any]:
            return _summaries(stored, part, one), facts.take_fresh() if facts is not None else None

        size = _run_length(len(elements))
        summaries = []
        for part, learnt in map_balanced(run, [elements[i:i + size] for i in range(0, len(elements), size)]):
            summaries += part
            if facts is not None:
                facts.absorb(learnt)
    else:
        summaries = _summaries(stored, elements, one)
    if stored.error is not None:  # the walk over the records stopped after the last of them
        raise stored.error
    return summaries


def _run_length(records: int) -> int:
    """Records per shared run: a few milliseconds of work each (the unit the two processes
    balance by, so the one that finishes first waits at most that long), and at most ~250
    runs (each costs a pipe read and a pickled frame)."""
    return max(32, -(-records // 250))


def _summaries(stored: StoredImages, elements: list[Element], one: Callable[[ImageRecord], ImageSummary]) -> list[ImageSummary]:
    """The records decoded first, up to the first that does not read, then summarised, then
    that record's error. Decoding them all before the summaries, not one before each, costs
    ~0.15 s less CPU at 10,000 images (measured; the two loops interleaved run slower)."""
    images: list[ImageRecord] = []
    try:
        for element in elements:
            images.append(stored.decode(element))
    except CtrconvError as exc:
        unreadable: CtrconvError | None = exc
    else:
        unreadable = None
    summaries = [one(image) for image in images]
    if unreadable is not None:
        raise unreadable
    return summaries
