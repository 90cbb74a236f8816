"""When is an image whole? One rule for ``ls``, ``verify`` and ``rebuild`` (docs/verify.md).

An index names every platform; a node pulls one or a few. A platform child that is absent, or
only partly present (2.x keeps the manifests of platforms it did not pull), is excused as long as
some platform of the index is usable. A platform whose layer blobs were collected after it was
unpacked (the CRI option ``discard_unpacked_layers``, set by EKS and GKE node images) is usable:
its snapshots run it. So is a layer Docker's containerd image store never fetched because a
snapshot of the same chain already existed (namespace ``moby``: the manifest labels the layer,
but the namespace has no content record of it at all). Everything else an image needs (its target, children without a platform,
a single-manifest image's config and layers) must be present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ctrconv.bolt.tree import ReadBucket
from ctrconv.containerd import schema as K
from ctrconv.containerd.docker_store import NAMESPACE as DOCKER_NAMESPACE
from ctrconv.containerd.records import key_bytes, read_map
from ctrconv.errors import CtrconvError
from ctrconv.layers import chain_ids
from ctrconv.image.plan import BlobSource, DocumentCache, ImagePlan, PlannedManifest, PlatformSelector, plan_image, read_json_blob
from ctrconv.oci import mediatypes as mt

if TYPE_CHECKING:
    from ctrconv.containerd.metadata import MetadataDB

#: ``(digest) -> labels`` of the namespace's content record ({} when it has none)
LabelsOf = Callable[[str], Mapping[str, str]]
#: ``(snapshotter, key) -> bool``: the namespace has that snapshot
SnapshotExists = Callable[[str, str], bool]


class RecordedLabels:
    """A :data:`LabelsOf` that can also tell a blob the namespace never recorded
    (:meth:`recorded`) from one whose record has no labels: a layer Docker skipped has no
    record, a layer lost to damage usually keeps its record. :meth:`elsewhere` tells a blob
    file another namespace of the root records (the file is that namespace's: no sign that
    this namespace lost a record of it) from an orphan file."""

    def __init__(self, labels: LabelsOf, recorded: Callable[[str], bool],
                 elsewhere: Callable[[str], bool] | None = None) -> None:
        self._labels = labels
        self.recorded = recorded
        self.elsewhere: Callable[[str], bool] = elsewhere or _nowhere

    def __call__(self, digest: str) -> Mapping[str, str]:
        return self._labels(digest)


def _nowhere(_digest: str) -> bool:
    return False


def namespace_lookups(ns: ReadBucket | None, others: Sequence[ReadBucket] = ()) -> tuple[LabelsOf, SnapshotExists]:
    """Content labels and snapshot keys of one namespace bucket (``v1/<ns>``), read only when
    asked (only an image missing layers needs them): the same for a meta.db being read and
    for the in-memory tree ``rebuild`` repairs. ``others``: the root's other namespace
    buckets, asked whether they record a blob (:meth:`RecordedLabels.elsewhere`)."""

    def labels_of(digest: str) -> Mapping[str, str]:
        try:
            return read_map(ns.bucket(K.CONTENT, K.BLOB, key_bytes(digest), K.LABELS)) if ns is not None else {}
        except CtrconvError:
            return {}

    def recorded(digest: str) -> bool:
        try:
            return ns is not None and ns.bucket(K.CONTENT, K.BLOB, key_bytes(digest)) is not None
        except CtrconvError:
            return True  # unreadable: no evidence that it was never fetched

    def snapshot_exists(snapshotter: str, key: str) -> bool:
        bucket = ns.bucket(K.SNAPSHOTS, key_bytes(snapshotter)) if ns is not None else None
        return bucket is not None and bucket.bucket(key_bytes(key)) is not None

    def elsewhere(digest: str) -> bool:
        for other in others:
            try:
                if other.bucket(K.CONTENT, K.BLOB, key_bytes(digest)) is not None:
                    return True
            except CtrconvError:
                continue
        return False

    return RecordedLabels(labels_of, recorded, elsewhere if others else None), snapshot_exists


def skips_shared_blobs(namespace: str, writer_line: str | None = None) -> bool:
    """Whether the namespace's writer may use a blob file another namespace records without
    recording it itself. Docker's containerd store does (a layer whose snapshot exists is never
    fetched, even when ``default`` holds its file), and so do the transfer service's pulls of
    1.7 (``ctr images pull --local=false``) and 2.x (its default): ``ctr images check`` says
    incomplete, unpacked, and the image runs. ``writer_line``: the containerd line that wrote
    the meta.db (:attr:`~ctrconv.containerd.metadata.MetadataDB.writer_line`). 1.6's pulls and
    imports (``ctr``, CRI) record every blob they use, sharing the file, so on a 1.6 root a
    missing record beside a file another namespace records is a lost record."""
    return namespace == DOCKER_NAMESPACE or writer_line in ("1.7", "2.x")


def lookups_in(meta: "MetadataDB", namespace: str) -> tuple[LabelsOf, SnapshotExists]:
    """:func:`namespace_lookups` of ``namespace`` in an open meta.db (ls, export, push, commit)."""
    if meta.v1 is None:
        return namespace_lookups(None)
    others = ([bucket for key, bucket in meta.v1.buckets() if key != key_bytes(namespace)]
              if skips_shared_blobs(namespace, meta.writer_line) else [])
    return namespace_lookups(meta.v1.bucket(key_bytes(namespace)), others)


@dataclass
class Assessment:
    """An image's manifests sorted by what the namespace holds of them."""

    plan: ImagePlan
    #: manifest, config and layers present
    whole: list[PlannedManifest] = field(default_factory=list)
    #: layers collected after unpacking (``discard_unpacked_layers``); the snapshots run it
    discarded: list[PlannedManifest] = field(default_factory=list)
    #: platform children whose manifest is present but not (all of) their config and layers
    partial: list[PlannedManifest] = field(default_factory=list)
    #: platform children (manifests or nested indexes) that are not present at all
    absent: list[dict[str, Any]] = field(default_factory=list)
    #: missing blobs the image needs: it is broken
    broken: list[dict[str, Any]] = field(default_factory=list)

    @property
    def usable(self) -> list[PlannedManifest]:
        """Manifests a container can be started from."""
        return self.whole + self.discarded

    @property
    def ok(self) -> bool:
        """Nothing the image needs is missing, and some manifest is usable."""
        return not self.broken and bool(self.usable)


