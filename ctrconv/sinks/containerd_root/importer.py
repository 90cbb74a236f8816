"""Copy images from any :class:`ImageSource` into a containerd root, offline.

What ends up in the root is what ``ctr images import`` (1.6) followed by ``Unpack`` leaves
behind once its lease is gone (docs/containerd-store.md §3.3, §3.4, §9): blob files and
per-namespace blob records for every blob of the selected platforms, the GC labels that keep
them (``gc.ref.content.{m.<i>,config,l.<i>,<i>}`` on parents, ``gc.ref.snapshot.<sn>`` on the
unpacked config, ``containerd.io/uncompressed`` on its layers), one image record per name, and
committed snapshots for the unpacked manifest. The source index/tar leftovers that containerd's
GC would collect (index.json blob, docker ``<id>/json``) are simply not written.
"""

from __future__ import annotations

import functools

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Sequence

from ctrconv.containerd import docker_store
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import key_bytes
from ctrconv.containerd.cri import CriNames, cri_names, source_labels
from ctrconv.containerd.schema import LABEL_DISTRIBUTION_SOURCE
from ctrconv.sinks.containerd_root import records as R
from ctrconv.sinks.containerd_root.content_writer import ContentWriter
from ctrconv.sinks.containerd_root.fetch import BlobFetcher
from ctrconv.sinks.containerd_root.options import ImportOptions, with_fields
from ctrconv.sinks.containerd_root.pull_labels import label_pull
from ctrconv.sinks.containerd_root.target_documents import TargetFirst
from ctrconv.sinks.containerd_root.transaction import RootTransaction
from ctrconv.digest import Digest
from ctrconv.errors import NAMES_NO_IMAGE, CtrconvError, FormatError, MissingContentError, UsageError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci import platform as plat
from ctrconv.progress import Progress, Stage, stage
from ctrconv.image.plan import ImagePlan, PlannedManifest, plan_image, read_json_blob
from ctrconv.image.protocols import ImageSource, NamedEntry


@dataclass
class ImportedImage:
    """One image record written (or found already there)."""

    name: str
    digest: str
    media_type: str
    status: str  # added / updated / present
    platforms: list[str]
    unpacked: str | None = None  # top chain ID, None with --no-unpack
    snapshots_created: int = 0
    snapshots_reused: int = 0
    #: every name recorded for it (CRI mode: ``repo:tag``, ``repo@digest``, ``sha256:<id>``)
    names: list[str] = field(default_factory=list)
    #: the input it came from (several inputs in one run)
    input: str | None = None


@dataclass
class ImportReport:
    root: str
    namespace: str
    snapshotter: str | None
    images: list[ImportedImage] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    blobs_written: int = 0
    blobs_present: int = 0
    bytes_written: int = 0
    written: bool = False
    #: a bolt file was committed (records, labels or snapshots); ``written`` without it: only
    #: blob files were restored
    metadata_written: bool = False
    backups: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def platform_matcher(platforms: Sequence[str] | None, all_platforms: bool) -> plat.MatchComparer:
    """``--platform`` (containerd ``OnlyStrict``, as ``ctr images import`` uses it; several = any
    of them), ``--all-platforms``, or the host (``platforms.Default()``)."""
    if all_platforms and platforms:
        raise UsageError("--platform and --all-platforms are mutually exclusive")
    if all_platforms:
        return plat.ALL
    if platforms:
        vector: list[plat.Platform] = []
        for spec in platforms:
            vector.extend(plat.only_strict(plat.parse_platform(spec)).platforms)
        return plat.Ordered(tuple(vector))
    return plat.default_matcher()


def unpack_matcher(unpack_platform: str | None) -> plat.MatchComparer:
    """Whose manifest is unpacked: ``unpack_platform`` exactly (``ctr images import --platform``
    unpacks that platform's image, a foreign one too: a node disk image built for arm64 on an
    amd64 machine), else this host's best match."""
    if unpack_platform is None:
        return plat.default_matcher()
    return plat.only_strict(plat.parse_platform(unpack_platform))


def _named_entries(entries: Sequence[NamedEntry], name: str | None, namespace: str) -> list[tuple[str, NamedEntry]]:
    if name is not None:
        # one image under several names (entries with one target) is one image (it counted 61)
        images = len({str(e.descriptor.get("digest")) for e in entries})
        if images != 1:
            raise UsageError(f"--name needs an input with exactly one image; it has {images}")
        return [(name, entries[0])]
    named = [(e.name, e) for e in entries if e.name]
    if namespace == docker_store.NAMESPACE:  # as docker load records an unnamed image
        named += [(docker_store.dangling_name(str(e.descriptor["digest"])), e) for e in entries if not e.name]
    if not named:
        raise UsageError(f"{NAMES_NO_IMAGE}; use --name")
    # one name given twice: the last entry is what the name ends up meaning (ctr 2.x); the
    # earlier one is not imported at all (it left its blobs and labelled records behind)
    last = {entry_name: index for index, (entry_name, _) in enumerate(named)}
    return [pair for index, pair in enumerate(named) if last[pair[0]] == index]


