"""Stage 5b (opt-in, ``rebuild --regenerate-layers``): layer blobs lost to damage whose
snapshots survive are written again from the snapshot chain, as ``export --from-snapshots``
does (:mod:`ctrconv.pipeline.regenerate`, :mod:`ctrconv.layers.regenerate`).

When every regenerated blob has the original digest (the tar matches the config's diff ID
and the compression reproduces the bytes) the image is unchanged: the blobs are simply back.
Otherwise the image gets a new manifest (annotated with the original manifest's digest), a
new config when a diff ID changed, and new indexes above them; its record points at the new
target and the report says so. Images whose layers were let go after unpacking
(``discard_unpacked_layers``, the normal state of such a node) are left as they are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import BlobRecord, Target, go_time, is_committed, key_bytes, write_blob, write_target
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.errors import CtrconvError
from ctrconv.oci.validate import MAX_DOCUMENT_SIZE
from ctrconv.pipeline import regenerate as regen
from ctrconv.pipeline.completeness import namespace_lookups
from ctrconv.layers.chain import chain_ids
from ctrconv.image.plan import PlannedManifest, plan_image, platform_string
from ctrconv.recovery.buckets import backend_id, has_blob_record, namespaces, target_descriptor, text
from ctrconv.recovery.metadata import lost_records
from ctrconv.recovery.report import RebuildReport


class TreeSnapshots:
    """The committed snapshots with a plain directory tree of one namespace of the trees being
    repaired, by chain key (what :func:`ctrconv.pipeline.regenerate.layer_jobs` asks of a
    :class:`~ctrconv.pipeline.regenerate.SnapshotIndex`)."""

    def __init__(self, ns: BucketTree, backends: dict[str, BucketTree], croot: ContainerdRoot) -> None:
        self.ns = ns
        self.backends = backends
        self.croot = croot

    def snapshotters(self, preferred: Iterable[str] = ()) -> list[str]:
        bucket = self.ns.bucket(K.SNAPSHOTS)
        present = {text(k) for k, v in (bucket.entries.items() if bucket else []) if isinstance(v, BucketTree)}
        order = [*preferred, *regen.TREE_SNAPSHOTTERS, *sorted(present)]
        return [s for s in dict.fromkeys(order) if s in present and s in regen.TREE_SNAPSHOTTERS]

    def find(self, snapshotter: str, key: str) -> Path | None:
        rec = self.ns.bucket(K.SNAPSHOTS, key_bytes(snapshotter), key_bytes(key))
        name = rec.get(K.NAME) if rec is not None else None
        backend = self.backends.get(snapshotter)
        brec = backend.bucket(K.V1, K.SNAPSHOTS, name) if backend is not None and name else None
        if brec is None or not is_committed(brec):
            return None
        sid = backend_id(brec)
        path = self.croot.snapshot_fs(snapshotter, sid) if sid is not None else None
        if path is None or not regen.plain_directory(path, self.croot.snapshots_dir(snapshotter)):
            return None
        return path

    def same_layer(self, content: Any, layer: dict[str, Any], diff_id: str) -> dict[str, Any] | None:
        """What :meth:`SnapshotIndex.same_layer` answers for export; a rebuild only looks in the
        namespace being repaired (:meth:`same_diff`)."""
        return self.same_diff(content, diff_id)

    def same_diff(self, content: Any, diff_id: str) -> dict[str, Any] | None:
        """A good blob of the namespace holding the layer tar ``diff_id`` (the tar itself, or a
        blob whose ``containerd.io/uncompressed`` label names it): copied instead of walking the
        snapshot, it gives the original tar exactly, so the diff ID and the config stay."""
        blobs = self.ns.bucket(K.CONTENT, K.BLOB)
        candidates = [{"digest": diff_id, "size": content.size(diff_id)}]
        for key, rec in (blobs.entries.items() if blobs is not None else []):
            labels = rec.bucket(K.LABELS) if isinstance(rec, BucketTree) else None
            if labels is not None and labels.get(K.LABEL_UNCOMPRESSED.encode()) == diff_id.encode() and key != diff_id.encode():
                candidates.append({"digest": text(key), "size": content.size(text(key))})
        for desc in candidates:
            if desc["size"] is not None and has_blob_record(self.ns, desc["digest"]):
                return desc
        return None


def regenerate_lost_layers(meta: BucketTree, backends: dict[str, BucketTree], croot: ContainerdRoot,
                           target: ContainerdRoot, report: RebuildReport, *, unpack: bool) -> None:
    """Write lost layer blobs of every namespace's images again from their snapshots (read in
    ``croot``) into ``target``'s content store; records are added to the meta.db tree."""
    from ctrconv.sinks.containerd_root.content_writer import ContentWriter

    spool = regen.Spool(target.path)
    writer = ContentWriter(target.content_dir)
    try:
        for ns_name, ns in namespaces(meta):
            _namespace(ns_name, ns, backends, croot, target, spool, writer, report, unpack)
    finally:
        writer.close()
        spool.close()