def _missing_of(manifest: PlannedManifest, missing: set[str]) -> set[str]:
    return {d["digest"] for d in (manifest.config, *manifest.layers)} & missing


def never_recorded(labels_of: LabelsOf, digests: set[str]) -> bool:
    """No blob of ``digests`` ever had a content record (False when that cannot be told)."""
    if not isinstance(labels_of, RecordedLabels):
        return False
    return not any(labels_of.recorded(d) for d in digests)


def _files_survive(content: BlobSource, digests: set[str], labels_of: LabelsOf) -> bool:
    """A blob file is on disk while the namespace has no record of it and no other namespace
    records it either: the record was lost (a deleted record, a destroyed page), since a layer
    Docker never fetched has no file of its own. A file another namespace records is that
    namespace's (``ctr import`` into ``default`` of the image Docker then pulled, say), and
    says nothing about this one."""
    on_disk_elsewhere = getattr(content, "on_disk_elsewhere", None)
    elsewhere = getattr(labels_of, "elsewhere", _nowhere)
    return on_disk_elsewhere is not None and any(on_disk_elsewhere(d) and not elsewhere(d) for d in digests)


def layers_discarded(content: BlobSource, manifest: PlannedManifest, missing: set[str],
                     labels_of: LabelsOf, snapshot_exists: SnapshotExists,
                     cache: DocumentCache | None = None) -> bool:
    """The manifest lacks only layers, and they were let go after unpacking, as containerd's
    CRI does with ``discard_unpacked_layers``: the manifest labels its config but no layer
    (``ChildGCLabelsFilterLayers``), and the config's ``gc.ref.snapshot.<sn>`` names the top
    snapshot of the layers' chain, which exists. Or they were never fetched, as Docker's
    containerd store does when that snapshot already existed: the manifest labels the layers,
    but the namespace never recorded any missing one (:meth:`RecordedLabels.recorded`) and
    no file of one is on disk that no other namespace records."""
    gone = _missing_of(manifest, missing)
    layers = {layer["digest"] for layer in manifest.layers}
    if not gone or not gone <= layers or manifest.config["digest"] in missing:
        return False
    manifest_labels = labels_of(manifest.descriptor["digest"])
    if any(k.startswith(K.LABEL_GC_CONTENT + ".l.") for k in manifest_labels) and (
            not never_recorded(labels_of, gone) or _files_survive(content, gone, labels_of)):
        return False  # the layers were meant to be kept and were stored: they are lost, not discarded
    if not mt.is_config(manifest.config.get("mediaType", "")):
        return False
    try:
        doc = read_json_blob(content, manifest.config, cache)
    except CtrconvError:
        return False
    diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
    if not diff_ids:
        return False
    top = chain_ids(diff_ids)[-1]
    for key, value in labels_of(manifest.config["digest"]).items():
        if key.startswith(K.LABEL_GC_SNAPSHOT) and value == top:
            snapshotter = key[len(K.LABEL_GC_SNAPSHOT):].split("/", 1)[0]
            if snapshot_exists(snapshotter, top):
                return True
    return False


def assess(
    content: BlobSource,
    target: dict[str, Any],
    *,
    selector: PlatformSelector | None = None,
    cache: DocumentCache | None = None,
    labels_of: LabelsOf | None = None,
    snapshot_exists: SnapshotExists | None = None,
    plan: ImagePlan | None = None,
) -> Assessment:
    """Sort the manifests of the image at ``target`` (``selector``: only these platforms).

    Without ``labels_of``/``snapshot_exists`` nothing counts as discarded. Corrupt or invalid
    JSON raises, as :func:`plan_image` does. ``plan``: the image's walk with this selector over
    this content, when the caller made it already (a rebuild walks each image once per stage).
    """
    plan = plan if plan is not None else plan_image(content, target, selector, cache)
    result = Assessment(plan)
    missing = {d["digest"]: d for d in plan.missing}
    for m in plan.manifests:
        if not _missing_of(m, set(missing)):
            result.whole.append(m)
        elif labels_of is not None and snapshot_exists is not None and layers_discarded(
                content, m, set(missing), labels_of, snapshot_exists, cache):
            result.discarded.append(m)
        else:
            result.partial.append(m)
    excused: set[str] = set()
    for m in result.discarded:
        excused |= _missing_of(m, set(missing))
    if plan.indexes and result.usable:
        for m in result.partial:
            if m.descriptor.get("platform"):
                excused |= _missing_of(m, set(missing))
        for desc in plan.missing:
            media_type = desc.get("mediaType", "")
            if desc.get("platform") and (mt.is_manifest(media_type) or mt.is_index(media_type)):
                result.absent.append(desc)
                excused.add(desc["digest"])
    needed = {d["digest"] for m in result.whole for d in (m.descriptor, m.config, *m.layers)}
    result.broken = [d for digest, d in missing.items() if digest not in excused or digest in needed]
    return result