def _entry_annotations(entry: NamedEntry) -> dict[str, str]:
    ann = dict(entry.descriptor.get("annotations") or {})
    ann.update(entry.annotations or {})
    return {str(k): str(v) for k, v in ann.items()}


def _platform_of(m: PlannedManifest) -> plat.Platform | None:
    try:
        return plat.Platform.from_json(m.platform) if m.platform else None
    except Exception:  # an unparsable platform is simply not runnable here
        return None


def _unpack_candidate(plan: ImagePlan, matcher: plat.MatchComparer) -> PlannedManifest | None:
    """The manifest containerd's ``Unpack`` picks (``images.Manifest`` for ``matcher``).

    * An image that is one manifest: that manifest, whatever its platform (containerd does not
      check the target's; ``ctr images import`` of an arm64 image on amd64 unpacks it).
    * In an index: the children whose descriptor platform ``matcher`` matches, best first, and
      those without a platform after them; only the first is taken (``LimitManifests(.., 1)``),
      and a child without a platform only when its config's platform matches. So of an index
      whose children name no platform only the first child can be unpacked: containerd cannot
      use the image on a host that is not that child's (``ctr images check``: unavailable).
    * An artifact's manifest (a config of another media type than an image config) has nothing
      to unpack: it is recorded as ``ctr images pull`` 1.7/2.x records it, unpacked none.
    """
    if not plan.indexes:
        m = plan.manifests[0] if plan.manifests else None
        return m if m is not None and mt.is_config(m.config.get("mediaType", "")) else None
    best: tuple[int, int, PlannedManifest] | None = None
    first_untagged: PlannedManifest | None = None
    for order, m in enumerate(plan.manifests):
        tagged = m.descriptor.get("platform")
        if not tagged:
            first_untagged = first_untagged or m
            continue
        p = _platform_of(m)
        rank = matcher.rank(p) if p is not None else None
        if rank is not None and (best is None or (rank, order) < best[:2]):
            best = (rank, order, m)
    chosen = best[2] if best is not None else first_untagged
    if chosen is None or not mt.is_config(chosen.config.get("mediaType", "")):
        return None
    if chosen is first_untagged:
        p = _platform_of(chosen)
        if p is None or matcher.rank(p) is None:
            return None
    return chosen


def _image_id(plan: ImagePlan, candidate: PlannedManifest | None) -> str | None:
    """CRI's image ID (its ``sha256:<config>`` record): the config of the manifest it runs, or
    of an artifact that is one manifest (a wasm module, a helm chart: CRI 1.7 and 2.x pull
    those and record the ID as for an image; it was left out)."""
    if candidate is not None:
        return str(candidate.config["digest"])
    if not plan.indexes and len(plan.manifests) == 1:
        return str(plan.manifests[0].config["digest"])
    return None