def _namespace(ns_name: str, ns: BucketTree, backends: dict[str, BucketTree], croot: ContainerdRoot,
               target: ContainerdRoot, spool: regen.Spool, writer: Any, report: RebuildReport, unpack: bool) -> None:
    images = ns.bucket(K.IMAGES)
    if images is None:
        return
    labels_of, _ = namespace_lookups(ns)
    lost = lost_records(report, ns_name)
    snapshots = TreeSnapshots(ns, backends, croot)
    extras = regen.ExtraBlobs(target.content)
    layers = regen.Regenerator(extras, spool, None)
    superseded: set[str] = set()
    for key in sorted(images.entries):
        record = images.entries[key]
        desc = target_descriptor(record)
        if desc is None or not isinstance(record, BucketTree):
            continue
        try:
            done = _image(target, desc, lost, extras, layers, snapshots, labels_of)
        except CtrconvError as exc:
            # left as it is (dropped as incomplete if it cannot run); the report says why
            report.drop("layer-regeneration", f"image {ns_name}/{text(key)}", f"layers not regenerated: {exc}")
            continue
        if done is None:
            continue
        new_target, changes, written = done
        _install(writer, extras, ns, ns_name, written)
        if unpack:
            _mark_unpacked(extras, ns, changes)
        entry = _report_entry(ns_name, text(key), desc, new_target, changes)
        name = text(key)
        if new_target["digest"] != desc["digest"]:
            write_target(record, Target(new_target["mediaType"], new_target["digest"], new_target["size"]))
            superseded |= _documents(plan_image(extras, desc, None))
            name = _rename(images, key, _followed_name(name, desc, new_target, changes), new_target)
            if name != text(key):
                entry["renamed"] = name
        report.regenerated.append(entry)
        report.images.append({"namespace": ns_name, "name": name, "digest": new_target["digest"],
                              "origin": "layer blobs regenerated from snapshots"})
    if superseded:
        _drop_superseded(ns, ns_name, images, extras, superseded, report)


def _followed_name(name: str, desc: dict[str, Any], new_target: dict[str, Any],
                   changes: list[regen.ManifestChange]) -> str:
    """A name that states a digest follows the new target, as an export's does: CRI's image-ID
    name ``sha256:<config>`` the new config, a digest reference ``repo@<target>`` the new target
    (a red-team run: both kept naming digests the node no longer had, and CRI then reported the
    old registry digest with the new ID and found no image by the old ID). Tags stay."""
    for change in changes:
        if name == change.original_config and change.config_changed:
            return change.config
    repo, at, digest = name.rpartition("@")
    if at and repo and digest == desc["digest"]:
        return f"{repo}@{new_target['digest']}"
    return name


def _rename(images: BucketTree, key: bytes, name: str, new_target: dict[str, Any]) -> str:
    """Move the record at ``key`` to ``name``; a record already there for the same target
    (another of the image's names that followed first) stays, and this one goes. A record of
    another image there keeps both where they are (the old name is reported)."""
    new_key = key_bytes(name)
    if new_key == key:
        return text(key)
    there = images.entries.get(new_key)
    if there is None:
        images.entries[new_key] = images.entries.pop(key)
        return name
    desc = target_descriptor(there) if isinstance(there, BucketTree) else None
    if desc is not None and desc["digest"] == new_target["digest"]:
        del images.entries[key]
        return name
    return text(key)


