"""Stage 5, derive images: re-derive image records from the content store when meta.db lost
them, then drop the images no platform can run.

Manifests and indexes are recognised among the (verified) blobs by their JSON shape; the
top-level ones (not listed by another index) become images. Names come from the caller
(``--name DIGEST=REF``), from images of other namespaces with the same target (their tags: a
CRI alias, ``repo@digest`` or ``sha256:<id>``, is a name of ``k8s.io`` only), from an image
whose lost index listed the manifest, from the document's own annotations, from the
repository a pull recorded (``containerd.io/distribution.source.<host>``) as ``repo@digest``,
or a placeholder that keeps the digest. In ``k8s.io`` each name comes with the names and label
CRI gives a pulled image (its ``repo@digest`` and ``sha256:<image id>``, ``managed``), so a pod
naming the image by digest finds it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.content import ContentStore
from ctrconv.containerd.cri import CRI_NAMESPACE, LABEL_CRI_IMAGE, cri_names
from ctrconv.containerd.records import (BlobRecord, ImageRecord, Target, go_time, key_bytes, read_map, write_blob,
                                       write_image, write_map, write_timestamps)
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError
from ctrconv.image.plan import ImagePlan, PlannedManifest, read_json_blob
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.validate import parse_json_bytes, validate_object
from ctrconv.pipeline.completeness import Assessment, RecordedLabels, assess, namespace_lookups
from ctrconv.recovery.buckets import has_blob_record, image_targets, namespaces, target_descriptor, text
from ctrconv.recovery.metadata import lost_records
from ctrconv.recovery.report import RebuildReport

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


def _reachable(targets: dict[str, list[str]], by_digest: dict[str, FoundDocument]) -> set[str]:
    """Digests an image of a namespace (its ``targets``) reaches through the found indexes."""
    seen = set(targets)
    stack = list(seen)
    while stack:
        doc = by_digest.get(stack.pop())
        if doc and mt.is_index(doc.descriptor["mediaType"]):
            for child in doc.children:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
    return seen


def derive_images(
    meta: BucketTree, good: dict[str, int], content: ContentStore, names: dict[str, str], report: RebuildReport,
    orphaned: dict[tuple[str, str], str] | None = None, lost_images: Callable[[str], bool] | None = None,
    lost_content: Callable[[str], bool] | None = None,
) -> None:
    """Give top-level manifests/indexes among the blobs image records where they lost theirs.

    A document gets a record in every namespace that still holds its content record but no
    image pointing at it (or in ``default`` when no namespace knows it). Names come from
    ``--name``, then from images of other namespaces with the same target, then ``repo@digest``
    after an image of this namespace whose lost index listed it (``orphaned``), then from the
    document's annotations, else a placeholder that keeps the digest.

    ``lost_images(namespace)`` (``""``: a namespace no record names): whether damage may have
    lost that namespace's image records. Where none were lost, a document no image names is
    what containerd's GC is about to collect (the index.json a ``ctr images import`` stores
    for its run, an unselected platform's manifest), not an image: a healthy root's rebuild
    made one up. A digest given ``--name`` is derived wherever.

    ``lost_content(namespace)``: whether damage may have lost its content records too. Such a
    namespace holds no record saying which documents were its own; an image whose host
    chain its snapshots still hold (it was unpacked there) is derived in it anyway (the
    re-import then records its content), instead of the namespace coming back empty.
    """
    documents = [doc for digest in sorted(good) if (doc := sniff_document(Digest.parse(digest), content.blob_path(digest)))]
    by_digest = {d.descriptor["digest"]: d for d in documents}
    spaces = dict(namespaces(meta))
    targets = {ns_name: image_targets(ns) for ns_name, ns in spaces.items()}
    reachable = {ns_name: _reachable(targets.get(ns_name, {}), by_digest) for ns_name in spaces}
    known_anywhere = set().union(*reachable.values()) if reachable else set()
    now = go_time(time.time_ns())
    repositories = _repositories(targets, _container_images(spaces.values()))
    unpacked_in = {n: _snapshot_keys(ns) for n, ns in spaces.items()
                   if lost_content is not None and lost_content(n) and (lost_images is None or lost_images(n))}
    for doc in top_level(documents):
        digest = doc.descriptor["digest"]
        holders = [n for n, ns in spaces.items() if has_blob_record(ns, digest)]
        holders += [n for n, keys in unpacked_in.items()
                    if n not in holders and keys and _top_chains(doc, by_digest, content) & keys]
        if not holders and digest not in known_anywhere and (lost_images is None or lost_images("")
                                                             or digest in names):
            holders = ["default"]
        for ns_name in holders:
            if digest in reachable.get(ns_name, set()):
                continue
            if lost_images is not None and not lost_images(ns_name) and digest not in names \
                    and (ns_name, digest) not in (orphaned or {}):
                continue  # (a manifest whose image lost its index is an image still: named after it)
            candidates = _candidate_names(doc, ns_name, names, targets, orphaned or {}, spaces.get(ns_name),
                                          repositories)
            target = Target(doc.descriptor["mediaType"], digest, doc.descriptor["size"])
            labels: dict[str, str] = {}
            if ns_name == CRI_NAMESPACE:
                candidates = _cri_names(content, ns_name, target, candidates, spaces.get(ns_name))
                labels = {LABEL_CRI_IMAGE: "managed"}
            v1 = meta.bucket(K.V1, create=True)
            images = v1.bucket(key_bytes(ns_name), K.IMAGES, create=True)  # type: ignore[union-attr]
            assert images is not None
            for name in candidates:
                if key_bytes(name) in images.entries:
                    continue
                record = BucketTree()
                write_image(record, ImageRecord(ns_name, name, target, labels=labels, created_at=now, updated_at=now))
                images.entries[key_bytes(name)] = record
                report.images.append({"namespace": ns_name, "name": name, "digest": digest, "origin": "re-derived from content"})


def record_images_run_from_snapshots(meta: BucketTree, content: ContentStore, report: RebuildReport,
                                     lost_content: Callable[[str], bool]) -> None:
    """Content records for the images of a namespace that lost its content records and whose
    layer blobs are gone while the snapshots they were unpacked into are not: a CRI node with
    ``discard_unpacked_layers`` (a red-team run: every k8s.io image of such a node whose meta.db
    was lost was re-derived, then dropped for its "missing" layers, and containerd's next GC took
    the snapshots they ran from). The index, manifests and configs on disk get records labelled
    as CRI labels them there: the manifest keeps its config (no layer), the config its top
    snapshot (``gc.ref.snapshot.<snapshotter>``): the image runs, ``ctr images check`` calls it
    incomplete as on the healthy node, and GC keeps what it uses. A record that exists keeps
    what it holds and gets the labels (and times) it lost (:func:`_mend_record`)."""
    from ctrconv.image.plan import plan_image
    from ctrconv.layers.chain import chain_ids
    from ctrconv.sinks.containerd_root.records import children_labels

    now = go_time(time.time_ns())
    for ns_name, ns in namespaces(meta):
        images = ns.bucket(K.IMAGES)
        if not images or not lost_content(ns_name):
            continue
        snapshots = ns.bucket(K.SNAPSHOTS)
        held = {text(sn): {text(k) for k, v in bucket.entries.items() if isinstance(v, BucketTree)}
                for sn, bucket in (snapshots.entries.items() if snapshots else ()) if isinstance(bucket, BucketTree)}
        for record in list(images.entries.values()):
            desc = target_descriptor(record) if isinstance(record, BucketTree) else None
            try:
                plan = plan_image(content, desc, None) if desc is not None else None
            except CtrconvError:
                continue
            if plan is None or not plan.missing:
                continue
            missing = {d["digest"] for d in plan.missing}
            runs: list[tuple[Any, str, str]] = []  # (manifest, snapshotter, top chain)
            for m in plan.manifests:
                if m.config["digest"] in missing or not {d["digest"] for d in m.layers} & missing:
                    continue  # (its config is gone, or it lacks nothing: not one that runs from snapshots only)
                try:
                    diff_ids = (read_json_blob(content, m.config).get("rootfs") or {}).get("diff_ids") or []
                except CtrconvError:
                    continue
                top = chain_ids(diff_ids)[-1] if isinstance(diff_ids, list) and diff_ids else None
                sn = next((sn for sn in sorted(held, key=lambda n: n != "overlayfs") if top in held[sn]), None)
                if top is not None and sn is not None:
                    runs.append((m, sn, top))
            if not runs:
                continue
            blobs = ns.bucket(K.CONTENT, K.BLOB, create=True)
            assert blobs is not None

            def put(digest: str, size: int, labels: dict[str, str]) -> None:
                rec = blobs.entries.get(key_bytes(digest))
                if isinstance(rec, BucketTree):
                    if _mend_record(rec, labels, now):
                        report.restore("content", f"content {ns_name}/{digest}",
                                       "content record's GC labels lost; written again for an image that runs from "
                                       "its snapshots (its layer blobs were let go after unpacking)")
                    return
                rec = BucketTree()
                write_blob(rec, BlobRecord(ns_name, digest, size, labels, created_at=now, updated_at=now))
                blobs.entries[key_bytes(digest)] = rec
                report.restore("content", f"content {ns_name}/{digest}",
                               "content record lost; written again for an image that runs from its snapshots "
                               "(its layer blobs were let go after unpacking)")

            kept = {m.descriptor["digest"] for m, _, _ in runs} | {d["digest"] for d in plan.indexes}
            for index in plan.indexes:
                try:
                    children = read_json_blob(content, index).get("manifests") or []
                except CtrconvError:
                    continue
                listed = [c for c in children if isinstance(c, dict) and c.get("digest") in kept]
                put(index["digest"], int(index["size"]), children_labels(listed))
            for m, sn, top in runs:
                put(m.descriptor["digest"], int(m.descriptor["size"]), children_labels([m.config]))
                put(m.config["digest"], int(m.config["size"]), {K.LABEL_GC_SNAPSHOT + sn: top})


def relabel_bare_documents(meta: BucketTree, content: ContentStore, report: RebuildReport,
                           lost_content: Callable[[str], bool]) -> None:
    """A content record of an index or manifest that came back bare (its page lost: no times,
    no labels) gets the GC labels of its children the namespace records, as containerd's
    ``ChildGCLabels`` wrote them. The re-import labels what it imports again, but not the
    platforms a namespace did not pull (2.x records their manifests and configs): the config
    of such a manifest went at containerd's first GC (a red-team sweep). Only where the
    namespace's content records may be lost (``lost_content``)."""
    from ctrconv.sinks.containerd_root.records import children_labels

    now = go_time(time.time_ns())
    for ns_name, ns in namespaces(meta):
        blobs = ns.bucket(K.CONTENT, K.BLOB)
        if blobs is None or not lost_content(ns_name):
            continue
        for key, record in list(blobs.entries.items()):
            if not isinstance(record, BucketTree) or record.get(K.CREATED_AT) is not None \
                    or record.bucket(K.LABELS) is not None:
                continue
            try:
                doc = sniff_document(Digest.parse(text(key)), content.blob_path(text(key)))
            except CtrconvError:
                continue
            if doc is None:
                continue
            try:
                document = read_json_blob(content, doc.descriptor)
            except CtrconvError:
                continue
            listed = document.get("manifests") if isinstance(document.get("manifests"), list) else \
                [document.get("config"), *(document.get("layers") or [])]
            children = [c for c in listed if isinstance(c, dict) and isinstance(c.get("digest"), str)
                        and key_bytes(c["digest"]) in blobs.entries]
            if children and _mend_record(record, children_labels(children), now):
                report.restore("content", f"content {ns_name}/{text(key)}",
                               "content record's labels lost with its page; its children's GC labels written again")