class _Import:
    """State of one import run (one namespace, one transaction)."""

    def __init__(self, source: ImageSource, txn: RootTransaction, namespace: str, now_ns: int) -> None:
        self.source = source
        self.txn = txn
        self.namespace = namespace
        self.now_ns = now_ns
        self.labels: dict[str, dict[str, str]] = {}
        self.sizes: dict[str, int] = {}
        #: the line of the containerd that runs the root (set before labelling)
        self.line = "1.6"
        #: blobs pulled from a registry: their distribution sources add to the recorded ones
        self.pulled: set[str] = set()
        #: layers whose snapshot already existed (not applied by this run)
        self.reused_layers: set[str] = set()
        #: layers of pulled manifests that are not unpacked (see pull_labels.label_pull)
        self.walked: set[str] = set()
        #: why a manifest to unpack was left as it is (``skip_unpackable``): report warnings
        self.not_unpacked: list[str] = []

    def _has(self, desc: dict[str, Any]) -> bool:
        try:
            return self.source.exists(Digest.parse(desc.get("digest")))
        except CtrconvError:
            return False

    def _records(self, desc: dict[str, Any]) -> bool:
        """Whether this namespace holds a content record of the blob, in the root being written."""
        blobs = self.txn.meta.bucket(K.V1, key_bytes(self.namespace), K.CONTENT, K.BLOB)
        try:
            return blobs is not None and key_bytes(str(Digest.parse(desc.get("digest")))) in blobs.entries
        except CtrconvError:
            return False

    def add_labels(self, digest: str, labels: dict[str, str]) -> None:
        self.labels.setdefault(digest, {}).update(labels)

    def add_first_labels(self, digest: str, labels: dict[str, str]) -> None:
        """Labels an earlier image of this run does not already set (first fetch wins)."""
        current = self.labels.setdefault(digest, {})
        for key, value in labels.items():
            current.setdefault(key, value)

    def label_graph(
        self, plan: ImagePlan, selector: Callable[[dict[str, Any]], bool] | None, keep_partial: bool = False,
        *, label_every_child: bool = False, partial_from_records: bool = False,
    ) -> None:
        """Children labels exactly as ``SetChildrenLabels(FilterPlatforms(...))`` sets them.

        ``keep_partial``: an unselected child manifest whose blob the source has (with
        ``partial_from_records``: that the namespace records) is recorded and labelled from its
        index too, without labels of its own, as a 2.x transfer-service import leaves a
        platform whose config and layers were never fetched.
        ``label_every_child``: an index labels all its children, selected or not, as a CRI
        pull does (``SetChildrenMappedLabels`` before the platform filter).
        """
        absent = {str(d.get("digest")) for d in plan.missing}  # (non-distributable layers only)
        for desc in plan.blobs:
            if str(desc["digest"]) in absent:
                continue  # (labelled from its manifest, as containerd labels it; no record, no copy)
            self.sizes[str(Digest.parse(desc["digest"]))] = int(desc["size"])
            self.labels.setdefault(str(Digest.parse(desc["digest"])), {})
        for desc in plan.indexes:
            doc = read_json_blob(self.source, desc)
            kept = []
            for child in doc.get("manifests", []):
                if not (selector is not None and child.get("platform") and not selector(child["platform"])):
                    kept.append(child)
                elif keep_partial and (self._records(child) if partial_from_records else self._has(child)):
                    kept.append(child)
                    digest = str(Digest.parse(child["digest"]))
                    self.sizes[digest] = int(child["size"])
                    self.labels.setdefault(digest, {})
            self.add_labels(str(desc["digest"]), R.children_labels(doc.get("manifests", []) if label_every_child else kept))
        for m in plan.manifests:
            self.add_labels(str(m.descriptor["digest"]), R.children_labels([m.config, *m.layers]))


def _rules(given: ImportOptions, namespace: str) -> "_Options":
    """The options as the stages use them: platform matchers built, CRI decided by namespace."""
    matcher = platform_matcher(list(given.platform) if given.platform else None, given.all_platforms)
    return _Options(
        namespace=namespace, snapshotter=given.snapshotter, unpack=given.unpack,
        cri=namespace == R.CRI_NAMESPACE if given.cri is None else given.cri, cri_labels=given.cri_labels,
        pin=given.pin, keep_partial=given.keep_partial, partial_from_records=given.partial_from_records,
        all_platforms=given.all_platforms,
        selector=None if given.all_platforms else plat.selector(matcher),
        unpack_for=unpack_matcher(given.unpack_platform), plans=given.plans, skip_unpackable=given.skip_unpackable,
    )


def unpacked_layer_forms(source: ImageSource, given: ImportOptions, namespace: str
                        ) -> dict[str, tuple[Digest, int, Callable[[], BinaryIO]]]:
    """``diff ID -> (layer blob, size, opener)`` of the layers an import of ``source`` with
    ``given`` unpacks, and so labels ``containerd.io/uncompressed``: a docker archive later in
    the same run names them as it would after a separate ``ctr images import`` of this input
    (:class:`~ctrconv.sinks.containerd_root.reuse.CompressedLayers`). An image that does not
    plan here adds nothing (its import reports why)."""
    if not given.unpack:
        return {}
    rules = _rules(given, namespace)
    forms: dict[str, tuple[Digest, int, Callable[[], BinaryIO]]] = {}
    for entry in source.entries():
        try:
            plan = plan_image(source, entry.descriptor, rules.selector)
            candidate = _unpack_candidate(plan, rules.unpack_for)
            if candidate is None or plan.missing:
                continue
            diff_ids = read_json_blob(source, candidate.config).get("rootfs", {}).get("diff_ids") or []
        except CtrconvError:
            continue
        for layer, diff_id in zip(candidate.layers, diff_ids):
            digest = Digest.parse(layer["digest"])
            forms[str(diff_id)] = (digest, int(layer["size"]), functools.partial(source.open, digest))
    return forms


