"""Export's rewrite stage: layers written again from snapshots (``--from-snapshots``) or zstd
layers decompressed (docker-archive), and the manifests, configs and indexes above them
rewritten, so the images name the new layers; names that state a digest follow the rewrite.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from ctrconv.containerd.content import ContentStore, NamespaceContent
from ctrconv.containerd.records import Target
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.errors import CtrconvError, UsageError
from ctrconv.pipeline.completeness import lookups_in
from ctrconv.oci import platform as plat
from ctrconv.pipeline import regenerate as regen
from ctrconv.pipeline.export_plan import Planned, SnapshotLayers, choose_manifest, image_report, matchers, plan_images
from ctrconv.pipeline.export_report import ExportOptions, ImageReport
from ctrconv.image.plan import PlannedManifest, plan_image, platform_string, read_json_blob


def _manifest_type(m: PlannedManifest) -> str:
    return m.document.get("mediaType") or m.descriptor.get("mediaType", "")


def _replan(
    extras: regen.ExtraBlobs, planned: Sequence[Planned], changed: dict[str, dict[str, Any]],
    options: ExportOptions, single_manifest: bool,
) -> list[Planned]:
    """The images again, their targets rewritten above the ``changed`` manifests."""
    records = []
    for p in planned:
        target = regen.rewrite_target(extras, p.record.target.descriptor(), changed)
        records.append(dataclasses.replace(p.record, target=Target(target["mediaType"], target["digest"], target["size"])))
    again = plan_images(extras, records, options, single_manifest)
    for new, old in zip(again, planned):
        new.original = old.original or old
        # where the image came from, also when its manifest was rewritten (zstd layers inflated
        # for a docker archive): docker save copies these, and docker load keeps them for pushes
        new.source_annotations = old.source_annotations
        renamed = _follow_name(old, new)
        if renamed != new.record.name:
            new.record = dataclasses.replace(new.record, name=renamed)
    return again


def _follow_name(old: Planned, new: Planned) -> str:
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
    content: ContentStore | NamespaceContent | regen.ExtraBlobs, planned: Sequence[Planned], options: ExportOptions,
    single_manifest: bool, spool: regen.Spool, changes: dict[str, regen.ManifestChange], *, avoid_zstd: bool = False,
) -> tuple[regen.ExtraBlobs, list[Planned]]:
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
            made = [layers[i] for i in sorted(layers)]
            if all(r.digest == m.layers[i]["digest"] for i, r in layers.items()):
                # every layer's own blob, found on disk: the manifest stands as stored
                changes[digest] = regen.ManifestChange(platform_string(m.platform), digest, digest,
                                                       m.config["digest"], m.config["digest"], made)
                continue
            replaced = {i: m.layers[i] if r.digest == m.layers[i]["digest"]
                        else regen.new_layer_descriptor(m.layers[i], r.media_type, r.digest, r.size)
                        for i, r in layers.items()}
            new_ids = {i: r.diff_id for i, r in layers.items() if not r.matches}
            desc, config = regen.rewrite_manifest(extras, m, replaced, new_ids)
            changed[digest] = desc
            changes[digest] = regen.ManifestChange(
                platform_string(m.platform), digest, desc["digest"], m.config["digest"], config, made)
    if not changed:
        return extras, list(planned)
    return extras, _replan(extras, planned, changed, options, single_manifest)


def decompress_zstd_layers(
    content: ContentStore | NamespaceContent | regen.ExtraBlobs, planned: Sequence[Planned], options: ExportOptions,
    spool: regen.Spool, changes: dict[str, regen.ManifestChange],
) -> tuple[regen.ExtraBlobs, list[Planned]]:
    """docker-archive: the zstd layers of every exported manifest as plain tars (diff IDs, hence
    the configs and image IDs, unchanged), which every ``docker load`` reads.

    Not only the host platform's manifest (the one ``manifest.json`` describes): with
    ``--all-platforms`` the archive keeps the index and every present platform's blobs, as
    Docker 25+'s ``docker save`` does, and readers of ``index.json`` (a Docker on the
    containerd store, ``docker load --platform``, ``ctr images import --all-platforms``) may
    load any of them; so no layer file of the archive is zstd, and each platform keeps its
    config digest."""
    extras = content if isinstance(content, regen.ExtraBlobs) else regen.ExtraBlobs(content)
    changed: dict[str, dict[str, Any]] = {}
    for p in planned:
        for m in p.plan.manifests:
            digest = m.descriptor["digest"]
            if digest in changed or not any(regen.is_zstd(layer.get("mediaType", "")) for layer in m.layers):
                continue
            desc, config, done = _decompress_manifest(extras, m, p.record.name, spool)
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


def _decompress_manifest(
    extras: regen.ExtraBlobs, m: PlannedManifest, name: str, spool: regen.Spool,
) -> tuple[dict[str, Any], str, list[regen.RegeneratedLayer]]:
    """One manifest's zstd layers as plain tars: (new manifest descriptor, config, layers)."""
    diff_ids = (read_json_blob(extras, m.config).get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(m.layers):
        where = platform_string(m.platform) or m.descriptor["digest"]
        raise CtrconvError(f"image {name} ({where}): config lists {len(diff_ids)} diff IDs for {len(m.layers)} layers")
    replaced: dict[int, dict[str, Any]] = {}
    done: list[regen.RegeneratedLayer] = []
    for i, layer in enumerate(m.layers):
        if not regen.is_zstd(layer.get("mediaType", "")):
            continue
        written = regen.decompress_layer(extras, layer, diff_ids[i], spool, extras)
        media_type = regen.layer_media_type(layer["mediaType"], _manifest_type(m), "none")
        replaced[i] = regen.new_layer_descriptor(layer, media_type, written.digest, written.size)
        stored_tar = written.digest if written.digest == diff_ids[i] and extras.base.exists(written.digest) else None
        done.append(regen.RegeneratedLayer("", "", layer["digest"], diff_ids[i], written.digest,
                                           written.diff_id, media_type, written.size, stored_tar))
    desc, config = regen.rewrite_manifest(extras, m, replaced, {})
    return desc, config, done


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
    options = ExportOptions(namespace=namespace, image=list(names), platform=list(platforms),
                            all_platforms=all_platforms, from_snapshots=from_snapshots, compression=compression,
                            ignore_lock=ignore_lock)
    if from_snapshots not in regen.FROM_SNAPSHOTS:
        raise UsageError(f"unknown --from-snapshots value {from_snapshots!r} (choose from {', '.join(regen.FROM_SNAPSHOTS)})")
    if compression is not None and compression not in regen.COMPRESSIONS:
        raise UsageError(f"unknown --compression {compression!r} (choose from {', '.join(regen.COMPRESSIONS)})")
    if from_snapshots == "never":
        return None
    walk, ranked = matchers(options)
    selector = None if all_platforms else plat.selector(walk)
    with root.open_metadata(ignore_lock=ignore_lock) as meta:
        content: Any = NamespaceContent.of(meta, root.content, namespace)
        lookups = lookups_in(meta, namespace)
        snapshot_layers = SnapshotLayers(content, from_snapshots, regen.SnapshotIndex(root, meta, namespace,
                                                                                         ignore_lock=ignore_lock),
                                         lookups[0], False)
        planned: list[Planned] = []
        for name in names:
            record = meta.image(namespace, name)
            if record is None:
                continue
            plan = plan_image(content, record.target.descriptor(), selector)
            jobs, covered = snapshot_layers.jobs(plan) if (plan.missing or from_snapshots == "always") else ([], set())
            if jobs:
                plan.missing = [d for d in plan.missing if d["digest"] not in covered]
                planned.append(Planned(record, plan, choose_manifest(plan, ranked, all_platforms), jobs=jobs))
        if not planned:
            return None
        spool = regen.Spool(spool_near)
        try:
            changes: dict[str, regen.ManifestChange] = {}
            extras, again = regenerate_layers(content, planned, options, False, spool, changes)
        except BaseException:
            spool.close()
            raise
    renamed = {old.record.name: (new.record.name, new.record.target.descriptor()) for old, new in zip(planned, again)}
    return extras, renamed, spool, [image_report(p, changes) for p in again]
