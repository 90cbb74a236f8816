"""Export's plan/validate stage: every image planned, its platforms chosen and its JSON read
before a byte is written; missing content said up front, naming platforms and digests.

Platforms follow ``ctr images export`` (containerd ``images/archive/exporter.go``): children
of the image's index whose platform the walk matcher rejects are skipped, children without a
platform always taken, and below a chosen child everything (an inner index's every platform);
``manifest.json`` gets the best-ranked match (:func:`choose_manifest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ctrconv.containerd.content import ContentStore, NamespaceContent
from ctrconv.containerd.records import ImageRecord
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, MissingContentError, UsageError
from ctrconv.image.model import BlobSource
from ctrconv.image.protocols import ExportedImage
from ctrconv.oci import mediatypes as mt
from ctrconv.oci import platform as plat
from ctrconv.pipeline import regenerate as regen
from ctrconv.pipeline.completeness import LabelsOf, SnapshotExists, assess
from ctrconv.pipeline.export_compact import PlanCompactor
from ctrconv.pipeline.export_report import ExportOptions, ImageReport
from ctrconv.image.plan import ImagePlan, PlannedManifest, image_platforms, plan_image, platform_string, ranked_manifests, read_json_blob
from ctrconv.sinks import name_entry


@dataclass
class Planned:
    record: ImageRecord
    plan: ImagePlan
    chosen: PlannedManifest | None
    #: distribution-source labels ctr 1.7+ adds to the index.json entry
    source_annotations: dict[str, str] = field(default_factory=dict)
    #: layers to write again from their snapshots (``--from-snapshots``)
    jobs: list[regen.LayerJob] = field(default_factory=list)
    #: before layers were rewritten: the stored record and its plan
    original: "Planned | None" = None


def matchers(options: ExportOptions) -> tuple[plat.MatchComparer, plat.MatchComparer]:
    """(walk matcher, manifest.json matcher), as ctr builds them."""
    if options.platform and options.all_platforms:
        raise UsageError("--platform and --all-platforms are mutually exclusive")
    if options.platform:
        ranked: plat.MatchComparer = plat.ordered(*(plat.parse_platform(p) for p in options.platform))
    else:
        ranked = plat.default_strict_matcher()
    return (plat.ALL if options.all_platforms else ranked), ranked


def choose_manifest(plan: ImagePlan, matcher: plat.MatchComparer, all_platforms: bool) -> PlannedManifest | None:
    """The manifest ``manifest.json`` describes: best-ranked match (ctr's ``platform.Less`` sort)."""
    if not plan.manifests:
        return None
    if not plan.indexes:
        return plan.manifests[0]
    ranked = ranked_manifests(plan, matcher)
    if ranked:
        return ranked[0]
    return plan.manifests[0] if all_platforms else None


def _present_children(content: BlobSource, target: dict[str, Any], missing: set[str]) -> list[str]:
    """Platforms of an index whose manifest is here, other than the ``missing`` ones (what a
    ``--platform`` could export instead)."""
    if not mt.is_index(target.get("mediaType", "")):
        return []
    try:
        children = read_json_blob(content, target).get("manifests", [])
    except CtrconvError:
        return []
    return sorted({platform_string(c["platform"]) for c in children
                   if isinstance(c, dict) and c.get("platform") and isinstance(c.get("digest"), str)
                   and content.exists(c["digest"])} - missing)


def _missing_message(record: ImageRecord, plan: ImagePlan, content: BlobSource | None = None) -> str:
    owner: dict[str, tuple[str, str]] = {}
    for m in plan.manifests:
        p = platform_string(m.platform) or "unknown platform"
        owner[m.config["digest"]] = (p, "config")
        for layer in m.layers:
            owner.setdefault(layer["digest"], (p, "layer"))
    parts = []
    for desc in plan.missing:
        if desc.get("platform"):
            where, role = platform_string(desc["platform"]) or "unknown platform", "manifest"
        elif desc["digest"] == plan.target["digest"]:
            where, role = "image", "target"
        else:
            where, role = owner.get(desc["digest"], ("unknown platform", _role(desc)))
        parts.append((where, f"{role} {desc['digest']}"))
    platforms = sorted({w for w, _ in parts})
    details = ", ".join(f"{w}: {d}" for w, d in parts)
    present = _present_children(content, plan.target, set(platforms)) if content is not None else []
    hint = f"; here: {', '.join(present)} (--platform {present[0]})" if present else ""
    return f"image {record.name}: content missing for {', '.join(platforms)} ({details}){hint}"


def _role(desc: dict[str, Any]) -> str:
    media_type = desc.get("mediaType", "")
    if mt.is_index(media_type):
        return "index"
    if mt.is_manifest(media_type):
        return "manifest"
    if mt.is_config(media_type):
        return "config"
    return "layer" if mt.is_layer(media_type) else "blob"


class SnapshotLayers:
    """What :func:`plan_images` needs to cover missing layers with snapshots of the namespace."""

    def __init__(self, content: ContentStore | NamespaceContent, mode: str, snapshots: regen.SnapshotIndex,
                 labels_of: LabelsOf, skip_non_distributable: bool) -> None:
        self.content = content
        self.mode = mode
        self.snapshots = snapshots
        self.labels_of = labels_of
        self.skip_non_distributable = skip_non_distributable

    def jobs(self, plan: ImagePlan) -> tuple[list[regen.LayerJob], set[str]]:
        skip = [d["digest"] for m in plan.manifests for d in m.layers
                if self.skip_non_distributable and mt.is_nondistributable(d.get("mediaType", ""))]
        return regen.layer_jobs(self.content, plan, self.mode, self.snapshots, self.labels_of, skip)


def plan_images(
    content: BlobSource, records: Iterable[ImageRecord], options: ExportOptions, single_manifest: bool,
    lookups: tuple[LabelsOf, SnapshotExists] | None = None,
    snapshot_layers: SnapshotLayers | None = None,
    *, push: bool = False,
) -> list[Planned]:
    """Plan every image; raise before anything is written if content is missing or invalid.

    ``lookups`` (the namespace's content labels and snapshots) let a missing-content error say
    when the layers were let go after unpacking rather than lost. With ``snapshot_layers``,
    layers that can be written again from their snapshots are not missing: each plan lists
    them as jobs (``--from-snapshots``). ``push``: a registry push, which sends the blobs the
    manifests name byte for byte and so never writes layers again from snapshots."""
    walk, ranked = matchers(options)
    selector = None if options.all_platforms else plat.selector(walk)
    planned: list[Planned] = []
    problems: list[str] = []
    compactor = PlanCompactor()  # the plans of every image are kept until the copy ends
    for record in records:
        target = record.target.descriptor()
        plan = _export_walk(content, target, selector)
        if options.skip_non_distributable:
            # never pulled (a Windows base layer, say) and not to be exported: not missing
            plan.missing = [d for d in plan.missing if not mt.is_nondistributable(d.get("mediaType", ""))]
        jobs: list[regen.LayerJob] = []
        if snapshot_layers is not None and (plan.missing or snapshot_layers.mode == "always"):
            jobs, covered = snapshot_layers.jobs(plan)
            plan.missing = [d for d in plan.missing if d["digest"] not in covered]
        if plan.missing and single_manifest and options.all_platforms and plan.indexes:
            plan, jobs = _present_platforms(content, target, plan, jobs)
        if plan.missing:
            if lookups is not None and _layers_discarded(content, target, selector, lookups):
                raise _discarded_error(record.name, options, push)
            problems.append(_missing_message(record, plan, content))
            continue
        if not plan.manifests and (plan.indexes or mt.is_manifest(target["mediaType"])):
            available = ", ".join(image_platforms(content, target)) or "none"
            raise CtrconvError(
                f"image {record.name}: no manifest found for the requested platform (image has: {available})"
            )
        if not plan.manifests:
            raise UsageError(f"image {record.name}: only image manifests and indexes can be exported, not {target['mediaType']}")
        for m in plan.manifests:
            if mt.is_config(m.config.get("mediaType", "")):
                read_json_blob(content, m.config)
        chosen = choose_manifest(plan, ranked, options.all_platforms)
        if single_manifest and chosen is None:
            raise CtrconvError(f"image {record.name}: no manifest found for the requested platform")
        compactor.compact(plan, {j.manifest for j in jobs})
        planned.append(Planned(record, plan, chosen, jobs=jobs))
    if problems:
        raise MissingContentError(
            "; ".join(problems),
            hint="export only platforms whose content is present (default: the host platform)",
        )
    return planned


def require_image_configs(planned: Sequence[Planned]) -> None:
    """Refuse (exit 2) an image whose chosen manifest is not a container image (a helm chart, a
    wasm module, a signature): a docker archive and a committed image need one. (A skopeo
    ``dir:`` layout takes any manifest, as ``skopeo copy`` writes it.)"""
    for p in planned:
        if p.chosen is not None and _config_type(p.chosen) not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
            raise UsageError(f"image {p.record.name}: config {_config_type(p.chosen)!r} is not a container image config")


def _export_walk(content: BlobSource, target: dict[str, Any], selector: Any) -> ImagePlan:
    """``ctr images export``'s walk: the platform filter applies to the target index's children
    only, and each chosen child is exported whole (an index nested in it with every platform
    and attestation it lists). Where that subtree is not all here (a node pulled one platform
    of it; ctr fails there) the filter applies at every level, so the platforms present still
    export."""
    plan = plan_image(content, target, selector, filter_nested=False)
    if selector is None or not plan.missing or len(plan.indexes) < 2:
        return plan
    narrowed = plan_image(content, target, selector)
    absent = {d["digest"] for d in narrowed.missing}
    return narrowed if absent < {d["digest"] for d in plan.missing} else plan


def _present_platforms(
    content: BlobSource, target: dict[str, Any], plan: ImagePlan, jobs: list[regen.LayerJob],
) -> tuple[ImagePlan, list[regen.LayerJob]]:
    """A docker archive with ``--all-platforms`` holds every platform present, as ``docker
    save`` writes it: the plan again with only the platforms whose manifest, config and layers
    are all present or written again (``jobs``); unchanged when none is whole."""
    missing = {d["digest"] for d in plan.missing}
    whole = [m for m in plan.manifests if not ({d["digest"] for d in (m.config, *m.layers)} & missing)]
    platforms = [plat.Platform.from_json(m.platform) for m in whole if m.platform]
    if not platforms:
        return plan, jobs
    narrowed = plan_image(content, target, plat.selector(plat.ordered(*platforms)))
    covered = {j.layer["digest"] for j in jobs}
    narrowed.missing = [d for d in narrowed.missing if d["digest"] not in covered]
    kept = {m.descriptor["digest"] for m in narrowed.manifests}
    return narrowed, [j for j in jobs if j.manifest in kept]


def _discarded_error(name: str, options: ExportOptions, push: bool) -> MissingContentError:
    """An image whose layer blobs are gone but whose snapshots remain: what can be done."""
    if push:
        return MissingContentError(
            f"image {name}: its layer blobs are not in the root (let go after unpacking, as containerd's CRI "
            "discard_unpacked_layers does, or never fetched, as containerd 2.x skips a layer whose snapshot "
            "exists); a push sends the layers its manifest names as they are, so it cannot write them again "
            "from its snapshots",
            hint="push it from a root or registry that still holds its layers",
        )
    if options.from_snapshots == "never":
        return MissingContentError(
            f"image {name}: its layer blobs were let go after unpacking (containerd's CRI "
            "discard_unpacked_layers); it runs from its snapshots, and --from-snapshots never forbids "
            "writing its layers again from them",
            hint="use --from-snapshots auto, or export it from a root or registry that still holds its layers",
        )
    return MissingContentError(
        f"image {name}: its layer blobs were let go after unpacking (containerd's CRI "
        "discard_unpacked_layers), and its snapshots have no directory tree to write them again from "
        f"(snapshotters with one: {', '.join(regen.TREE_SNAPSHOTTERS)})",
        hint="export it from a root or registry that still holds its layers",
    )


def _layers_discarded(content, target: dict[str, Any], selector, lookups: tuple[LabelsOf, SnapshotExists]) -> bool:
    try:
        verdict = assess(content, target, selector=selector, labels_of=lookups[0], snapshot_exists=lookups[1])
    except CtrconvError:
        return False
    return bool(verdict.discarded) and not verdict.broken and not verdict.whole


def _config_type(m: PlannedManifest) -> str:
    return m.config.get("mediaType", "")


def blob_set(
    planned: Sequence[Planned], single_manifest: bool, skip_non_distributable: bool = False
) -> list[dict[str, Any]]:
    """Distinct blobs to write, sorted by their layout path (the tar entry order).

    A blob already taken is skipped before its digest is parsed again (most are shared base
    layers); canonical digests (``alg:hex``, algorithm names of one length) sort as their
    paths ``blobs/alg/hex`` do, so no path is made per blob to sort them."""
    blobs: dict[str, dict[str, Any]] = {}
    for p in planned:
        if single_manifest:
            assert p.chosen is not None
            descs = [p.chosen.descriptor, p.chosen.config, *p.chosen.layers]
        else:
            descs = p.plan.blobs
        for desc in descs:
            if desc["digest"] in blobs:
                continue
            if skip_non_distributable and mt.is_nondistributable(desc.get("mediaType", "")):
                continue
            key = str(Digest.parse(desc["digest"]))
            blobs.setdefault(key, {"mediaType": desc.get("mediaType", ""), "digest": key, "size": desc["size"]})
    return sorted(blobs.values(), key=_digest_key)


def _digest_key(desc: dict[str, Any]) -> str:
    return desc["digest"]


def exported(p: Planned) -> ExportedImage:
    target = p.record.target.descriptor()
    target["annotations"] = {**p.record.annotations, **p.source_annotations}
    return ExportedImage(name=p.record.name, entry=name_entry(target, p.record.name), manifest=p.chosen)


def image_report(p: Planned, changes: dict[str, regen.ManifestChange] | None = None) -> ImageReport:
    skipped = sorted({s for s in (platform_string(d.get("platform")) for d in p.plan.skipped) if s})
    original = p.original or p
    counts = {"regenerated": 0, "copied": 0, "decompressed": 0}
    for m in original.plan.manifests:
        change = (changes or {}).get(m.descriptor["digest"])
        for layer in change.layers if change is not None else ():
            counts[layer.how] += 1
    return ImageReport(
        name=p.record.name,
        digest=p.record.target.digest,
        media_type=p.record.target.media_type,
        platforms=p.plan.platforms(),
        skipped_platforms=skipped,
        manifest=p.chosen.descriptor["digest"] if p.chosen else None,
        image_id=p.chosen.config["digest"] if p.chosen else None,
        original_image_id=original.chosen.config["digest"] if original.chosen else None,
        original_digest=original.record.target.digest if p.original is not None and
        original.record.target.digest != p.record.target.digest else None,
        regenerated_layers=counts["regenerated"],
        copied_layers=counts["copied"],
        decompressed_layers=counts["decompressed"],
        original_name=original.record.name if original.record.name != p.record.name else None,
    )