def _mend_record(record: BucketTree, wanted: Mapping[str, str], now: Any) -> bool:
    """Give a salvaged content record the GC labels ``wanted`` it lacks (a label naming the
    same target under another key counts; a key taken by another target gets the next number
    of its prefix), and its times if it lost them (a record whose page was lost came back with
    its size only: containerd's GC then took the config and snapshot its lost labels held, and
    the image could not run again; a red-team run). Whether anything changed."""
    labels = read_map(record.bucket(K.LABELS))
    changed = False
    for key, value in wanted.items():
        if value in labels.values():
            continue
        if key in labels:  # (numbered as SetChildrenMappedLabels numbers: m.0, m.1; config, config1)
            stem = key.rstrip("0123456789")
            n = 0 if stem.endswith(".") else 1
            while f"{stem}{n}" in labels:
                n += 1
            key = f"{stem}{n}"
        labels[key] = value
        changed = True
    if changed:
        write_map(record, K.LABELS, labels)
    if record.get(K.CREATED_AT) is None or record.get(K.UPDATED_AT) is None:
        write_timestamps(record, now if record.get(K.CREATED_AT) is None else None,
                         now if record.get(K.UPDATED_AT) is None else None)
        changed = True
    return changed


def _snapshot_keys(ns: BucketTree) -> set[str]:
    """The keys of a namespace's snapshots, of every snapshotter (an image layer's is its
    chain ID)."""
    snapshots = ns.bucket(K.SNAPSHOTS)
    keys: set[str] = set()
    for bucket in (snapshots.entries.values() if snapshots else ()):
        if isinstance(bucket, BucketTree):
            keys.update(text(k) for k, v in bucket.entries.items() if isinstance(v, BucketTree))
    return keys