def copy_images_to_root(
    source: ImageSource,
    target_root: str | Path,
    namespace: str = "default",
    options: ImportOptions | None = None,
    *,
    entries: Sequence[NamedEntry] | None = None,
    progress: Progress | None = None,
    **fields: Any,
) -> ImportReport:
    """Write the images of ``source`` into the containerd root ``target_root`` (containerd stopped).

    ``entries`` are the images to copy (default: every named entry of ``source``); ``options``
    (:class:`ImportOptions`, whose fields document each choice; ``fields`` set single ones by
    name) say how. ``progress`` is told the stages ``content`` (bytes to copy), ``unpack``
    (layer bytes, files written) and ``records`` (records to write), each with its total up front.

    Raises:
        LockedError: containerd holds the root; MissingContentError: the input lacks a blob;
        FormatError: bad image JSON or layer data; UsageError: bad options or nothing to import.
    """
    from ctrconv.containerd.root import check_namespace

    check_namespace(namespace)
    # documents the root holds are read from it (a registry is not asked for them again)
    source = TargetFirst(source, Path(target_root) / K.CONTENT_PLUGIN_DIR)
    given = with_fields(options, fields)
    rules = _rules(given, namespace)
    report = ImportReport(str(target_root), namespace, given.snapshotter if given.unpack else None)
    named = _named_entries(list(entries if entries is not None else source.entries()), given.name, namespace)
    imports = _plan(source, named, rules, report)
    now_ns = time.time_ns()
    with RootTransaction(
        Path(target_root), (given.snapshotter,) if given.unpack else (), given.containerd_version, given.backup
    ) as txn:
        if txn.version_mismatch:
            report.warnings.append(txn.version_mismatch)
        run = _Import(source, txn, namespace, now_ns)
        # the line of the containerd that will run the root decides how a config-only
        # image is "unpacked" (see _unpack_manifest) and what a registry pull records
        line = run.line = given.containerd_version or txn.detected_version or "1.6"
        if given.unpack:
            _pull_unpacks(imports, line, given)
        _label(run, imports, rules)
        _let_go_of_blob_lists(imports)
        content = ContentWriter(txn.content_dir)
        snaps = None
        try:
            # a document whose file in the root did not hash to its digest is written again
            # (the configs the unpack reads are looked at now, not after the content is copied)
            _read_unpack_configs(source, imports)
            distrusted = frozenset(source.mismatched)
            trusted = frozenset() if given.verify_existing else R.recorded_blobs(txn.meta, namespace) - distrusted
            fetch_jobs = getattr(source, "parallel_reads", 1)
            if fetch_jobs > 1:  # a registry: blobs fetched side by side while the unpack goes on
                snaps, unpacked = _fetch_and_unpack(run, imports, content, trusted, rules, line,
                                                    given.max_layer_size, given.jobs, fetch_jobs, progress, report)
            else:
                _write_content(run, content, trusted, progress, report)
                snaps, unpacked = _unpack(run, imports, content, rules, line, given.max_layer_size, given.jobs, progress)
            report.warnings.extend(run.not_unpacked)
            with stage(progress, "records", len(run.labels) + len(imports), "records") as step:
                _write_records(run, imports, unpacked, rules, report, step)
            late = source.mismatched - distrusted
            if late and not given.verify_existing:  # (found after the content was copied: a registry's config)
                report.warnings.append(
                    f"{', '.join(sorted(late))}: the root's blob file does not hash to its digest (left as it is); "
                    "import again with --verify-existing to write it again, or run ctrconv rebuild")
            committed = txn.commit(snaps.install if snaps is not None else None)
            report.written = committed or report.blobs_written > 0
            report.metadata_written = committed
            report.backups = [str(p) for p in txn.backups]
        except BaseException:
            if not txn.meta_attempted:
                content.rollback()  # new blob files nobody references yet
            raise
        finally:
            content.close()
            if snaps is not None:
                snaps.close()
    return report


# -- stages: plan -> label -> write content -> unpack -> write records ----------------------


@dataclass(frozen=True)
class _Options:
    """What one import run was asked for, resolved once."""

    namespace: str
    snapshotter: str
    unpack: bool
    cri: bool
    cri_labels: bool
    pin: bool
    keep_partial: bool
    partial_from_records: bool
    all_platforms: bool
    selector: Callable[[dict[str, Any]], bool] | None
    unpack_for: plat.MatchComparer
    plans: Mapping[str, ImagePlan] | None = None
    skip_unpackable: bool = False


@dataclass
class _PlannedImport:
    """One image of the run: its name, index.json entry, plan and the manifest to unpack."""

    name: str
    entry: NamedEntry
    plan: ImagePlan
    unpack_target: PlannedManifest | None
    cri: CriNames | None = None
    #: every manifest to unpack when that is more than ``unpack_target`` (index order)
    every_platform: list[PlannedManifest] = field(default_factory=list)


