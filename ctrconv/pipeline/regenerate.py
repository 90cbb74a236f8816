"""Export images whose layer blobs are gone, from the snapshots they were unpacked into.

Nodes running containerd's CRI with ``discard_unpacked_layers`` (EKS, GKE) let layer blobs go
once they are unpacked, and damage can lose blobs whose snapshots survive. Such an image still
runs; this module makes it exportable again:

1. :func:`layer_jobs` decides, per planned manifest, which layers to regenerate (``auto``: the
   ones whose blob the namespace lacks; ``always``: every layer that has a snapshot) and finds
   each layer's snapshot by its chain ID in the namespace's snapshotter records;
2. :class:`Regenerator` writes each layer (:mod:`ctrconv.layers.regenerate`) into a spool
   directory, hashing the tar (diff ID) and the compressed blob while they stream;
3. :func:`rewrite_images` builds what the export names: when a regenerated tar's digest equals
   the config's diff ID the config is kept (the image ID does not change), otherwise a new
   config with the new diff IDs (history and everything else kept); always a new manifest
   (its layer blobs are new bytes) annotated with the original manifest digest, and new
   indexes above it. The new documents and the spooled layers are served by
   :class:`ExtraBlobs` over the namespace's content, so the export pipeline plans and copies
   them like any stored blob (verified while copied).

:func:`decompress_layers` reuses steps 2-3 to turn zstd layers into plain tars for a docker
archive (diff IDs unchanged, so the config and the image ID stay).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Mapping

from ctrconv import tempfiles
from ctrconv.containerd import schema as K
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, DigestMismatchError, FormatError, UsageError
from ctrconv.layers.chain import chain_ids
from ctrconv.layers.compression import COMPRESSIONS, Compression, open_layer
from ctrconv.oci import mediatypes as mt
from ctrconv.pipeline.completeness import never_recorded
from ctrconv.image.plan import BlobSource, ImagePlan, PlannedManifest, read_json_blob
from ctrconv.streams import CHUNK, VerifyingReader

if TYPE_CHECKING:  # the layer writer is imported where a layer is written: most exports write none
    from ctrconv.layers.layerblob import WrittenLayer

#: ``--from-snapshots`` values
FROM_SNAPSHOTS = ("auto", "always", "never")
#: the annotation a rewritten manifest carries: the digest of the manifest it replaces
ANNOTATION_ORIGINAL_MANIFEST = "io.ctrconv.original-manifest"
#: snapshotters whose snapshots ctrconv can turn back into layers, in the order tried
TREE_SNAPSHOTTERS = K.TREE_SNAPSHOTTERS


def compact_json(doc: Any) -> bytes:
    """A rewritten document: compact JSON, keys in their original order."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- where the snapshots are ---------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotTree:
    snapshotter: str
    key: str
    path: Path