def _top_chains(doc: FoundDocument, by_digest: dict[str, FoundDocument], content: ContentStore) -> set[str]:
    """The top chain ID of each manifest a document is or lists (from its config's diff IDs)."""
    from ctrconv.layers.chain import chain_ids

    manifests, pending, seen = [], [doc], set()
    while pending:  # (an index may list indexes)
        found = pending.pop()
        if found.descriptor["digest"] in seen or len(seen) > 1024:
            continue
        seen.add(found.descriptor["digest"])
        if mt.is_manifest(found.descriptor["mediaType"]):
            manifests.append(found)
        else:
            pending.extend(m for c in found.children if (m := by_digest.get(c)))
    tops: set[str] = set()
    for manifest in manifests:
        try:
            with open(content.blob_path(manifest.children[0]), "rb") as f:
                config = parse_json_bytes(f.read(MAX_JSON_BLOB + 1))
            diff_ids = config["rootfs"]["diff_ids"]
            if isinstance(diff_ids, list) and diff_ids:
                tops.add(chain_ids(diff_ids)[-1])
        except (OSError, CtrconvError, KeyError, TypeError, ValueError):
            continue
    return tops


def _candidate_names(doc: FoundDocument, ns_name: str, names: dict[str, str], targets: dict[str, dict[str, list[str]]],
                     orphaned: dict[tuple[str, str], str], ns: BucketTree | None = None,
                     repositories: dict[tuple[str, str], str] | None = None) -> list[str]:
    """The names a re-derived image gets in ``ns_name`` (see :func:`derive_images`)."""
    digest = doc.descriptor["digest"]
    if digest in names:
        return [names[digest]]
    candidates = sorted({n for other, t in targets.items() if other != ns_name for n in t.get(digest, [])
                         if ns_name == CRI_NAMESPACE or not _cri_alias(n)})
    lost = orphaned.get((ns_name, digest))
    if not candidates and lost is not None:
        candidates = [_by_digest(lost, digest)]
    candidates = [c for c in candidates if c]
    if candidates:
        return candidates
    named = derived_name(doc, names)
    if named.startswith(PLACEHOLDER_REPO) and ns is not None:
        return [_pulled_from(ns, digest, repositories or {}) or named]
    return [named]