def _unpack_order(imports: list[_PlannedImport]) -> list[PlannedManifest]:
    """The manifests to unpack, each once, in the order of the images."""
    targets: dict[str, PlannedManifest] = {}
    for item in imports:
        for t in item.every_platform or ([item.unpack_target] if item.unpack_target is not None else []):
            targets.setdefault(str(t.descriptor["digest"]), t)
    return list(targets.values())


def _pull_unpacks(imports: list[_PlannedImport], line: str, given: ImportOptions) -> None:
    """What a registry pull unpacks where ``ctr images pull`` unpacks more or less than the
    host's manifest (archive imports always unpack the host's, or ``--platform``'s one):

    * ``--all-platforms`` on 1.6 and 1.7: every platform of the image (their ``ctr`` loops
      ``Unpack`` over ``images.Platforms``);
    * ``--all-platforms`` on 2.x: none (its ``ctr`` hands the transfer service no unpack
      platform when no ``--platform`` is given; CRI never pulls all platforms);
    * several ``--platform``: each one's manifest, in the order given (1.6 and 1.7 loop
      ``Unpack`` over them, 2.x asks for one ``WithUnpack`` each).

    Manifests with anything but image layers are left out (``Unpack`` fails on them: an
    attestation's in-toto layer)."""
    several = list(given.platform or ()) if len(given.platform or ()) > 1 else []
    for item in imports:
        if item.entry.pulled_from is None:
            continue
        if given.all_platforms and line == "2.x":
            item.unpack_target, item.every_platform = None, []
        elif given.all_platforms and item.unpack_target is not None:
            item.every_platform = [m for m in item.plan.manifests if _unpackable(m)]
        elif several:
            chosen: dict[str, PlannedManifest] = {}
            for spec in several:
                m = _unpack_candidate(item.plan, unpack_matcher(spec))
                if m is not None and _unpackable(m):
                    chosen.setdefault(str(m.descriptor["digest"]), m)
            item.every_platform = list(chosen.values())
            if item.every_platform and item.unpack_target not in item.every_platform:
                item.unpack_target = item.every_platform[0]


def _read_unpack_configs(source: TargetFirst, imports: list[_PlannedImport]) -> None:
    """Read the config of every manifest to unpack once before the content is copied: one the
    root holds is read from it (and a file that does not hash to its digest is noted, to be
    written again), one it lacks is read from the input and kept for the copy. An unreadable
    one is left to the unpack, which says what is wrong with it."""
    for target in _unpack_order(imports):
        config = target.config
        if not mt.is_config(config.get("mediaType", "")):
            continue
        try:
            source.read_small(str(config["digest"]), int(config["size"]))
        except (CtrconvError, KeyError, TypeError, ValueError):
            continue


def _unpackable(m: PlannedManifest) -> bool:
    """An image manifest whose every layer is one that unpacking applies."""
    return mt.is_config(m.config.get("mediaType", "")) and len(_unpack_layers(m)) == len(m.layers)


def _known_plan(plans: Mapping[str, ImagePlan] | None, name: str, target: dict[str, Any]) -> ImagePlan | None:
    """The caller's walk of image ``name`` (:attr:`ImportOptions.plans`) where it is the one
    :func:`plan_image` would make here: same target, no index (a platform selector only
    filters an index's children)."""
    plan = plans.get(name) if plans else None
    if plan is None or plan.indexes or plan.target != target:
        return None
    return plan