class SnapshotIndex:
    """The committed snapshots of one namespace with a plain directory tree, by key."""

    def __init__(self, root: ContainerdRoot, meta: MetadataDB, namespace: str, *, ignore_lock: bool = False) -> None:
        self.root = root
        self.meta = meta
        self.namespace = namespace
        self.ignore_lock = ignore_lock
        self._trees: dict[str, dict[str, Path]] = {}
        self._uncompressed: dict[str, list[dict[str, Any]]] | None = None

    def _load(self, snapshotter: str) -> dict[str, Path]:
        if snapshotter in self._trees:
            return self._trees[snapshotter]
        trees: dict[str, Path] = {}
        try:
            names = {r.key: r.name for r in self.meta.snapshots(self.namespace, snapshotter)}
            with self.root.open_snapshotter(snapshotter, ignore_lock=self.ignore_lock) as backend:
                ids = {b.key: b.id for b in backend.snapshots() if b.kind.lower() == "committed"} if backend else {}
        except CtrconvError:
            names, ids = {}, {}
        for key, name in names.items():
            if name in ids:
                path = self.root.snapshot_fs(snapshotter, ids[name])
                if path is not None and plain_directory(path, self.root.snapshots_dir(snapshotter)):
                    trees[key] = path
        self._trees[snapshotter] = trees
        return trees

    def snapshotters(self, preferred: Iterable[str] = ()) -> list[str]:
        present = set(self.meta.snapshotters(self.namespace))
        order = [*preferred, *TREE_SNAPSHOTTERS, *sorted(present)]
        return [s for s in dict.fromkeys(order) if s in present and s in TREE_SNAPSHOTTERS]

    def find(self, snapshotter: str, key: str) -> Path | None:
        return self._load(snapshotter).get(key)

    def same_layer(self, content: BlobSource, layer: dict[str, Any], diff_id: str) -> dict[str, Any] | None:
        """The stored bytes to use for a layer this namespace never fetched: the layer's own
        blob when its file is on disk all the same (another namespace holds it: the exact
        bytes, so nothing above the layer changes; ``path`` says where), else a blob of the
        same tar (:meth:`same_diff`)."""
        store = getattr(content, "store", None)
        digest = layer.get("digest", "")
        if store is not None and not content.exists(digest):
            try:
                if store.size(digest) == layer.get("size"):
                    return {"digest": digest, "size": layer["size"], "path": str(store.blob_path(digest))}
            except CtrconvError:
                pass
        return self.same_diff(content, diff_id)

    def same_diff(self, content: BlobSource, diff_id: str) -> dict[str, Any] | None:
        """A blob of the namespace holding the layer tar ``diff_id``: the tar itself (its digest
        is the diff ID), or a compressed blob whose ``containerd.io/uncompressed`` label names
        it. Docker's containerd store skips a layer whose snapshot exists; the image that
        unpacked that snapshot usually still holds such a blob, and its bytes are the original
        tar exactly (the config, and Docker 20.10's image ID, then stay)."""
        if self._uncompressed is None:
            self._uncompressed = {}
            try:
                for record in self.meta.blobs(self.namespace):
                    tar = record.labels.get(K.LABEL_UNCOMPRESSED)
                    if tar and tar != record.digest:
                        self._uncompressed.setdefault(tar, []).append({"digest": record.digest, "size": record.size})
            except CtrconvError:
                pass
        for desc in [{"digest": diff_id, "size": content.size(diff_id)}, *self._uncompressed.get(diff_id, [])]:
            if desc["size"] is not None and content.exists(desc["digest"]) and content.size(desc["digest"]) == desc["size"]:
                return desc
        return None


def plain_directory(path: Path, top: Path) -> bool:
    """``path`` is a directory reached from ``top`` through no symlink: a root whose
    ``snapshots/<id>/fs`` points elsewhere (``/``, say) is never walked into a layer."""
    current = path
    while True:
        if current.is_symlink() or not current.is_dir():
            return False
        if current == top or current.parent == current:
            return True
        current = current.parent


# -- deciding what to regenerate -----------------------------------------------------------


@dataclass(frozen=True)
class LayerJob:
    """One layer of one manifest to write again from its snapshot."""

    manifest: str
    index: int
    layer: dict[str, Any]
    diff_id: str
    snapshotter: str
    chain: str
    tree: Path
    #: native: the parent snapshot's tree (None for the first layer); overlayfs: unused
    parent_tree: Path | None
    #: a stored blob of the same layer tar (:meth:`SnapshotIndex.same_layer`), used instead of
    #: the snapshot: the original tar exactly (the layer's own blob, when ``digest`` is the layer's)
    same_diff: dict[str, Any] | None = None


def _snapshot_labels(labels: Mapping[str, str], top: str) -> list[str]:
    out = []
    for key, value in labels.items():
        if key.startswith(K.LABEL_GC_SNAPSHOT) and value == top:
            out.append(key[len(K.LABEL_GC_SNAPSHOT):].split("/", 1)[0])
    return out