def _container_images(spaces: Collection[BucketTree]) -> list[str]:
    """The image names container records still hold (``containers/<id>/image``, the name a pod
    or ``ctr run`` used): another record of a registry's host and port when every image record
    naming it is lost (a red-team page sweep: a lost namespace page took all 16 names of a
    ``127.0.0.1:46735`` registry while its container records stood)."""
    found = []
    for ns in spaces:
        containers = ns.bucket(K.CONTAINERS)
        for record in (containers.entries.values() if containers is not None else ()):
            image = record.get(K.IMAGE) if isinstance(record, BucketTree) else None
            if image:
                found.append(text(image))
    return found


def _repositories(targets: dict[str, dict[str, list[str]]], also: Collection[str] = ()) -> dict[tuple[str, str], str]:
    """(registry host without port, repository path) -> repository name, of every image name
    still recorded (then of ``also``: the images containers were made from), and (host, "") ->
    the registry as those names write it: a distribution-source label names the host without
    its port."""
    from ctrconv.oci.reference import parse_reference

    found: dict[tuple[str, str], str] = {}
    recorded = [name for by_target in targets.values() for image_names in by_target.values() for name in image_names]
    for name in [*recorded, *also]:
        try:
            ref = parse_reference(name)
        except CtrconvError:
            continue
        host = ref.domain.split(":", 1)[0]
        found.setdefault((host, ref.path), ref.name)
        found.setdefault((host, ""), ref.domain)
    return found


def _cri_alias(name: str) -> bool:
    """A name CRI adds beside a tag (``repo@digest``, ``sha256:<image id>``): a ``ctr``
    namespace never had such names of another namespace's image (a digest pull of its own
    keeps its name in its own records)."""
    return "@" in name or (name.startswith("sha256:") and "/" not in name)


