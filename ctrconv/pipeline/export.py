"""Export images from a containerd root: resolve -> select platforms -> plan -> copy+verify -> name.

Behaviour follows ``ctr images export`` (containerd 1.6.20 ``images/archive/exporter.go``):

* platforms: for an index, children whose platform the matcher rejects are skipped (host
  platform by default, ``platforms.DefaultStrict()``; ``--platform`` values are matched like
  ``platforms.Ordered``); children without a platform are always taken; the index blob itself
  is exported unchanged, so it may reference manifests that are not in the output;
* ``manifest.json`` gets one manifest per image: the best-ranked platform match;
* every blob is verified (digest and size) while it is copied.

Unlike ctr, nothing is written until every image has been resolved and planned and all
index/manifest/config JSON has been read, verified and validated; missing content for a
selected platform fails the export up front, naming the platforms and digests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Sequence

from ctrconv.containerd import schema as K
from ctrconv.containerd.content import ContentStore, NamespaceContent
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.records import ImageRecord, Target
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, MissingContentError, UsageError
from ctrconv.inventory import namespace_lookups, selector_for, target_descriptor
from ctrconv.pipeline.completeness import LabelsOf, SnapshotExists, assess
from ctrconv.oci import mediatypes as mt
from ctrconv.oci import platform as plat
from ctrconv.outputs import Output, resolve_output
from ctrconv.pipeline.plan import ImagePlan, PlannedManifest, image_platforms, plan_image, platform_string, ranked_manifests, read_json_blob
from ctrconv.pipeline import regenerate as regen
from ctrconv.pipeline.resolve import resolve_images
from ctrconv.sinks import DIRECTORY_FORMATS, ExportedImage, Sink, blob_path, detect_format, open_sink
from ctrconv.sinks._layout import name_entry
from ctrconv.sinks.oci_dir import check_target_dir
from ctrconv.streams import CHUNK, VerifyingReader

#: ``progress_factory(total_bytes)`` -> ``progress(n)`` callable (optionally with ``close()``).
ProgressFactory = Callable[[int], Callable[[int], object]]


@dataclass
class ExportOptions:
    """What to export and how; ``refs=None`` means every image of the namespace."""

    namespace: str = "default"
    refs: Sequence[str] | None = None
    format: str | None = None
    platforms: Sequence[str] = ()
    all_platforms: bool = False
    index_media_type: bool | None = None
    #: the containerd line whose ``ctr images export`` to match ("1.6", "1.7", "2.x");
    #: None = the line that wrote the source root
    ctr_line: str | None = None
    manifest_json: bool = True
    #: leave non-distributable (foreign) layers out, like ``ctr images export --skip-non-distributable``
    skip_non_distributable: bool = False
    link: bool = False
    verify_links: bool = True
    ignore_lock: bool = False
    #: layers whose blob is gone are written again from their snapshots: "auto" (only those),
    #: "always" (every layer that has a snapshot) or "never"
    from_snapshots: str = "auto"
    #: compression of regenerated layers (gzip, zstd, none); None = like the original layer
    compression: str | None = None


@dataclass
class ImageReport:
    name: str
    digest: str
    media_type: str
    platforms: list[str]
    skipped_platforms: list[str]
    manifest: str | None
    #: the image ID (config digest of the manifest ``manifest``), and what it was before layers
    #: were regenerated or decompressed (equal when the config was kept)
    image_id: str | None = None
    original_image_id: str | None = None
    #: the stored target, when the export names a rewritten one instead (else None)
    original_digest: str | None = None
    regenerated_layers: int = 0
    decompressed_layers: int = 0
    #: the stored name, when the export names the image differently: a name that states a
    #: digest (``sha256:<image ID>``, ``repo@<digest>``) follows the rewritten image
    original_name: str | None = None


@dataclass
class ExportReport:
    """What was written (the ``--json`` document)."""

    format: str
    output: str
    namespace: str
    images: list[ImageReport] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0
    linked: int = 0
    #: every manifest replaced by one naming regenerated or decompressed layers
    rewritten: list[dict[str, Any]] = field(default_factory=list)

    @property
    def platforms(self) -> list[str]:
        return sorted({p for i in self.images for p in i.platforms})

    @property
    def image_ids_changed(self) -> list[dict[str, Any]]:
        """``{"from", "to", "names"}`` per image ID the export changed."""
        changed: dict[tuple[str, str], list[str]] = {}
        for i in self.images:
            if i.image_id and i.original_image_id and i.image_id != i.original_image_id:
                changed.setdefault((i.original_image_id, i.image_id), []).append(i.name)
        return [{"from": a, "to": b, "names": names} for (a, b), names in changed.items()]

    @property
    def skipped_platforms(self) -> list[str]:
        return sorted({p for i in self.images for p in i.skipped_platforms})

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["platforms"] = self.platforms
        doc["skipped_platforms"] = self.skipped_platforms
        doc["image_ids_changed"] = self.image_ids_changed
        return doc


@dataclass
class _Planned:
    record: ImageRecord
    plan: ImagePlan
    chosen: PlannedManifest | None
    #: distribution-source labels ctr 1.7+ adds to the index.json entry
    source_annotations: dict[str, str] = field(default_factory=dict)
    #: layers to write again from their snapshots (``--from-snapshots``)
    jobs: list[regen.LayerJob] = field(default_factory=list)
    #: before layers were rewritten: the stored record and its plan
    original: "_Planned | None" = None


class _ProgressReader:
    """Passes reads through and reports their sizes; accounts skipped bytes at the end."""

    def __init__(self, reader: VerifyingReader, size: int, progress: Callable[[int], object] | None) -> None:
        self._reader = reader
        self._size = size
        self._progress = progress
        self._seen = 0

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n)
        self._seen += len(data)
        if self._progress and data:
            self._progress(len(data))
        return data

    def verify_to_end(self) -> None:
        while self.read(CHUNK):
            pass

    def copy_to_fd(self, out_fd: int, on_chunk: Callable[[int], object] | None = None) -> bool:
        """:meth:`VerifyingReader.copy_to_fd`, reporting progress per step."""

        def step(n: int) -> None:
            self._seen += n
            if self._progress:
                self._progress(n)
            if on_chunk is not None:
                on_chunk(n)

        return self._reader.copy_to_fd(out_fd, step)

    def finish(self) -> None:
        if self._progress and self._seen < self._size:
            self._progress(self._size - self._seen)


def _matchers(options: ExportOptions) -> tuple[plat.MatchComparer, plat.MatchComparer]:
    """(walk matcher, manifest.json matcher), as ctr builds them."""
    if options.platforms and options.all_platforms:
        raise UsageError("--platform and --all-platforms are mutually exclusive")
    if options.platforms:
        ranked: plat.MatchComparer = plat.ordered(*(plat.parse_platform(p) for p in options.platforms))
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


def _missing_message(record: ImageRecord, plan: ImagePlan) -> str:
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
    return f"image {record.name}: content missing for {', '.join(platforms)} ({details})"


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
    content: ContentStore | NamespaceContent, records: Iterable[ImageRecord], options: ExportOptions, single_manifest: bool,
    lookups: tuple[LabelsOf, SnapshotExists] | None = None,
    snapshot_layers: SnapshotLayers | None = None,
) -> list[_Planned]:
    """Plan every image; raise before anything is written if content is missing or invalid.

    ``lookups`` (the namespace's content labels and snapshots) let a missing-content error say
    when the layers were let go after unpacking rather than lost. With ``snapshot_layers``,
    layers that can be written again from their snapshots are not missing: each plan lists
    them as jobs (``--from-snapshots``)."""
    walk, ranked = _matchers(options)
    selector = None if options.all_platforms else selector_for(walk)
    planned: list[_Planned] = []
    problems: list[str] = []
    for record in records:
        target = target_descriptor(record)
        plan = plan_image(content, target, selector)
        if options.skip_non_distributable:
            # never pulled (a Windows base layer, say) and not to be exported: not missing
            plan.missing = [d for d in plan.missing if not mt.is_nondistributable(d.get("mediaType", ""))]
        jobs: list[regen.LayerJob] = []
        if snapshot_layers is not None and (plan.missing or snapshot_layers.mode == "always"):
            jobs, covered = snapshot_layers.jobs(plan)
            plan.missing = [d for d in plan.missing if d["digest"] not in covered]
        if plan.missing:
            if lookups is not None and _layers_discarded(content, target, selector, lookups):
                if options.from_snapshots == "never":
                    raise MissingContentError(
                        f"image {record.name}: its layer blobs were let go after unpacking (containerd's CRI "
                        "discard_unpacked_layers); it runs from its snapshots, and --from-snapshots never forbids "
                        "writing its layers again from them",
                        hint="use --from-snapshots auto, or export it from a root or registry that still holds its layers",
                    )
                raise MissingContentError(
                    f"image {record.name}: its layer blobs were let go after unpacking (containerd's CRI "
                    "discard_unpacked_layers), and its snapshots have no directory tree to write them again from "
                    f"(snapshotters with one: {', '.join(regen.TREE_SNAPSHOTTERS)})",
                    hint="export it from a root or registry that still holds its layers",
                )
            problems.append(_missing_message(record, plan))
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
        if single_manifest:
            if chosen is None:
                raise CtrconvError(f"image {record.name}: no manifest found for the requested platform")
            if _config_type(chosen) not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
                raise UsageError(f"image {record.name}: config {_config_type(chosen)!r} is not a container image config")
        planned.append(_Planned(record, plan, chosen, jobs=jobs))
    if problems:
        raise MissingContentError(
            "; ".join(problems),
            hint="export only platforms whose content is present (default: the host platform)",
        )
    return planned


def _layers_discarded(content, target: dict[str, Any], selector, lookups: tuple[LabelsOf, SnapshotExists]) -> bool:
    try:
        verdict = assess(content, target, selector=selector, labels_of=lookups[0], snapshot_exists=lookups[1])
    except CtrconvError:
        return False
    return bool(verdict.discarded) and not verdict.broken and not verdict.whole


def _config_type(m: PlannedManifest) -> str:
    return m.config.get("mediaType", "")


def blob_set(
    planned: Sequence[_Planned], single_manifest: bool, skip_non_distributable: bool = False
) -> list[dict[str, Any]]:
    """Distinct blobs to write, sorted by their layout path (the tar entry order)."""
    blobs: dict[str, dict[str, Any]] = {}
    for p in planned:
        if single_manifest:
            assert p.chosen is not None
            descs = [p.chosen.descriptor, p.chosen.config, *p.chosen.layers]
        else:
            descs = p.plan.blobs
        for desc in descs:
            if skip_non_distributable and mt.is_nondistributable(desc.get("mediaType", "")):
                continue
            key = str(Digest.parse(desc["digest"]))
            blobs.setdefault(key, {"mediaType": desc.get("mediaType", ""), "digest": key, "size": desc["size"]})
    return sorted(blobs.values(), key=lambda d: blob_path(d["digest"]))


def _exported(p: _Planned) -> ExportedImage:
    target = target_descriptor(p.record)
    target["annotations"] = {**p.record.annotations, **p.source_annotations}
    return ExportedImage(name=p.record.name, entry=name_entry(target, p.record.name), manifest=p.chosen)


def _image_report(p: _Planned, changes: dict[str, regen.ManifestChange] | None = None) -> ImageReport:
    skipped = sorted({s for s in (platform_string(d.get("platform")) for d in p.plan.skipped) if s})
    original = p.original or p
    regenerated = decompressed = 0
    for m in original.plan.manifests:
        change = (changes or {}).get(m.descriptor["digest"])
        if change is not None:
            regenerated += sum(1 for layer in change.layers if layer.snapshot)
            decompressed += sum(1 for layer in change.layers if not layer.snapshot)
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
        regenerated_layers=regenerated,
        decompressed_layers=decompressed,
        original_name=original.record.name if original.record.name != p.record.name else None,
    )


def _manifest_type(m: PlannedManifest) -> str:
    return m.document.get("mediaType") or m.descriptor.get("mediaType", "")


def _replan(
    extras: regen.ExtraBlobs, planned: Sequence[_Planned], changed: dict[str, dict[str, Any]],
    options: ExportOptions, single_manifest: bool,
) -> list[_Planned]:
    """The images again, their targets rewritten above the ``changed`` manifests."""
    records = []
    for p in planned:
        target = regen.rewrite_target(extras, target_descriptor(p.record), changed)
        records.append(dataclasses.replace(p.record, target=Target(target["mediaType"], target["digest"], target["size"])))
    again = plan_images(extras, records, options, single_manifest)
    for new, old in zip(again, planned):
        new.original = old.original or old
        if new.record.target.digest == old.record.target.digest:
            new.source_annotations = old.source_annotations
        renamed = _follow_name(old, new)
        if renamed != new.record.name:
            new.record = dataclasses.replace(new.record, name=renamed)
    return again


def _follow_name(old: _Planned, new: _Planned) -> str:
    """A name that states a digest follows the rewrite: CRI's image-ID alias ``sha256:<config>``
    names the new config, a digest reference ``repo@<target>`` the new target. Tags stay."""
    name = old.record.name
    old_id = old.chosen.config["digest"] if old.chosen else None
    new_id = new.chosen.config["digest"] if new.chosen else None
    if old_id and new_id and name == old_id:
        return new_id
    repo, at, digest = name.rpartition("@")
    if at and repo and digest == old.record.target.digest:
        return f"{repo}@{new.record.target.digest}"
    return name


def regenerate_layers(
    content: ContentStore | NamespaceContent | regen.ExtraBlobs, planned: Sequence[_Planned], options: ExportOptions,
    single_manifest: bool, spool: regen.Spool, changes: dict[str, regen.ManifestChange], *, avoid_zstd: bool = False,
) -> tuple[regen.ExtraBlobs, list[_Planned]]:
    """Write the planned layer jobs from their snapshots and name the images anew (see
    :mod:`ctrconv.pipeline.regenerate`); ``changes`` collects each replaced manifest.
    ``avoid_zstd``: a layer that was zstd is written as a plain tar (docker archives)."""
    extras = content if isinstance(content, regen.ExtraBlobs) else regen.ExtraBlobs(content)
    writer = regen.Regenerator(extras, spool, options.compression, avoid_zstd=avoid_zstd)  # type: ignore[arg-type]
    changed: dict[str, dict[str, Any]] = {}
    for p in planned:
        by_manifest: dict[str, list[regen.LayerJob]] = {}
        for job in p.jobs:
            by_manifest.setdefault(job.manifest, []).append(job)
        for m in p.plan.manifests:
            digest = m.descriptor["digest"]
            if digest in changed or digest not in by_manifest:
                continue
            layers = {j.index: writer.run(j, _manifest_type(m)) for j in by_manifest[digest]}
            replaced = {i: regen.new_layer_descriptor(m.layers[i], r.media_type, r.digest, r.size)
                        for i, r in layers.items()}
            new_ids = {i: r.diff_id for i, r in layers.items() if not r.matches}
            desc, config = regen.rewrite_manifest(extras, m, replaced, new_ids)
            changed[digest] = desc
            changes[digest] = regen.ManifestChange(
                platform_string(m.platform), digest, desc["digest"], m.config["digest"], config,
                [layers[i] for i in sorted(layers)])
    if not changed:
        return extras, list(planned)
    return extras, _replan(extras, planned, changed, options, single_manifest)


def decompress_zstd_layers(
    content: ContentStore | NamespaceContent | regen.ExtraBlobs, planned: Sequence[_Planned], options: ExportOptions,
    spool: regen.Spool, changes: dict[str, regen.ManifestChange],
) -> tuple[regen.ExtraBlobs, list[_Planned]]:
    """docker-archive: the chosen manifests' zstd layers as plain tars (diff IDs, hence the
    config and the image ID, unchanged), which every ``docker load`` reads."""
    extras = content if isinstance(content, regen.ExtraBlobs) else regen.ExtraBlobs(content)
    changed: dict[str, dict[str, Any]] = {}
    for p in planned:
        m = p.chosen
        if m is None or m.descriptor["digest"] in changed:
            continue
        zstd = [i for i, layer in enumerate(m.layers) if regen.is_zstd(layer.get("mediaType", ""))]
        if not zstd:
            continue
        diff_ids = (read_json_blob(extras, m.config).get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(m.layers):
            raise CtrconvError(f"image {p.record.name}: config lists {len(diff_ids)} diff IDs for {len(m.layers)} layers")
        replaced: dict[int, dict[str, Any]] = {}
        done: list[regen.RegeneratedLayer] = []
        for i in zstd:
            layer = m.layers[i]
            written = regen.decompress_layer(extras, layer, diff_ids[i], spool, extras)
            media_type = regen.layer_media_type(layer["mediaType"], _manifest_type(m), "none")
            replaced[i] = regen.new_layer_descriptor(layer, media_type, written.digest, written.size)
            done.append(regen.RegeneratedLayer("", "", layer["digest"], diff_ids[i], written.digest,
                                               written.diff_id, media_type, written.size))
        desc, config = regen.rewrite_manifest(extras, m, replaced, {})
        digest = m.descriptor["digest"]
        changed[digest] = desc
        prior = next((c for c in changes.values() if c.manifest == digest), None)
        if prior is not None:  # layers regenerated, others then decompressed: one change
            prior.manifest = desc["digest"]
            prior.layers.extend(done)
        else:
            changes[digest] = regen.ManifestChange(platform_string(m.platform), digest, desc["digest"],
                                                   m.config["digest"], config, done)
    if not changed:
        return extras, list(planned)
    return extras, _replan(extras, planned, changed, options, True)


def _output(out: str | Path | BinaryIO, fmt: str | None) -> tuple[Output, str]:
    """Where the export goes (:mod:`ctrconv.outputs`: stdout, a device or FIFO written
    through, a symlink resolved, else a path written atomically), and in which format: the
    given one, else oci-tar for a stream or node, else by the (resolved) name."""
    resolved = resolve_output(out) if isinstance(out, (str, Path)) else Output("-", stream=out)
    if fmt is None:
        fmt = "oci-tar" if resolved.is_stream else detect_format(str(resolved.path))
    if resolved.is_stream and fmt in DIRECTORY_FORMATS:
        resolved.require_streaming(fmt)
    path = resolved.path
    if path is not None and fmt not in DIRECTORY_FORMATS:
        if path.is_dir():
            raise UsageError(f"{path} is a directory; a {fmt} output is a file")
        if not path.parent.is_dir():
            raise UsageError(f"{path.parent} does not exist")
    return resolved, fmt


#: containerd lines whose ``ctr images export`` output ctrconv can reproduce
CTR_LINES = ("1.6", "1.7", "2.x")


def ctr_copies_source_labels(line: str) -> bool:
    """Whether ``ctr images export`` of ``line`` copies the target blob's
    ``containerd.io/distribution.source.*`` labels into its index.json annotations
    (``copySourceLabels``, containerd 1.7.x and 2.x; not 1.6)."""
    return line != "1.6"


def source_annotations(meta: MetadataDB, namespace: str, record: ImageRecord) -> dict[str, str]:
    """The target blob's distribution-source labels in ``namespace``, as ctr 1.7+ exports them."""
    blob = meta.blob(namespace, record.target.digest)
    if blob is None:
        return {}
    return {k: v for k, v in blob.labels.items() if k.startswith(K.LABEL_DISTRIBUTION_SOURCE)}