def layer_jobs(
    content: BlobSource,
    plan: ImagePlan,
    mode: str,
    snapshots: SnapshotIndex,
    labels_of,
    skip: Iterable[str] = (),
) -> tuple[list[LayerJob], set[str]]:
    """The layers of ``plan`` to regenerate under ``mode``, and the missing digests they cover.

    A missing layer is covered only when its config is present, its diff IDs line up with the
    manifest's layers, and a snapshot with a readable tree exists for its chain ID (and, for a
    native snapshot, for its parent's). ``skip``: layer digests never to regenerate (left out of
    the export anyway). A layer Docker's containerd store never fetched (the namespace never
    recorded it) is copied from a stored blob of the same tar when there is one
    (:meth:`SnapshotIndex.same_diff`), so its diff ID, and the config, stay."""
    if mode not in FROM_SNAPSHOTS:
        raise UsageError(f"unknown --from-snapshots value {mode!r} (choose from {', '.join(FROM_SNAPSHOTS)})")
    jobs: list[LayerJob] = []
    covered: set[str] = set()
    if mode == "never":
        return jobs, covered
    missing = {d["digest"] for d in plan.missing}
    skipped = set(skip)
    for m in plan.manifests:
        config = m.config
        if config["digest"] in missing or not mt.is_config(config.get("mediaType", "")):
            continue
        wanted = [i for i, layer in enumerate(m.layers)
                  if layer["digest"] not in skipped and (mode == "always" or layer["digest"] in missing)]
        if not wanted:
            continue
        doc = read_json_blob(content, config)
        diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(m.layers):
            continue
        chains = chain_ids(diff_ids)
        order = snapshots.snapshotters(_snapshot_labels(labels_of(config["digest"]), chains[-1]))
        for sn in order:
            found: list[LayerJob] = []
            for i in wanted:
                tree = snapshots.find(sn, chains[i])
                parent = snapshots.find(sn, chains[i - 1]) if sn != "overlayfs" and i > 0 else None
                if tree is None or (sn != "overlayfs" and i > 0 and parent is None):
                    continue
                never_fetched = mode == "auto" and never_recorded(labels_of, {m.layers[i]["digest"]})
                found.append(LayerJob(m.descriptor["digest"], i, m.layers[i], diff_ids[i], sn, chains[i], tree, parent,
                                      snapshots.same_layer(content, m.layers[i], diff_ids[i]) if never_fetched else None))
            if found:
                jobs.extend(found)
                covered |= {j.layer["digest"] for j in found} & missing
                break
    return jobs, covered


# -- blobs that exist only for this export -------------------------------------------------


class ExtraBlobs:
    """A blob source: documents and spooled layer files made for this export, over ``base``.

    A digest ``base`` holds is read from ``base`` (same bytes by definition; and a damaged
    stored blob is still caught by the verified copy instead of being papered over)."""

    def __init__(self, base: BlobSource) -> None:
        self.base = base
        self._bytes: dict[str, bytes] = {}
        self._files: dict[str, tuple[Path, int]] = {}

    def add_bytes(self, data: bytes) -> dict[str, Any]:
        digest = str(Digest.from_bytes(data))
        self._bytes[digest] = data
        return {"digest": digest, "size": len(data)}

    def add_file(self, digest: str, path: Path, size: int) -> None:
        self._files[digest] = (path, size)

    def _ours(self, digest: Digest | str) -> str | None:
        d = str(digest)
        if (d in self._bytes or d in self._files) and not self.base.exists(d):
            return d
        return None

    def exists(self, digest: Digest | str) -> bool:
        return self._ours(digest) is not None or self.base.exists(str(digest))

    def size(self, digest: Digest | str) -> int | None:
        d = self._ours(digest)
        if d is None:
            return self.base.size(str(digest))
        return len(self._bytes[d]) if d in self._bytes else self._files[d][1]

    def open(self, digest: Digest | str) -> BinaryIO:
        d = self._ours(digest)
        if d is None:
            return self.base.open(str(digest))
        return io.BytesIO(self._bytes[d]) if d in self._bytes else open(self._files[d][0], "rb")

    def read_small(self, digest: Digest | str, size: int) -> bytes:
        d = self._ours(digest)
        if d is None:
            return self.base.read_small(str(digest), size)
        if d in self._bytes:
            return self._bytes[d]
        with open(self._files[d][0], "rb") as fh:
            return fh.read(size + 1)

    def blob_path(self, digest: Digest | str) -> Path | None:
        if self._ours(digest) is not None:
            return None  # made for this export: not a file to hardlink from
        where = getattr(self.base, "blob_path", None)  # a file source has no blob files to link
        return where(str(digest)) if where is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


# -- writing layers ------------------------------------------------------------------------