def _plan(source: ImageSource, chosen: list[tuple[str, NamedEntry]], options: _Options,
          report: ImportReport) -> list[_PlannedImport]:
    """Plan every image before anything is written; the input must hold all it needs."""
    imports: list[_PlannedImport] = []
    for image_name, entry in chosen:
        plan = _known_plan(options.plans, image_name, entry.descriptor) or plan_image(source, entry.descriptor, options.selector)
        # a non-distributable (foreign) layer may be absent: an export that skipped it, a Windows
        # base layer; containerd imports the image, labelled to it, and cannot unpack it either
        needed = [d for d in plan.missing if not mt.is_nondistributable(str(d.get("mediaType", "")))]
        if needed:
            missing = ", ".join(f"{d.get('digest')} ({d.get('mediaType')})" for d in needed)
            raise MissingContentError(f"image {image_name}: the input lacks {missing}")
        foreign = {str(d.get("digest")) for d in plan.missing}
        if not plan.manifests:
            media_type = str(entry.descriptor.get("mediaType", ""))
            reason = ("no manifest for the selected platforms" if mt.is_manifest(media_type) or mt.is_index(media_type)
                      else f"not an image: its entry names a {media_type or 'blob without a media type'}")
            report.skipped.append({"name": image_name, "reason": reason})
            continue
        for m in plan.manifests:
            # nothing reads a manifest's document after planning (the unpack reads its config
            # from the source, labels come from the descriptors): a rebuild plans 10,000
            # images at once, and their documents were ~14 MiB of its peak
            m.document = {}
        # the platform the node runs: unpacked, and its config is CRI's image ID
        candidate = _unpack_candidate(plan, options.unpack_for)
        unpack = candidate if options.unpack else None
        if unpack is not None and foreign & {str(layer.get("digest")) for layer in unpack.layers}:
            report.warnings.append(f"{image_name}: not unpacked: a non-distributable layer of it is not in the input")
            unpack = None
        record = None
        if options.cri:
            record = cri_names(image_name, str(entry.descriptor["digest"]), _image_id(plan, candidate),
                               digest_name=not entry.synthesised)
        imports.append(_PlannedImport(image_name, entry, plan, unpack, record))
    if not imports:
        reasons = {skipped["reason"] for skipped in report.skipped}
        if reasons and all(r.startswith("not an image") for r in reasons):
            raise UsageError(f"nothing to import: {'; '.join(sorted(reasons))}")
        raise UsageError("nothing to import: every image was filtered out by the platform selection")
    return imports


def _label(run: _Import, imports: list[_PlannedImport], options: _Options) -> None:
    """GC labels of every parent; in CRI mode the distribution sources too."""
    for item in imports:
        pulled = item.entry.pulled_from
        # a registry pull (``ctr images pull`` as CRI) labels every child of an index
        run.label_graph(item.plan, options.selector, options.keep_partial,
                        label_every_child=options.cri or pulled is not None,
                        partial_from_records=options.partial_from_records)
        if item.cri is not None or pulled is not None:
            derived = item.cri.source_label if item.cri is not None else None
            if pulled is not None:
                derived = (f"{LABEL_DISTRIBUTION_SOURCE}.{pulled[0]}", pulled[1])
            distribution = source_labels(_entry_annotations(item.entry), derived)
            if pulled is not None:
                label_pull(run, item.plan, distribution, run.line == "2.x" and not options.cri,
                           () if options.all_platforms else _unpack_order([item]))
                continue
            for desc in item.plan.blobs:
                run.add_first_labels(str(Digest.parse(desc["digest"])), distribution)


def _let_go_of_blob_lists(imports: list[_PlannedImport]) -> None:
    """Once labelled, nothing reads a plan's blob or index lists again (the content copy
    takes ``run.sizes``): let them go while the target's meta.db tree is loaded."""
    for item in imports:
        item.plan.blobs, item.plan.indexes, item.plan.skipped = [], [], []


def _write_content(run: _Import, content: ContentWriter, recorded: frozenset[str],
                   progress: Progress | None, report: ImportReport) -> None:
    """Every blob into the content store, verified as it is copied (present ones skipped)."""
    with stage(progress, "content", sum(run.sizes.values())) as step:
        for digest, size in run.sizes.items():
            if content.write(run.source, {"digest": digest, "size": size}, step, recorded=digest in recorded):
                report.blobs_written += 1
                report.bytes_written += size
            else:
                report.blobs_present += 1
                step.advance(size)


def _unpack(run: _Import, imports: list[_PlannedImport], content: ContentWriter, options: _Options,
            line: str, max_layer_bytes: int | None, jobs: int | None,
            progress: Progress | None) -> tuple[Any, dict[str, Any]]:
    """Unpack each distinct manifest once; returns the snapshot writer (None when nothing
    was applied) and the results by manifest digest."""
    targets = {str(t.descriptor["digest"]): t for t in _unpack_order(imports)}
    total = sum(int(layer["size"]) for t in targets.values() for layer in _unpack_layers(t))
    with stage(progress if total else None, "unpack", total) as step:
        return _unpack_targets(run, list(targets.values()), content, options, line, max_layer_bytes, jobs, step)