def _blob_labels(ns: BucketTree, digest: str) -> dict[str, str] | None:
    """The labels of the namespace's content record of ``digest``; None without a record (or
    with labels that do not decode: nothing can be told from them)."""
    record = ns.bucket(K.CONTENT, K.BLOB, key_bytes(digest))
    if record is None:
        return None
    try:
        return read_map(record.bucket(K.LABELS))
    except CtrconvError:
        return None


def _pulled_from(ns: BucketTree, digest: str, repositories: dict[tuple[str, str], str]) -> str | None:
    """``repo@digest`` from the repository a pull recorded on the target's content record
    (``containerd.io/distribution.source.<host>=<repo>[,...]``: the first repository), with
    the port a recorded image name of that host and path has (the label has none)."""
    labels = _blob_labels(ns, digest)
    for key in sorted(labels or {}):
        if key.startswith(K.LABEL_DISTRIBUTION_SOURCE + ".") and labels[key]:
            host = key[len(K.LABEL_DISTRIBUTION_SOURCE) + 1:]
            path = labels[key].split(",")[0]
            repository = repositories.get((host, path)) or f"{repositories.get((host, ''), host)}/{path}"
            name = _by_digest(repository, digest)
            if name:
                return name
    return None


def _cri_names(content: ContentStore, ns_name: str, target: Target, candidates: list[str],
               ns: BucketTree | None = None) -> list[str]:
    """Each name with the names CRI gives a pulled image: the tag (normalised), its
    ``repo@digest`` and the ``sha256:<image id>`` of the host platform's config. No
    ``repo@digest`` where the target's content record survived without a distribution source:
    a manifest no registry served (a docker archive's, made on import), which CRI would report
    as a repo digest to pull."""
    from ctrconv.pipeline.resolve import image_ids

    ids = image_ids(content, ImageRecord(ns_name, "", target))
    labels = _blob_labels(ns, target.digest) if ns is not None else None
    digest_name = labels is None or any(k.startswith(K.LABEL_DISTRIBUTION_SOURCE + ".") for k in labels)
    found: list[str] = []
    for name in candidates:
        found += cri_names(name, target.digest, ids[0] if ids else None, digest_name=digest_name).names
    return list(dict.fromkeys(found))


def _by_digest(name: str, digest: str) -> str:
    """``repo@digest`` for the repository of image ``name``; "" if the name is no reference."""
    from ctrconv.oci.reference import parse_reference

    try:
        return f"{parse_reference(name).name}@{digest}"
    except CtrconvError:
        return ""


def assess_image(content: ContentStore, ns: BucketTree, desc: dict[str, Any], lost: Collection[str] = (),
                 plan: ImagePlan | None = None, remade: Collection[tuple[str, str]] = ()) -> Assessment:
    """The one completeness rule, applied to an image of the tree being repaired.

    ``lost``: blobs whose records the clean-up dropped (:func:`~ctrconv.recovery.metadata.lost_records`)
    count as recorded, so a layer lost to damage is not taken for one never fetched.
    ``plan``: the image's walk (no platform selection) over ``content``, if made already.
    ``remade``: (snapshotter, key) of snapshots that count as present: the re-import unpacks
    them again from another image's layers (:func:`drop_incomplete_images`).
    """
    labels_of, snapshot_exists = namespace_lookups(ns)
    if lost and isinstance(labels_of, RecordedLabels):
        recorded = labels_of.recorded
        labels_of = RecordedLabels(labels_of, lambda d: d in lost or recorded(d))
    if remade:
        recorded_snapshot = snapshot_exists
        snapshot_exists = lambda sn, key: (sn, key) in remade or recorded_snapshot(sn, key)  # noqa: E731
    return assess(content, desc, labels_of=labels_of, snapshot_exists=snapshot_exists, plan=plan)


def _problem(verdict: Assessment) -> str | None:
    """Why an image cannot stay, or None."""
    if verdict.broken:
        return "missing " + ", ".join(d["digest"] for d in verdict.broken)
    if not verdict.usable:
        return "no platform of it is present"
    return None