def layer_media_type(original: str, manifest_media_type: str, compression: Compression) -> str:
    """The media type of a rewritten layer: the original's family with the new compression.

    Docker schema 2 has no zstd type; like containerd's converter, a zstd layer of a docker
    manifest is typed as OCI zstd."""
    nondistributable = mt.is_nondistributable(original)
    docker = original.startswith("application/vnd.docker.") or (
        not original.startswith("application/vnd.oci.") and manifest_media_type == mt.DOCKER_MANIFEST)
    if docker and compression != "zstd":
        if nondistributable:
            return mt.DOCKER_LAYER_FOREIGN_GZIP if compression == "gzip" else mt.DOCKER_LAYER_FOREIGN
        return mt.DOCKER_LAYER_GZIP if compression == "gzip" else mt.DOCKER_LAYER
    if nondistributable:
        return {"gzip": mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP, "zstd": mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
                "none": mt.OCI_LAYER_NONDISTRIBUTABLE}[compression]
    return {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}[compression]


def original_compression(media_type: str) -> Compression:
    """How the original layer's media type says it is compressed (a docker ``diff.tar`` is a
    plain tar; a type that is no layer type gets gzip, the common case)."""
    try:
        kind = mt.layer_compression(media_type)
    except FormatError:
        return "gzip"
    if kind in ("gzip", "zstd"):
        return kind  # type: ignore[return-value]
    return "none"


def is_zstd(media_type: str) -> bool:
    try:
        return mt.layer_compression(media_type) == "zstd"
    except FormatError:
        return False


def new_layer_descriptor(original: dict[str, Any], media_type: str, digest: str, size: int) -> dict[str, Any]:
    """The original descriptor with the new bytes; ``urls`` and ``containerd.io/uncompressed``
    (facts about the old blob) dropped, other annotations kept."""
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    annotations = {k: v for k, v in (original.get("annotations") or {}).items() if k != K.LABEL_UNCOMPRESSED}
    if annotations:
        desc["annotations"] = annotations
    return desc


@dataclass
class RegeneratedLayer:
    snapshotter: str
    snapshot: str
    original_digest: str
    original_diff_id: str
    digest: str
    diff_id: str
    media_type: str
    size: int
    #: the stored blob whose tar was used instead of the snapshot (a layer Docker's containerd
    #: store never fetched: :meth:`SnapshotIndex.same_diff`), or the namespace's plain tar a
    #: zstd layer was taken from (:func:`decompress_layer`); None when the bytes came from the
    #: snapshot or from the zstd blob itself
    source_blob: str | None = None

    @property
    def matches(self) -> bool:
        return self.diff_id == self.original_diff_id

    @property
    def how(self) -> str:
        """``regenerated`` (written from the snapshot), ``copied`` (the tar of a stored blob,
        recompressed) or ``decompressed`` (a zstd layer as a plain tar, for a docker archive)."""
        if not self.snapshot:
            return "decompressed"
        return "copied" if self.source_blob else "regenerated"