def ctr_writes_index_media_type(line: str) -> bool:
    """Whether ``ctr images export`` of containerd ``line`` sets index.json's ``mediaType``.

    1.7.15+ and 2.x set it; 1.6.20 (Debian 12) does not. The line is the one that wrote the
    source root (:attr:`MetadataDB.writer_line`), so an export matches the node's own ``ctr``.
    A 1.6.31+ node (which also sets it) cannot be told from 1.6.20 by its meta.db: use
    ``--index-media-type`` there.
    """
    return line != "1.6"


def write_export(
    content: ContentStore | NamespaceContent,
    planned: Sequence[_Planned],
    sink: Sink,
    progress_factory: ProgressFactory | None = None,
    *,
    skip_non_distributable: bool = False,
) -> tuple[int, int]:
    """Name, copy+verify every blob, commit; abort the sink on any failure (a signal included).
    Returns (blobs, bytes)."""
    progress = None
    try:
        blobs = blob_set(planned, sink.single_manifest, skip_non_distributable)
        total = sum(d["size"] for d in blobs)
        progress = progress_factory(total) if progress_factory else None
        sink.add_names([_exported(p) for p in planned])
        for desc in blobs:
            digest = Digest.parse(desc["digest"])
            with content.open(digest) as stream:
                reader = _ProgressReader(
                    VerifyingReader(stream, digest, desc["size"], what=f"blob {digest}"), desc["size"], progress
                )
                sink.add_blob(desc, reader, source_path=content.blob_path(digest))
                reader.finish()
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    finally:
        close = getattr(progress, "close", None)
        if close:
            close()
    return len(blobs), total