def _unpack_targets(run: _Import, targets: list[PlannedManifest], content: ContentWriter, options: _Options,
                    line: str, max_layer_bytes: int | None, jobs: int | None,
                    step: Stage) -> tuple[Any, dict[str, Any]]:
    snaps = None
    unpacked: dict[str, Any] = {}
    try:
        for target in targets:
            if snaps is None and _unpack_layers(target):
                # made on first use: an import of config-only images alone touches no
                # snapshot bucket or snapshotter db, as containerd's unpack of them does not
                from ctrconv.sinks.containerd_root.snapshots import SnapshotWriter

                snaps = SnapshotWriter(run.txn, options.namespace, options.snapshotter, run.now_ns, max_layer_bytes,
                                       jobs)
            unpacked[str(target.descriptor["digest"])] = _unpack_manifest(
                run, snaps, options.snapshotter, target, content, step, label_config_only=line != "2.x",
                skip_unpackable=options.skip_unpackable)
    except BaseException:
        if snaps is not None:  # (the caller never gets it: its half-built trees go now, not at exit)
            snaps.close()
        raise
    return snaps, unpacked


def _fetch_and_unpack(run: _Import, imports: list[_PlannedImport], content: ContentWriter, recorded: frozenset[str],
                      options: _Options, line: str, max_layer_bytes: int | None, jobs: int | None, fetch_jobs: int,
                      progress: Progress | None, report: ImportReport) -> tuple[Any, dict[str, Any]]:
    """A remote source: ``fetch_jobs`` blobs fetched at once (:mod:`.fetch`), configs and
    manifests first, then layers in the order they are unpacked, while the unpack reads each
    layer as it arrives. One stage, ``pull``, counts both: bytes fetched plus layer bytes
    unpacked. Nothing is committed to the root before every blob checked out."""
    targets = _unpack_order(imports)
    layers = [str(Digest.parse(layer["digest"])) for t in targets for layer in _unpack_layers(t)]
    rank = {digest: n for n, digest in enumerate(dict.fromkeys(layers))}
    # small documents first, then the layers to unpack in order, then the rest, biggest first
    order = sorted(run.sizes.items(), key=lambda kv: (kv[0] in rank or kv[1] > 1 << 20, rank.get(kv[0], len(rank)), -kv[1]))
    unpack_total = sum(int(layer["size"]) for t in targets for layer in _unpack_layers(t))
    with stage(progress, "pull", sum(run.sizes.values()) + unpack_total) as step:
        fetcher = BlobFetcher(content, run.source, order, recorded, fetch_jobs, step.advance)
        try:
            result = _unpack_targets(run, targets, fetcher, options, line, max_layer_bytes, jobs, step)  # type: ignore[arg-type]
            written, present, nbytes = fetcher.finish()
        except BaseException:
            fetcher.stop()
            raise
    report.blobs_written += written
    report.blobs_present += present
    report.bytes_written += nbytes
    return result


def _write_records(run: _Import, imports: list[_PlannedImport], unpacked: dict[str, Any],
                   options: _Options, report: ImportReport, step: Stage) -> None:
    """Content records with their labels, then the image records (CRI's names in CRI mode)."""
    ns = R.namespace_bucket(run.txn.meta, options.namespace)
    for digest, labels in run.labels.items():
        # 2.x does not walk a layer whose snapshot exists: its recorded sources stay
        append = digest in run.pulled and not (
            run.line == "2.x" and digest in run.reused_layers and digest not in run.walked)
        R.merge_blob(ns, digest, run.sizes[digest], labels, run.now_ns, append)
    step.advance(len(run.labels))
    for item in imports:
        step.advance(1)
        # a root-to-root copy (export --format containerd-root) keeps the image record's own
        # labels (an archive has none; they were dropped); the ones this import sets win
        labels: dict[str, str] = dict(getattr(item.entry, "labels", None) or {})
        if (options.namespace == R.CRI_NAMESPACE and options.cri_labels) or options.cri:
            labels[R.LABEL_CRI_IMAGE] = "managed"
        if options.pin:
            labels[R.LABEL_CRI_PINNED] = "pinned"
        if item.cri is not None:
            names = list(item.cri.names)
            statuses = [R.merge_image(ns, R.ImageSpec(n, item.entry.descriptor, {}, labels), run.now_ns) for n in names]
            # a name another image of the run made already (the ``sha256:<id>`` of two tags of one
            # image) is no update: a new tag on a fresh root said "updated" (a red-team run)
            status = R.UPDATED if R.UPDATED in statuses else R.ADDED if R.ADDED in statuses else R.PRESENT
        else:
            names = [item.name]
            spec = R.ImageSpec(item.name, item.entry.descriptor, _entry_annotations(item.entry), labels)
            status = R.merge_image(ns, spec, run.now_ns)
        target = item.unpack_target
        result = unpacked.get(str(target.descriptor["digest"])) if target else None
        report.images.append(ImportedImage(
            name=names[0],
            names=names,
            digest=str(item.entry.descriptor["digest"]),
            media_type=str(item.entry.descriptor.get("mediaType", "")),
            status=status,
            platforms=item.plan.platforms(),
            unpacked=(result.top_chain_id or None) if result else None,
            snapshots_created=len(result.created) if result else 0,
            snapshots_reused=len(result.reused) if result else 0,
            input=item.entry.origin,
        ))