def _documents(plan: Any) -> set[str]:
    """Every digest an image plan names: target, indexes, manifests, configs, layers."""
    found = {plan.target["digest"], *(d["digest"] for d in plan.indexes)}
    for m in plan.manifests:
        found |= {m.descriptor["digest"], m.config["digest"], *(layer["digest"] for layer in m.layers)}
    return found


def _drop_superseded(ns: BucketTree, ns_name: str, images: BucketTree, extras: regen.ExtraBlobs,
                     superseded: set[str], report: RebuildReport) -> None:
    """The documents of retargeted images that no image refers to any more (the original
    manifest, index or config) lose their records now, as containerd's GC would remove them
    at its next run: a rebuilt root keeps everything across a GC and a restart."""
    reachable: set[str] = set()
    for record in images.entries.values():
        desc = target_descriptor(record) if isinstance(record, BucketTree) else None
        if desc is not None:
            try:
                reachable |= _documents(plan_image(extras, desc, None))
            except CtrconvError:
                reachable.add(desc["digest"])
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    for digest in sorted(superseded - reachable):
        if blobs is not None and blobs.entries.pop(digest.encode(), None) is not None:
            report.clean("content", f"content {ns_name}/{digest}",
                         "superseded by a regenerated image target; no image refers to it")


def _image(target: ContainerdRoot, desc: dict[str, Any], lost: set[str], extras: regen.ExtraBlobs,
           layers: regen.Regenerator, snapshots: TreeSnapshots, labels_of: Any,
           ) -> tuple[dict[str, Any], list[regen.ManifestChange], list[dict[str, Any]]] | None:
    """(new target, manifest changes, blobs to install) for an image that lost layers its
    snapshots can replace; None when it lost none."""
    plan = plan_image(target.content, desc, None)
    if not {d["digest"] for d in plan.missing} & lost:
        return None
    jobs, _ = regen.layer_jobs(target.content, plan, "auto", snapshots, labels_of)
    jobs = [j for j in jobs if j.layer["digest"] in lost]
    if not jobs:
        return None
    changed: dict[str, dict[str, Any]] = {}
    changes: list[regen.ManifestChange] = []
    written: list[dict[str, Any]] = []
    for m in plan.manifests:
        mine = [j for j in jobs if j.manifest == m.descriptor["digest"]]
        if mine:
            change, blobs = _manifest(extras, layers, m, mine)
            changes.append(change)
            written += blobs
            if change.manifest != change.original_manifest:
                changed[change.original_manifest] = {"digest": change.manifest, "size": blobs[-1]["size"]}
    new_target = regen.rewrite_target(extras, desc, changed) if changed else desc
    if new_target["digest"] != desc["digest"]:
        written.append({"digest": new_target["digest"], "size": new_target["size"]})
    original = {d["digest"] for d in plan.indexes}
    written += _new_indexes(plan_image(extras, new_target, None), written, original)
    return new_target, changes, written


def _manifest(extras: regen.ExtraBlobs, layers: regen.Regenerator, m: PlannedManifest,
              jobs: list[regen.LayerJob]) -> tuple[regen.ManifestChange, list[dict[str, Any]]]:
    """Regenerate one manifest's lost layers; a new manifest (and config) unless every blob
    came back with its original digest. The new manifest, if any, is the last blob returned."""
    media_type = m.document.get("mediaType") or m.descriptor.get("mediaType", "")
    done = {j.index: layers.run(j, media_type) for j in jobs}
    blobs = [{"digest": r.digest, "size": r.size} for r in done.values()]
    digest = m.descriptor["digest"]
    if all(r.digest == r.original_digest for r in done.values()):
        return regen.ManifestChange(platform_string(m.platform), digest, digest, m.config["digest"],
                                    m.config["digest"], [done[i] for i in sorted(done)]), blobs
    replaced = {i: regen.new_layer_descriptor(m.layers[i], r.media_type, r.digest, r.size) for i, r in done.items()}
    new_ids = {i: r.diff_id for i, r in done.items() if not r.matches}
    desc, config = regen.rewrite_manifest(extras, m, replaced, new_ids)
    if config != m.config["digest"]:
        blobs.append({"digest": config, "size": extras.size(config)})
    blobs.append({"digest": desc["digest"], "size": desc["size"]})
    return regen.ManifestChange(platform_string(m.platform), digest, desc["digest"], m.config["digest"], config,
                                [done[i] for i in sorted(done)]), blobs