class Spool:
    """A temp directory of layer blobs made for one export (beside the output, or in $TMPDIR);
    removed by :meth:`close`, or by :mod:`ctrconv.tempfiles` when a signal ends the command, or
    (a SIGKILL) by the next spool made there once it is abandoned."""

    def __init__(self, near: Path | None) -> None:
        import tempfile

        base = near if near is not None and near.is_dir() else Path(tempfile.gettempdir())
        self.path: Path | None = tempfiles.temp_dir(base, ".ctrconv-layers.", ".ctrconv-tmp", sweep=True)
        self._n = 0

    def new_file(self) -> tuple[int, Path]:
        assert self.path is not None
        self._n += 1
        path = self.path / f"layer-{self._n}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return fd, path

    def close(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            tempfiles.forget(self.path)
            self.path = None


class Regenerator:
    """Writes layers from snapshots into a spool, each (snapshot, compression) once."""

    def __init__(self, extras: ExtraBlobs, spool: Spool, compression: Compression | None, *,
                 avoid_zstd: bool = False) -> None:
        if compression is not None and compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compression!r} (choose from {', '.join(COMPRESSIONS)})")
        self.extras = extras
        self.spool = spool
        self.compression = compression
        #: a docker archive: a layer that was zstd is written as a plain tar (docker < 25 reads no zstd)
        self.avoid_zstd = avoid_zstd
        self._done: dict[tuple[str, str, str], WrittenLayer] = {}
        #: layers' own blobs (another namespace's files) already hashed and served
        self._own: set[str] = set()

    def run(self, job: LayerJob, manifest_media_type: str) -> RegeneratedLayer:
        if job.same_diff is not None and job.same_diff["digest"] == job.layer["digest"]:
            if self._own_blob(job.same_diff):  # a zstd one is then decompressed for a docker archive
                digest = job.layer["digest"]
                return RegeneratedLayer(job.snapshotter, job.chain, digest, job.diff_id, digest, job.diff_id,
                                        job.layer["mediaType"], job.layer["size"], digest)
            job = dataclasses.replace(job, same_diff=None)  # not those bytes after all: the snapshot
        compression = self.compression or original_compression(job.layer.get("mediaType", ""))
        if compression == "zstd" and self.avoid_zstd:
            compression = "none"
        key = (job.snapshotter, job.chain, compression)
        written = self._done.get(key)
        if written is None:
            # (here: the tar writer is loaded only by an export that writes a layer again)
            from ctrconv.layers.regenerate import write_layer

            fd, path = self.spool.new_file()
            try:
                if job.same_diff is not None:
                    written = copy_layer(self.extras, job.same_diff, job.diff_id, fd, compression)
                elif job.snapshotter == "overlayfs":
                    written = write_layer(fd, compression, overlay_fs=job.tree)
                else:
                    written = write_layer(fd, compression, tree=job.tree, parent_tree=job.parent_tree)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.extras.add_file(written.digest, path, written.size)
            self._done[key] = written
        media_type = layer_media_type(job.layer.get("mediaType", ""), manifest_media_type, compression)
        return RegeneratedLayer(job.snapshotter, job.chain, job.layer["digest"], job.diff_id,
                                written.digest, written.diff_id, media_type, written.size,
                                job.same_diff["digest"] if job.same_diff is not None else None)


    def _own_blob(self, blob: dict[str, Any]) -> bool:
        """The layer's own blob file (another namespace's) hashes to its digest: then it is
        served as it is (and verified again as it is copied into the output)."""
        digest = Digest.parse(blob["digest"])
        if str(digest) in self._own:  # a layer several images share: hashed once
            return True
        try:
            with open(blob["path"], "rb") as raw:
                reader = VerifyingReader(raw, digest, blob["size"], what=f"layer {digest}")
                while reader.read(CHUNK):
                    pass
        except (OSError, CtrconvError):
            return False
        self.extras.add_file(str(digest), Path(blob["path"]), blob["size"])
        self._own.add(str(digest))
        return True


def copy_layer(source: BlobSource, blob: dict[str, Any], diff_id: str, fd: int, compression: Compression) -> WrittenLayer:
    """The layer tar held by ``blob`` (any compression, verified as it is read), written to
    ``fd`` with ``compression``; its tar must hash to ``diff_id``."""
    from ctrconv.layers.layerblob import LayerWriter

    digest = Digest.parse(blob["digest"])
    out = LayerWriter(fd, compression)
    with source.open(digest) as raw:
        verified = VerifyingReader(raw, digest, blob["size"], what=f"layer {digest}")
        with open_layer(verified, None) as tar:
            while data := tar.read(CHUNK):
                out.write(data)
        verified.read(1)  # the verdict, if the decompressor stopped exactly at the end
    written = out.finish()
    if written.diff_id != diff_id:
        raise DigestMismatchError(f"blob {digest} holds the tar {written.diff_id}, not the layer's diff ID {diff_id}")
    return written