def _unpack_layers(manifest: PlannedManifest) -> list[dict[str, Any]]:
    """The layers of ``manifest`` that unpacking applies."""
    return [layer for layer in manifest.layers if mt.is_layer(layer.get("mediaType", ""))]


def _unpack_manifest(
    run: _Import, snaps: Any, snapshotter: str, manifest: PlannedManifest, content: ContentWriter,
    step: Stage, *, label_config_only: bool = True, skip_unpackable: bool = False,
) -> Any:
    """Unpack one manifest's layers; label its config and layers like the unpacker does.

    ``skip_unpackable``: a config whose diff IDs do not match the layers leaves the manifest
    as it is (``None``, the reason in ``run.not_unpacked``) instead of failing the import.

    A config-only image (no layers, no diff IDs) is "unpacked" as ``ctr images import`` does
    it: nothing is applied and no snapshot exists (``ctr images check`` says ``UNPACKED
    false``). 1.6 and 1.7 (``image.Unpack``) still label the config with
    ``gc.ref.snapshot.<snapshotter>`` = the chain ID of no layers, ``""``, which containerd's
    ``writeMap`` stores as an empty labels bucket (``label_config_only``); 2.x (the transfer
    service's ``unpack.Unpacker``) starts no unpack for a manifest without layers, so the
    config gets no labels at all.
    """
    from ctrconv.sinks.containerd_root.snapshots import UnpackResult, check_snapshotter

    check_snapshotter(snapshotter)
    config_desc = manifest.config
    if not mt.is_config(config_desc.get("mediaType", "")):
        raise FormatError(f"manifest {manifest.descriptor['digest']}: cannot unpack a {config_desc.get('mediaType')} config")
    if isinstance(content, BlobFetcher):
        content.wait_for(str(config_desc["digest"]))  # then read from the root, not fetched twice
    config = read_json_blob(run.source, config_desc)
    diff_ids = [str(Digest.parse(d)) for d in (config.get("rootfs") or {}).get("diff_ids") or []]
    layers = _unpack_layers(manifest)
    if skip_unpackable and len(diff_ids) != len(layers):
        run.not_unpacked.append(f"manifest {manifest.descriptor['digest']}: not unpacked: its config lists "
                                f"{len(diff_ids)} diff IDs for {len(layers)} layers (containerd cannot unpack it either)")
        return None
    if layers:
        # a fetcher in the content writer's place also streams layers still arriving
        result = snaps.unpack(layers, diff_ids, content.blob_path, step, open_blob=getattr(content, "open_blob", None),
                              arrivals=content if isinstance(content, BlobFetcher) else None)
    elif diff_ids:
        raise FormatError(f"image config lists {len(diff_ids)} diff IDs for 0 layers")
    else:
        result = UnpackResult("")
        if not label_config_only:
            return result
    run.add_labels(str(config_desc["digest"]), {R.snapshot_label(snapshotter): result.top_chain_id})
    # only a layer applied here: containerd labels none whose snapshot already existed
    reused = len(result.reused)
    run.reused_layers.update(str(layer["digest"]) for layer in layers[:reused])
    for layer, diff_id in list(zip(layers, diff_ids))[reused:]:
        run.add_labels(str(layer["digest"]), {R.LABEL_UNCOMPRESSED: diff_id})
    return result


def report_lines(report: ImportReport) -> list[str]:
    """Human summary, one line per image."""
    lines = [f"warning: {w}" for w in report.warnings]
    for image in report.images:
        state = {"added": "imported", "updated": "updated", "present": "already present"}[image.status]
        extra = f", unpacked {image.unpacked[:19]}" if image.unpacked else ""
        also = [n for n in image.names if n != image.name]
        if also:
            extra += f"; also as {', '.join(also)}"
        source = f"{image.input}: " if image.input else ""
        lines.append(f"{source}{image.name}: {state} ({image.digest[:19]}{extra})")
    for skipped in report.skipped:
        lines.append(f"{skipped['name']}: skipped: {skipped['reason']}")
    if report.written and report.images and all(i.status == "present" for i in report.images):
        if report.metadata_written:
            also = f"; {report.blobs_written} missing blob file(s) written again" if report.blobs_written else ""
            lines.append(f"metadata completed: missing content records, GC labels or snapshots were added{also}")
        else:
            lines.append(f"{report.blobs_written} missing blob file(s) written again; no record changed")
    return lines