def _unpacked_chains(ns: BucketTree, verdict: Assessment) -> set[tuple[str, str]]:
    """(snapshotter, chain) of the snapshots a whole image's configs name (``gc.ref.snapshot``):
    what the re-import unpacks again from its layers, if damage lost them."""
    chains = set()
    for manifest in verdict.whole:
        try:
            labels = read_map(ns.bucket(K.CONTENT, K.BLOB, key_bytes(manifest.config["digest"]), K.LABELS))
        except CtrconvError:
            continue  # (undecodable labels name no snapshot)
        for key, value in labels.items():
            if key.startswith(K.LABEL_GC_SNAPSHOT):
                chains.add((key[len(K.LABEL_GC_SNAPSHOT):].split("/", 1)[0], value))
    return chains


def pulled_here(ns: BucketTree, lost: Collection[str] = ()) -> Callable[[PlannedManifest], bool]:
    """Whether a namespace pulled a platform: it records the manifest, the config and every
    layer, or the manifest and a config labelled with an unpacked snapshot (a layer record
    lost to damage). 2.x records the manifests and configs of platforms it did not pull,
    without their layers and never unpacked: those stay partial. ``lost``: digests whose
    records the clean-up dropped (their blobs were gone) count as recorded."""
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    records = {text(k): v for k, v in blobs.entries.items()} if blobs is not None else {}

    def recorded(digest: str) -> bool:
        return digest in records or digest in lost

    def unpacked(config: str) -> bool:
        rec = records.get(config)
        labels = read_map(rec.bucket(K.LABELS)) if isinstance(rec, BucketTree) else {}
        return any(k.startswith(K.LABEL_GC_SNAPSHOT) for k in labels)

    def pulled(m: PlannedManifest) -> bool:
        if not recorded(m.descriptor["digest"]) or not recorded(m.config["digest"]):
            return False
        return all(recorded(layer["digest"]) for layer in m.layers) or unpacked(m.config["digest"])

    return pulled


def _pulled_platforms_lost(ns: BucketTree, verdict: Assessment, lost: Collection[str]) -> list[str]:
    """With whole content records: the recorded children of an index whose blobs are gone,
    when no manifest the namespace pulled is left to run. Another namespace's platforms on
    disk do not keep the image (the re-import could not take them without taking them over)."""
    plan = verdict.plan
    if not plan.indexes:
        return []
    pulled = pulled_here(ns, lost)
    if any(pulled(m) for m in (*verdict.whole, *verdict.discarded)):
        return []
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    return [d["digest"] for d in plan.missing
            if d["digest"] in lost or (blobs is not None and key_bytes(d["digest"]) in blobs.entries)]


def drop_incomplete_images(meta: BucketTree, content: ContentStore, report: RebuildReport,
                           records_whole: Callable[[str], bool] = lambda ns: False) -> None:
    """An image that no platform can run (or that lacks what every platform needs) would fail
    every use: drop it; so is an index whose every platform the namespace pulled lost its
    content, where its content records are whole (``records_whole``): the platforms other
    namespaces pulled are not its own. Platforms never pulled are no reason; neither are layers let go after
    unpacking (``discard_unpacked_layers``) or never fetched (a 1.7/2.x transfer-service pull: a
    snapshot of them existed): their snapshots still run the image, also when damage lost those snapshots and
    another image's layers make them again (a red-team run: such an image was dropped, and GC
    then took its manifest, while the same rebuild unpacked its chain again)."""
    listed = {(i["namespace"], i["name"]) for i in report.images}  # not searched per image
    for ns_name, ns in namespaces(meta):
        images = ns.bucket(K.IMAGES)
        lost = lost_records(report, ns_name)
        remade: set[tuple[str, str]] = set()
        doubtful: list[tuple[bytes, dict[str, Any], str]] = []
        for key in list(images.entries) if images else []:
            desc = target_descriptor(images.entries[key])  # type: ignore[union-attr]
            origin = "kept"
            try:
                verdict = assess_image(content, ns, desc, lost) if desc is not None else None
            except CtrconvError as exc:
                verdict, problem = None, str(exc)
            else:
                problem = "no target" if verdict is None else _problem(verdict)
                if problem is None and verdict is not None and records_whole(ns_name) and \
                        (gone := _pulled_platforms_lost(ns, verdict, lost)):
                    # a platform unpacked on purpose (``--platform``) still runs from its
                    # snapshots when its layer blob is lost, as the host platform's does
                    if runs_without := _lost_layers_it_runs_without(content, ns, verdict, gone):
                        origin = _runs_from_snapshots(runs_without)
                    else:
                        verdict, problem = None, "the platforms it pulled are gone: missing " + ", ".join(gone)
            if problem is None:
                assert verdict is not None and desc is not None
                remade |= _unpacked_chains(ns, verdict)
                _list_kept(report, listed, ns_name, key, desc, origin)
            elif verdict is not None and desc is not None:
                doubtful.append((key, desc, problem))  # (may run from snapshots made again)
            else:
                del images.entries[key]  # type: ignore[union-attr]
                report.drop("image", f"image {ns_name}/{text(key)}", problem)
        for key, desc, problem in doubtful:
            verdict = assess_image(content, ns, desc, lost, remade=remade)
            if remade and _problem(verdict) is None:
                _list_kept(report, listed, ns_name, key, desc)
            elif gone := _lost_layers_it_runs_without(content, ns, verdict):
                _list_kept(report, listed, ns_name, key, desc, _runs_from_snapshots(gone))
            else:
                del images.entries[key]  # type: ignore[union-attr]
                report.drop("image", f"image {ns_name}/{text(key)}", problem)