def _new_indexes(plan: Any, written: list[dict[str, Any]], original: set[str]) -> list[dict[str, Any]]:
    """Indexes the rewrite made between the new target and the new manifests: those the
    original image did not have. (Judged by the blobs on disk, an inner index another
    namespace's run had just written counted as old: it got no record here, and the re-import
    then called its record "lost" and labelled it otherwise; a red-team run.)"""
    have = {b["digest"] for b in written}
    return [{"digest": d["digest"], "size": d["size"]} for d in plan.indexes
            if d["digest"] not in have and d["digest"] not in original]


def _install(writer: Any, extras: regen.ExtraBlobs, ns: BucketTree, ns_name: str, blobs: list[dict[str, Any]]) -> None:
    """Each new blob into the content store (verified while copied) and a record of it."""
    now = go_time(time.time_ns())
    for blob in blobs:
        writer.write(extras, blob, recorded=False)
        rec = ns.bucket(K.CONTENT, K.BLOB, blob["digest"].encode(), create=True)
        assert rec is not None
        if rec.get(K.SIZE) is None:
            write_blob(rec, BlobRecord(ns_name, blob["digest"], int(blob["size"]), _gc_labels(extras, blob),
                                       created_at=now, updated_at=now))


def _gc_labels(extras: regen.ExtraBlobs, blob: dict[str, Any]) -> dict[str, str]:
    """The GC labels of a new manifest or index (its children), written with its record: the
    re-import labels every blob again at the end, but a rebuild killed before that (a power
    cut) left the retargeted images' new manifests unlabelled, and a containerd started then
    collected their configs, layers and snapshots (a red-team run). Other blobs get none."""
    from ctrconv.sinks.containerd_root.records import children_labels

    if int(blob["size"]) > MAX_DOCUMENT_SIZE:
        return {}
    try:
        doc = json.loads(extras.read_small(blob["digest"], int(blob["size"])))
    except (CtrconvError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    if isinstance(doc.get("manifests"), list):
        children = [c for c in doc["manifests"] if isinstance(c, dict) and "digest" in c]
    elif isinstance(doc.get("config"), dict) and isinstance(doc.get("layers"), list):
        children = [c for c in (doc["config"], *doc["layers"]) if isinstance(c, dict) and "digest" in c]
    else:
        return {}
    return children_labels(children)


def _mark_unpacked(extras: regen.ExtraBlobs, ns: BucketTree, changes: list[regen.ManifestChange]) -> None:
    """A new config of an image that was unpacked is labelled with its own (new) chain's top
    snapshot, which does not exist yet: the re-import unpacks it and labels it anew, and an
    interrupted rebuild leaves a dangling label that ``verify`` names and the next rebuild
    finishes. The old chain stays to containerd's GC."""
    for change in changes:
        if not change.config_changed:
            continue
        old = ns.bucket(K.CONTENT, K.BLOB, change.original_config.encode(), K.LABELS)
        new = ns.bucket(K.CONTENT, K.BLOB, change.config.encode(), create=True)
        if old is None or new is None:
            continue
        doc = json.loads(extras.read_small(change.config, extras.size(change.config) or 0))  # made just now
        top = chain_ids((doc.get("rootfs") or {}).get("diff_ids") or [])[-1:]
        for label, value in old.entries.items():
            if top and isinstance(value, bytes) and label.startswith(K.LABEL_GC_SNAPSHOT.encode()):
                new.bucket(K.LABELS, create=True).put(label, top[0].encode())  # type: ignore[union-attr]


def _report_entry(ns_name: str, name: str, desc: dict[str, Any], new_target: dict[str, Any],
                  changes: list[regen.ManifestChange]) -> dict[str, Any]:
    return {
        "namespace": ns_name,
        "name": name,
        "original_digest": desc["digest"],
        "digest": new_target["digest"],
        "changed": new_target["digest"] != desc["digest"],
        "manifests": [{
            "platform": c.platform,
            "original_manifest": c.original_manifest,
            "manifest": c.manifest,
            "original_config": c.original_config,
            "config": c.config,
            "layers": [{"original": r.original_digest, "digest": r.digest, "diff_id_matches": r.matches}
                       for r in c.layers],
        } for c in changes],
    }