def decompress_layer(source: BlobSource, layer: dict[str, Any], expected_diff_id: str, spool: Spool,
                     extras: ExtraBlobs) -> WrittenLayer:
    """A compressed layer blob as its plain tar, in the spool; the blob is verified while read
    and the tar must hash to ``expected_diff_id``. When the namespace already holds that tar
    (a blob whose digest is the diff ID), it is used as it is (verified when copied)."""
    from ctrconv.layers.layerblob import LayerWriter, WrittenLayer

    digest = Digest.parse(layer["digest"])
    if source.exists(expected_diff_id):
        size = source.size(expected_diff_id)
        if size is not None:
            return WrittenLayer(expected_diff_id, expected_diff_id, size, size, "none")
    fd, path = spool.new_file()
    try:
        out = LayerWriter(fd, "none")
        with source.open(digest) as raw:
            verified = VerifyingReader(raw, digest, layer["size"], what=f"layer {digest}")
            with open_layer(verified, layer.get("mediaType")) as tar:
                while data := tar.read(CHUNK):
                    out.write(data)
            verified.read(1)  # the verdict, if the decompressor stopped exactly at the end
        written = out.finish()
        os.fsync(fd)
    finally:
        os.close(fd)
    if written.diff_id != expected_diff_id:
        raise DigestMismatchError(
            f"layer {digest} decompresses to {written.diff_id}, but the config's diff ID is {expected_diff_id}")
    extras.add_file(written.digest, path, written.size)
    return written


# -- rewriting manifests, configs and indexes ----------------------------------------------


@dataclass
class ManifestChange:
    """A manifest of the export replaced by one naming new layer blobs."""

    platform: str | None
    original_manifest: str
    manifest: str
    original_config: str
    config: str
    layers: list[RegeneratedLayer] = field(default_factory=list)

    @property
    def config_changed(self) -> bool:
        return self.config != self.original_config


def rewrite_manifest(
    extras: ExtraBlobs,
    m: PlannedManifest,
    replaced: Mapping[int, dict[str, Any]],
    new_diff_ids: Mapping[int, str],
) -> tuple[dict[str, Any], str]:
    """A new manifest for ``m`` with layers ``replaced`` (by index) and, when a diff ID changed,
    a new config; returns (new manifest descriptor, config digest)."""
    config_desc = dict(m.config)
    doc_config = read_json_blob(extras, m.config)
    old_ids = list((doc_config.get("rootfs") or {}).get("diff_ids") or [])
    ids = [new_diff_ids.get(i, d) for i, d in enumerate(old_ids)]
    if ids != old_ids:
        config = json.loads(json.dumps(doc_config))
        config["rootfs"]["diff_ids"] = ids
        config_desc.update(extras.add_bytes(compact_json(config)))
    doc = json.loads(json.dumps(m.document))
    doc["config"] = config_desc
    doc["layers"] = [replaced.get(i, layer) for i, layer in enumerate(m.layers)]
    annotations = dict(doc.get("annotations") or {})
    annotations.setdefault(ANNOTATION_ORIGINAL_MANIFEST, m.descriptor["digest"])
    doc["annotations"] = annotations
    desc = dict(m.descriptor)
    desc.update(extras.add_bytes(compact_json(doc)))
    return desc, config_desc["digest"]


def rewrite_target(extras: ExtraBlobs, target: dict[str, Any], changed: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``target`` with every changed manifest replaced; indexes above a change are rewritten
    (children keep their platform and annotations), anything else stays as stored."""
    done: dict[str, dict[str, Any]] = dict(changed)

    def visit(desc: dict[str, Any], depth: int) -> dict[str, Any]:
        digest = desc["digest"]
        if digest in done:
            new = dict(desc)
            new["digest"], new["size"] = done[digest]["digest"], done[digest]["size"]
            return new
        if depth > 8 or not mt.is_index(desc.get("mediaType", "")) or not extras.exists(digest):
            return desc
        doc = read_json_blob(extras, desc)
        children = doc.get("manifests") or []
        rewritten = [visit(c, depth + 1) for c in children]
        if rewritten == children:
            return desc
        new_doc = json.loads(json.dumps(doc))
        new_doc["manifests"] = rewritten
        new = dict(desc)
        new.update(extras.add_bytes(compact_json(new_doc)))
        done[digest] = {"digest": new["digest"], "size": new["size"]}
        return new

    return visit(target, 0)


__all__ = [
    "ANNOTATION_ORIGINAL_MANIFEST", "ExtraBlobs", "FROM_SNAPSHOTS", "LayerJob", "ManifestChange", "Regenerator",
    "RegeneratedLayer", "SnapshotIndex", "Spool", "compact_json", "plain_directory", "decompress_layer", "layer_jobs",
    "layer_media_type", "new_layer_descriptor", "original_compression", "rewrite_manifest", "rewrite_target",
]