def _runs_from_snapshots(lost_layers: list[str]) -> str:
    """The report's origin of an image kept although layer blobs of it are lost."""
    return (f"kept: it runs from its unpacked snapshots; lost layer blob(s) {', '.join(lost_layers)} (pull "
            "the image again, or rebuild with --regenerate-layers, to have them back)")


def _lost_layers_it_runs_without(content: ContentStore, ns: BucketTree, verdict: Assessment,
                                 lost: Collection[str] | None = None) -> list[str]:
    """The lost blobs of an image that still runs without them, or ``[]``: each one a layer of a
    manifest whose config (present) labels the snapshot of its whole chain, which the
    namespace keeps. containerd runs such an image from that snapshot (``ctr run``; a CRI
    container) and its GC keeps the snapshot by the label; dropping the image for its lost
    blob cost every namespace that ran it (a red-team run: one lost base layer took 109 of a
    node's 113 images, and GC their snapshots). ``lost``: the blobs that count (default: what
    the image is broken by; an index whose platforms pulled here are gone: those platforms' blobs,
    which the whole platforms another namespace pulled excuse in the verdict)."""
    from ctrconv.layers.chain import chain_ids

    broken = set(lost) if lost is not None else {d["digest"] for d in verdict.broken}
    excused: set[str] = set()
    layers_lost: set[str] = set()  # (of the manifests that run: what the report names)
    labels_of, snapshot_exists = namespace_lookups(ns)
    for manifest in verdict.partial:
        layers = {d["digest"] for d in manifest.layers}
        gone = broken & {d["digest"] for d in (manifest.descriptor, manifest.config, *manifest.layers)}
        if not gone or not gone <= layers:
            continue
        try:
            diff_ids = (read_json_blob(content, manifest.config).get("rootfs") or {}).get("diff_ids") or []
        except CtrconvError:
            continue
        if not isinstance(diff_ids, list) or len(diff_ids) != len(manifest.layers) or not diff_ids:
            continue
        top = chain_ids(diff_ids)[-1]
        if any(key.startswith(K.LABEL_GC_SNAPSHOT) and value == top
               and snapshot_exists(key[len(K.LABEL_GC_SNAPSHOT):].split("/", 1)[0], top)
               for key, value in labels_of(manifest.config["digest"]).items()):
            excused |= gone
            layers_lost |= gone
    if excused and verdict.plan.indexes:
        # a platform that runs: the index's other platforms, never pulled or partly, are no
        # reason to drop it (as for any index: :func:`~ctrconv.pipeline.completeness.assess`)
        for manifest in verdict.partial:
            if manifest.descriptor.get("platform"):
                excused |= broken & {d["digest"] for d in (manifest.descriptor, manifest.config, *manifest.layers)}
        excused |= {d["digest"] for d in verdict.plan.missing if d.get("platform")
                    and (mt.is_manifest(d.get("mediaType", "")) or mt.is_index(d.get("mediaType", "")))}
    return sorted(layers_lost) if broken and broken <= excused else []


def _list_kept(report: RebuildReport, listed: set[tuple[str, str]], ns_name: str, key: bytes,
               desc: dict[str, Any], origin: str = "kept") -> None:
    if (ns_name, text(key)) not in listed:
        listed.add((ns_name, text(key)))
        report.images.append({"namespace": ns_name, "name": text(key), "digest": desc["digest"], "origin": origin})