def export(
    root: ContainerdRoot,
    out: str | Path | BinaryIO,
    options: ExportOptions,
    progress_factory: ProgressFactory | None = None,
) -> ExportReport:
    """Export ``options.refs`` (or all images) of ``options.namespace`` from ``root`` to ``out``.

    ``out`` is a path, ``-`` (stdout) or a binary stream (tar formats). The root is only read.
    """
    target, fmt = _output(out, options.format)
    if options.all_platforms and fmt == "docker-archive":
        raise UsageError("a docker archive holds one platform per image; --all-platforms needs oci-dir or oci-tar")
    if options.skip_non_distributable and fmt == "docker-archive":
        raise UsageError("docker load needs every layer of manifest.json; --skip-non-distributable needs oci-dir or oci-tar")
    if not options.link and not options.verify_links:
        raise UsageError("--no-verify only applies to --link (copied blobs are always verified)")
    if options.from_snapshots not in regen.FROM_SNAPSHOTS:
        raise UsageError(f"unknown --from-snapshots value {options.from_snapshots!r} "
                         f"(choose from {', '.join(regen.FROM_SNAPSHOTS)})")
    if options.compression is not None and options.compression not in regen.COMPRESSIONS:
        raise UsageError(f"unknown --compression {options.compression!r} (choose from {', '.join(regen.COMPRESSIONS)})")
    # a docker archive, and a dir: layout without --all-platforms, hold the chosen manifest only
    single_manifest = fmt == "docker-archive" or (fmt == "dir" and not options.all_platforms)
    if fmt == "docker-archive" and options.compression == "zstd":
        raise UsageError("a docker archive holds no zstd layers (docker load before 25 cannot read them); "
                         "use --compression gzip or none, or an OCI format")
    if fmt in DIRECTORY_FORMATS and target.path is not None:
        check_target_dir(target.path)  # before any work (regenerating layers can take a while)
    with root.open_metadata(ignore_lock=options.ignore_lock) as meta:
        records = resolve_images(meta, root.content, options.namespace, options.refs)
        line = options.ctr_line or meta.writer_line
        if line not in CTR_LINES:
            raise UsageError(f"unknown containerd line {line!r} (choose from {', '.join(CTR_LINES)})")
        index_media_type = options.index_media_type
        if index_media_type is None and fmt != "docker-archive":
            index_media_type = ctr_writes_index_media_type(line)
        sources = {r.name: source_annotations(meta, options.namespace, r) for r in records} \
            if ctr_copies_source_labels(line) and fmt != "docker-archive" else {}
        # what the namespace owns, not every file on disk: another namespace's blobs are
        # not this one's to export (``ctr`` says not found)
        content: Any = NamespaceContent.of(meta, root.content, options.namespace)
        lookups = namespace_lookups(meta, options.namespace)
        snapshot_layers = None
        if options.from_snapshots != "never":
            snapshots = regen.SnapshotIndex(root, meta, options.namespace, ignore_lock=options.ignore_lock)
            snapshot_layers = SnapshotLayers(content, options.from_snapshots, snapshots, lookups[0],
                                             options.skip_non_distributable)
        planned = plan_images(content, records, options, single_manifest, lookups, snapshot_layers)
        for p in planned:
            p.source_annotations = sources.get(p.record.name, {})
        spool: regen.Spool | None = None
        changes: dict[str, regen.ManifestChange] = {}
        try:
            if any(p.jobs for p in planned):
                spool = regen.Spool(target.path.parent if target.path is not None else None)
                content, planned = regenerate_layers(content, planned, options, single_manifest, spool, changes,
                                                     avoid_zstd=fmt == "docker-archive")
        except BaseException:
            if spool is not None:
                spool.close()
            target.close()
            raise
    sink: Sink | None = None
    try:
        if fmt == "docker-archive" and any(
                p.chosen and any(regen.is_zstd(d.get("mediaType", "")) for d in p.chosen.layers)
                for p in planned):
            if spool is None:
                spool = regen.Spool(target.path.parent if target.path is not None else None)
            content, planned = decompress_zstd_layers(content, planned, options, spool, changes)
        sink = open_sink(
            fmt, target.target(), index_media_type=index_media_type, manifest_json=options.manifest_json,
            link=options.link, verify_links=options.verify_links, all_platforms=options.all_platforms,
        )
        blobs, total = write_export(content, planned, sink, progress_factory,
                                    skip_non_distributable=options.skip_non_distributable)
    except BaseException:
        if sink is not None:
            sink.abort()  # also when a signal lands between creating the sink and using it
        raise
    finally:
        target.close()
        if spool is not None:
            spool.close()
    return ExportReport(
        format=fmt,
        output=target.label,
        namespace=options.namespace,
        images=[_image_report(p, changes) for p in planned],
        blobs=blobs,
        bytes=total,
        linked=getattr(sink, "linked", 0),
        rewritten=[_change_json(c) for c in changes.values()],
    )


def _change_json(change: regen.ManifestChange) -> dict[str, Any]:
    return {
        "platform": change.platform,
        "original_manifest": change.original_manifest,
        "manifest": change.manifest,
        "original_config": change.original_config,
        "config": change.config,
        "config_changed": change.config_changed,
        "layers": [
            {"how": "regenerated" if layer.snapshot else "decompressed", "snapshotter": layer.snapshotter or None,
             "snapshot": layer.snapshot or None, "original_digest": layer.original_digest,
             "original_diff_id": layer.original_diff_id, "digest": layer.digest, "diff_id": layer.diff_id,
             "media_type": layer.media_type, "size": layer.size, "matches_diff_id": layer.matches}
            for layer in change.layers
        ],
    }


class RegeneratedSource:
    """An image source whose images name layers written again from snapshots: entries point
    at the rewritten targets (names stating a digest follow them), blobs come from ``extras``
    over ``base``. Used by ``export --format containerd-root``."""

    def __init__(self, base: Any, extras: regen.ExtraBlobs, renamed: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self.base = base
        self.extras = extras
        self.renamed = renamed

    def entries(self) -> list[Any]:
        out = []
        for entry in self.base.entries():
            if entry.name in self.renamed:
                name, target = self.renamed[entry.name]
                entry = dataclasses.replace(entry, name=name, descriptor=dict(target))
            out.append(entry)
        return out

    def exists(self, digest: Any) -> bool:
        return self.extras.exists(digest)

    def size(self, digest: Any) -> int | None:
        return self.extras.size(digest)

    def open(self, digest: Any) -> BinaryIO:
        return self.extras.open(digest)

    def read_small(self, digest: Any, size: int, limit: int | None = None) -> bytes:
        return self.extras.read_small(digest, size)

    def close(self) -> None:
        self.base.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def regenerate_for_copy(
    root: ContainerdRoot, namespace: str, names: Sequence[str], spool_near: Path | None, *,
    platforms: Sequence[str] = (), all_platforms: bool = False, from_snapshots: str = "auto",
    compression: str | None = None, ignore_lock: bool = False,
) -> tuple[regen.ExtraBlobs, dict[str, tuple[str, dict[str, Any]]], regen.Spool, list[ImageReport]] | None:
    """``--format containerd-root``: write the layers of ``names`` whose blobs are gone (or
    every layer, ``always``) again from their snapshots, as :func:`export` does. Returns None
    when nothing needs it; else the blobs, ``{stored name: (name, new target)}``, the spool
    (the caller closes it once the copy is done) and a report per image."""
    options = ExportOptions(namespace=namespace, refs=list(names), platforms=list(platforms),
                            all_platforms=all_platforms, from_snapshots=from_snapshots, compression=compression,
                            ignore_lock=ignore_lock)
    if from_snapshots not in regen.FROM_SNAPSHOTS:
        raise UsageError(f"unknown --from-snapshots value {from_snapshots!r} (choose from {', '.join(regen.FROM_SNAPSHOTS)})")
    if compression is not None and compression not in regen.COMPRESSIONS:
        raise UsageError(f"unknown --compression {compression!r} (choose from {', '.join(regen.COMPRESSIONS)})")
    if from_snapshots == "never":
        return None
    walk, ranked = _matchers(options)
    selector = None if all_platforms else selector_for(walk)
    with root.open_metadata(ignore_lock=ignore_lock) as meta:
        content: Any = NamespaceContent.of(meta, root.content, namespace)
        lookups = namespace_lookups(meta, namespace)
        snapshot_layers = SnapshotLayers(content, from_snapshots, regen.SnapshotIndex(root, meta, namespace,
                                                                                         ignore_lock=ignore_lock),
                                         lookups[0], False)
        planned: list[_Planned] = []
        for name in names:
            record = meta.image(namespace, name)
            if record is None:
                continue
            plan = plan_image(content, target_descriptor(record), selector)
            jobs, covered = snapshot_layers.jobs(plan) if (plan.missing or from_snapshots == "always") else ([], set())
            if jobs:
                plan.missing = [d for d in plan.missing if d["digest"] not in covered]
                planned.append(_Planned(record, plan, choose_manifest(plan, ranked, all_platforms), jobs=jobs))
        if not planned:
            return None
        spool = regen.Spool(spool_near)
        try:
            changes: dict[str, regen.ManifestChange] = {}
            extras, again = regenerate_layers(content, planned, options, False, spool, changes)
        except BaseException:
            spool.close()
            raise
    renamed = {old.record.name: (new.record.name, target_descriptor(new.record)) for old, new in zip(planned, again)}
    return extras, renamed, spool, [_image_report(p, changes) for p in again]
