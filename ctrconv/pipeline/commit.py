"""``ctrconv commit``: a container's writable layer as a new image, from a root with no daemon.

``nerdctl commit`` and ``docker commit`` need the daemon that runs the container; a dead or
crashed node has none. The container's record (``v1/<ns>/containers/<id>``) names its image and
its active snapshot; this module

1. finds that snapshot's files: overlayfs keeps the container's changes in its upper
   directory (``snapshots/<id>/fs``), native keeps a full tree that is diffed against the
   parent snapshot the way containerd's walking differ does (:mod:`ctrconv.layers.regenerate`,
   the one tar writer: deterministic, streamed, hashed while written);
2. picks the image manifest the container was made from: the one whose layer chain ends at the
   snapshot's parent (so the platform is the container's, whatever the host is);
3. plans that manifest like ``export`` does, so base layers whose blobs were let go
   (``discard_unpacked_layers``) are written again from their snapshots;
4. writes the new layer on top: config with the diff ID and a history entry appended
   (``created``, ``created_by: ctrconv commit``, ``comment``, ``author``), a new manifest
   of the base manifest's type, named ``--ref``, into any file sink (oci-dir, oci-tar,
   docker-archive, dir).

The root is only read. The commit time is now, or ``SOURCE_DATE_EPOCH`` when set (the same
container then commits to the same image ID).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ctrconv.containerd.content import NamespaceContent
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.containerd.records import ContainerRecord, ImageRecord, Target
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.errors import CtrconvError, MissingContentError, NotFoundError, UsageError
from ctrconv.pipeline.completeness import lookups_in
from ctrconv.layers.chain import chain_ids
from ctrconv.layers.layerblob import COMPRESSIONS, WrittenLayer
from ctrconv.layers.regenerate import count_entries, write_layer
from ctrconv.oci import mediatypes as mt
from ctrconv.oci import reference
from ctrconv.pipeline import regenerate as regen
from ctrconv.pipeline.export import ExportOptions, ctr_writes_index_media_type, write_export
from ctrconv.pipeline.export_plan import Planned, SnapshotLayers, plan_images, require_image_configs
from ctrconv.pipeline.export_rewrite import decompress_zstd_layers, regenerate_layers
from ctrconv.progress import Progress, stage
from ctrconv.image.plan import PlannedManifest, plan_image, platform_string, read_json_blob
from ctrconv.sinks import DIRECTORY_FORMATS, open_sink, resolve_sink_output
from ctrconv.sinks.oci_dir import check_target_dir

#: ``created_by`` of the history entry a commit appends
CREATED_BY = "ctrconv commit"
#: the snapshot Docker puts between an image and a container (``<container ID>-init``)
DOCKER_INIT_SUFFIX = "-init"
#: OCI annotations naming the image a committed manifest was built on
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"


@dataclass
class CommitOptions:
    """Which container, and what to call and how to write the image made from it."""

    namespace: str = "default"
    container: str = ""
    #: the new image's name (default: the base image's repository, tag ``commit-<container>``)
    ref: str | None = None
    format: str | None = None
    #: compression of the new layer (base layers regenerated from snapshots keep theirs)
    compression: str = "gzip"
    message: str | None = None
    author: str | None = None
    ignore_lock: bool = False


@dataclass
class CommitReport:
    """What was written (the ``--json`` document)."""

    format: str
    output: str
    namespace: str
    container: str
    name: str
    manifest: str
    image_id: str
    created: str
    snapshotter: str
    snapshot: str
    layer: dict[str, Any]
    base: dict[str, Any]
    blobs: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ContainerLayer:
    """Where a container's changes are: its active snapshot, and the chain ID below it."""

    container: ContainerRecord
    snapshotter: str
    key: str
    #: the chain ID of the image layers the snapshot sits on (None: an image without layers)
    base_chain: str | None
    tree: Path
    #: native: the parent snapshot's full tree (None for no parent); overlayfs: unused
    parent_tree: Path | None


def docker_containers(meta: MetadataDB, namespace: str) -> list[tuple[str, str]]:
    """(snapshotter, container ID) of Docker's containers on the containerd image store: Docker
    keeps no containerd record for a container that is not running, only its snapshot, keyed
    by the container ID on a committed ``<id>-init`` snapshot (hosts, resolv.conf, ...)."""
    found = []
    for sn in regen.TREE_SNAPSHOTTERS:
        found += [(sn, r.key) for r in meta.snapshots(namespace, sn) if r.parent == r.key + DOCKER_INIT_SUFFIX]
    return found


def find_container(meta: MetadataDB, namespace: str, container_id: str) -> ContainerRecord:
    """The container's record, else a Docker container's snapshot; by its ID or a unique
    prefix of 12+ characters (as ``crictl ps`` and ``docker ps`` show IDs)."""
    record = meta.container(namespace, container_id)
    if record is not None:
        return record
    records = meta.containers(namespace)
    docker = docker_containers(meta, namespace)

    def matching(key: str) -> bool:
        return key == container_id or (len(container_id) >= 12 and key.startswith(container_id))

    matches: list[tuple[str | None, str]] = [(None, key) for key in records if matching(key)]
    matches += [(sn, key) for sn, key in docker if matching(key) and key not in records]
    if len(matches) == 1:
        sn, key = matches[0]
        found = meta.container(namespace, key) if sn is None else ContainerRecord(namespace, key, "", sn, key)
        assert found is not None
        return found
    if matches:
        raise UsageError(f"container {container_id!r} is ambiguous in namespace {namespace}: "
                         f"{', '.join(k for _, k in matches)}")
    known = records + [key for _, key in docker]
    listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "") if known else "none"
    raise NotFoundError(f"container {container_id!r} not found in namespace {namespace} (containers: {listed})")


def container_layer(root: ContainerdRoot, meta: MetadataDB, container: ContainerRecord, *,
                    ignore_lock: bool = False) -> ContainerLayer:
    """The container's active snapshot as a directory tree; one clear error when it is gone."""
    where = f"container {container.id}"
    if not container.snapshot_key or not container.snapshotter:
        raise CtrconvError(f"{where} has no snapshot (it was created without a root filesystem from an image)")
    sn = container.snapshotter
    if sn not in regen.TREE_SNAPSHOTTERS:
        raise CtrconvError(f"{where} uses the {sn} snapshotter; ctrconv commits containers of "
                           f"{', '.join(regen.TREE_SNAPSHOTTERS)} only (their snapshots are plain directory trees)")
    record = meta.snapshot(container.namespace, sn, container.snapshot_key)
    if record is None:
        raise CtrconvError(f"{where} has no snapshot: {sn} snapshot {container.snapshot_key!r} is not in the "
                           f"metadata (removed with the container's rootfs?)")
    with root.open_snapshotter(sn, ignore_lock=ignore_lock) as backend:
        found = next((b for b in backend.snapshots() if b.key == record.name), None) if backend else None
    tree = root.snapshot_fs(sn, found.id) if found is not None else None
    if tree is None or not regen.plain_directory(tree, root.snapshots_dir(sn)):
        raise CtrconvError(f"{where} has no snapshot: the {sn} snapshotter holds no directory for "
                           f"{record.name!r}")
    parent_tree = None
    if sn != "overlayfs" and record.parent:
        parent_tree = regen.SnapshotIndex(root, meta, container.namespace, ignore_lock=ignore_lock).find(sn, record.parent)
        if parent_tree is None:
            raise CtrconvError(f"{where}: its parent snapshot {record.parent} has no directory to diff against")
    base_chain = record.parent or None
    if base_chain == record.key + DOCKER_INIT_SUFFIX:  # Docker's init layer is not the container's
        init = meta.snapshot(container.namespace, sn, base_chain)
        base_chain = init.parent or None if init is not None else None
    return ContainerLayer(container, sn, container.snapshot_key, base_chain, tree, parent_tree)


def base_manifest(content: Any, image: ImageRecord, parent: str | None) -> PlannedManifest:
    """The manifest of ``image`` whose layer chain ends at ``parent``: the one the container's
    root filesystem was unpacked from (platform included)."""
    plan = plan_image(content, image.target.descriptor(), None)
    seen = []
    for m in plan.manifests:
        if not content.exists(m.config["digest"]) or not mt.is_config(m.config.get("mediaType", "")):
            continue
        diff_ids = (read_json_blob(content, m.config).get("rootfs") or {}).get("diff_ids") or []
        top = chain_ids(diff_ids)[-1] if diff_ids else None
        if top == parent:
            return m
        seen.append(platform_string(m.platform) or m.descriptor["digest"])
    raise CtrconvError(
        f"image {image.name}: no manifest of it ({', '.join(seen) or 'none readable'}) has the layers the container "
        f"was created on (chain {parent}); was the name moved to another image since?")


def container_image(meta: MetadataDB, content: Any, container: ContainerRecord,
                    base_chain: str | None) -> tuple[ImageRecord, PlannedManifest]:
    """The container's image and its manifest under the container. A Docker container names
    no image here: the namespace's image with a manifest on that chain is taken (a tagged name
    before ``sha256:``/``moby-dangling@`` ones)."""
    ns = container.namespace
    if container.image:
        image = meta.image(ns, container.image)
        if image is None:
            raise CtrconvError(f"container {container.id}: its image {container.image!r} is not in namespace {ns} "
                               "(removed after the container was created?); commit needs the image's manifest "
                               "and config", hint="import or pull the image again")
        return image, base_manifest(content, image, base_chain)
    candidates = sorted(meta.images(ns), key=lambda i: (i.name.startswith(("sha256:", "moby-dangling@")), i.name))
    for image in candidates:
        try:
            return image, base_manifest(content, image, base_chain)
        except CtrconvError:
            continue
    raise CtrconvError(f"container {container.id}: no image of namespace {ns} has the layers it was created on "
                       f"(chain {base_chain}); was its image removed?", hint="import or pull the image again")


def default_name(names: list[str], container_id: str) -> str:
    """``<base repository>:commit-<container>`` (a 64-hex Docker/CRI ID shortened to 12, as
    ``docker ps`` shows it; container IDs are valid tags), from the first
    of the image's ``names`` that has a repository: a CRI container may name its image by
    the ``sha256:<id>`` alias, whose repo:tag siblings are then used."""
    for name in names:
        if name.startswith("sha256:"):
            continue
        try:
            repository = reference.parse_docker_ref(name).name
        except UsageError:
            continue
        short = container_id[:12] if re.fullmatch(r"[0-9a-f]{64}", container_id) else container_id
        name = f"{repository}:commit-{short}"
        try:
            reference.parse_reference(name)
        except UsageError:
            raise UsageError(f"container ID {container_id!r} makes no valid tag; give --ref NAME") from None
        return name
    raise UsageError(f"the container's image {names[0]!r} has no repository to name the commit after; give --ref NAME")


def created_time() -> str:
    """RFC 3339 UTC with nanoseconds, as Go marshals ``time.Now().UTC()``; ``SOURCE_DATE_EPOCH``
    (whole seconds) wins, for reproducible commits."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            ns = int(epoch) * 1_000_000_000
        except ValueError:
            raise UsageError(f"SOURCE_DATE_EPOCH must be a number of seconds, not {epoch!r}") from None
    else:
        ns = time.time_ns()
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def commit_config(base: dict[str, Any], diff_id: str, created: str, comment: str, author: str | None) -> dict[str, Any]:
    """The base config with the new layer: diff ID and history entry appended, ``created``
    (and ``author``) set, everything else (the container config: Cmd, Env, ...) kept."""
    config = json.loads(json.dumps(base))
    config["created"] = created
    if author:
        config["author"] = author
    rootfs = config.setdefault("rootfs", {"type": "layers"})
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), diff_id]
    entry: dict[str, Any] = {"created": created, "created_by": CREATED_BY}
    if author:
        entry["author"] = author
    entry["comment"] = comment
    config["history"] = [*(config.get("history") or []), entry]
    return config


def tree_data_bytes(top: Path) -> int:
    """Bytes of the regular files below ``top``, each inode once: the file contents an
    overlayfs upper directory's layer holds (the total of its progress stage)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def write_container_layer(layer: ContainerLayer, compression: str, spool: regen.Spool,
                          extras: regen.ExtraBlobs, progress: Progress | None = None) -> WrittenLayer:
    """The container's changes as a layer blob in ``spool`` (served by ``extras``), as one
    ``layer`` stage. overlayfs: of the upper directory's file bytes (all of them go into the
    layer). native: of the entries of the container's full tree, each compared with its parent
    snapshot (the diff's size is only known once it is done, the walk's length up front)."""
    fd, path = spool.new_file()
    try:
        if layer.snapshotter == "overlayfs":
            with stage(progress, "layer", tree_data_bytes(layer.tree)) as step:
                written = write_layer(fd, compression, overlay_fs=layer.tree, on_data=step.advance)  # type: ignore[arg-type]
        else:
            with stage(progress, "layer", count_entries(layer.tree), "records") as step:
                written = write_layer(fd, compression, tree=layer.tree, parent_tree=layer.parent_tree,  # type: ignore[arg-type]
                                      on_entry=step.advance)
        os.fsync(fd)
    finally:
        os.close(fd)
    extras.add_file(written.digest, path, written.size)
    return written


def _plan_base(root: ContainerdRoot, meta: MetadataDB, content: Any, image: ImageRecord, base: PlannedManifest,
               options: CommitOptions, spool: regen.Spool, changes: dict[str, regen.ManifestChange],
               ) -> tuple[regen.ExtraBlobs, PlannedManifest]:
    """The base manifest planned as ``export`` plans it: layers whose blobs were let go are
    written again from their snapshots (the manifest, maybe the config, then change)."""
    desc = base.descriptor
    record = ImageRecord(image.namespace, image.name, Target(desc["mediaType"], desc["digest"], desc["size"]))
    export_options = ExportOptions(namespace=options.namespace, image=[image.name], ignore_lock=options.ignore_lock)
    lookups = lookups_in(meta, options.namespace)
    snapshots = regen.SnapshotIndex(root, meta, options.namespace, ignore_lock=options.ignore_lock)
    layers = SnapshotLayers(content, "auto", snapshots, lookups[0], False)
    planned = plan_images(content, [record], export_options, True, lookups, layers)
    require_image_configs(planned)
    if planned[0].jobs:
        extras, planned = regenerate_layers(content, planned, export_options, True, spool, changes)
    else:
        extras = regen.ExtraBlobs(content)
    chosen = planned[0].chosen
    assert chosen is not None  # single_manifest planning refuses an image without one
    return extras, chosen


def new_image(extras: regen.ExtraBlobs, base: PlannedManifest, written: WrittenLayer, *, compression: str,
              namespace: str, name: str, base_name: str, config: dict[str, Any]) -> Planned:
    """Config, manifest (the base manifest's type; OCI ones name their base) and the image
    record naming it, planned over ``extras`` (so the new documents are schema-checked)."""
    config_desc = {"mediaType": base.config["mediaType"], **extras.add_bytes(regen.compact_json(config))}
    manifest_type = base.document.get("mediaType") or base.descriptor["mediaType"]
    layer = {"mediaType": regen.layer_media_type("", manifest_type, compression),  # type: ignore[arg-type]
             "digest": written.digest, "size": written.size}
    doc: dict[str, Any] = {"schemaVersion": 2}
    if base.document.get("mediaType"):
        doc["mediaType"] = manifest_type
    doc["config"] = config_desc
    doc["layers"] = [*base.layers, layer]
    if manifest_type != mt.DOCKER_MANIFEST:
        doc["annotations"] = {ANNOTATION_BASE_DIGEST: base.descriptor["digest"], ANNOTATION_BASE_NAME: base_name}
    desc = {"mediaType": manifest_type, **extras.add_bytes(regen.compact_json(doc))}
    record = ImageRecord(namespace, name, Target(manifest_type, desc["digest"], desc["size"]))
    plan = plan_image(extras, desc)
    if plan.missing or len(plan.manifests) != 1:
        raise CtrconvError(f"the committed image {name} is incomplete: {', '.join(d['digest'] for d in plan.missing)}")
    return Planned(record, plan, plan.manifests[0])


def commit_name(ref: str | None, meta: MetadataDB, image: ImageRecord, container_id: str) -> str:
    """``--ref`` normalised as nerdctl does (``foo`` -> ``docker.io/library/foo:latest``),
    else :func:`default_name` over the image's name and the names sharing its target."""
    if ref is None:
        try:
            return default_name([image.name], container_id)
        except UsageError:
            siblings = sorted(i.name for i in meta.images(image.namespace)
                              if i.target.digest == image.target.digest and i.name != image.name)
            return default_name([image.name, *siblings], container_id)
    parsed = reference.parse_docker_ref(ref)
    if parsed.digest is not None:
        raise UsageError(f"--ref {ref!r}: a new image is named by a tag, not a digest")
    return str(parsed)


@dataclass
class _Source:
    """What the root gave: the container, its layer written, the base planned."""

    container: ContainerRecord
    layer: ContainerLayer
    image: ImageRecord
    name: str
    base: PlannedManifest
    chosen: PlannedManifest
    extras: regen.ExtraBlobs
    written: WrittenLayer
    writer_line: str


def _read_root(root: ContainerdRoot, options: CommitOptions, spool: regen.Spool,
               changes: dict[str, regen.ManifestChange], progress: Progress | None = None) -> _Source:
    """Everything taken from the root (one metadata view): errors before any output exists."""
    ns = options.namespace
    with root.open_metadata(ignore_lock=options.ignore_lock) as meta:
        container = find_container(meta, ns, options.container)
        layer = container_layer(root, meta, container, ignore_lock=options.ignore_lock)
        content: Any = NamespaceContent.of(meta, root.content, ns)
        image, base = container_image(meta, content, container, layer.base_chain)
        name = commit_name(options.ref, meta, image, container.id)
        extras, chosen = _plan_base(root, meta, content, image, base, options, spool, changes)
        written = write_container_layer(layer, options.compression, spool, extras, progress)
        return _Source(container, layer, image, name, base, chosen, extras, written, meta.writer_line)


def commit(root: ContainerdRoot, out: str | Path | BinaryIO, options: CommitOptions,
           progress: Progress | None = None) -> CommitReport:
    """Commit ``options.container`` of ``options.namespace`` to ``out`` (path, ``-`` or stream).
    The root is only read; a failure leaves no output behind."""
    if options.compression not in COMPRESSIONS:
        raise UsageError(f"unknown --compression {options.compression!r} (choose from {', '.join(COMPRESSIONS)})")
    target, fmt = resolve_sink_output(out, options.format)
    spool: regen.Spool | None = None
    sink = None
    changes: dict[str, regen.ManifestChange] = {}
    try:
        if fmt == "docker-archive" and options.compression == "zstd":
            raise UsageError("a docker archive holds no zstd layers (docker load before 25 cannot read them); "
                             "use --compression gzip or none, or an OCI format")
        if fmt in DIRECTORY_FORMATS and target.path is not None:
            check_target_dir(target.path)
        spool = regen.Spool(target.path.parent if target.path is not None else None)
        src = _read_root(root, options, spool, changes, progress)
        created = created_time()
        comment = options.message or f"container {options.namespace}/{src.container.id}"
        config = commit_config(read_json_blob(src.extras, src.chosen.config), src.written.diff_id, created, comment,
                               options.author)
        planned = [new_image(src.extras, src.chosen, src.written, compression=options.compression,
                             namespace=options.namespace, name=src.name, base_name=src.image.name, config=config)]
        image_id = planned[0].plan.manifests[0].config["digest"]
        extras: Any = src.extras
        if fmt == "docker-archive" and any(regen.is_zstd(d.get("mediaType", "")) for d in planned[0].plan.manifests[0].layers):
            extras, planned = decompress_zstd_layers(extras, planned, ExportOptions(namespace=options.namespace),
                                                     spool, changes)
        index_media_type = None if fmt == "docker-archive" else ctr_writes_index_media_type(src.writer_line)
        sink = open_sink(fmt, target.target(), index_media_type=index_media_type)
        blobs, total = write_export(extras, planned, sink, progress, stage_name="commit")
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        target.close()
        if spool is not None:
            spool.close()
    return _report(src, planned[0], fmt, target.label, options, created, image_id, blobs, total, changes)


def _report(src: _Source, planned: Planned, fmt: str, output: str, options: CommitOptions, created: str,
            image_id: str, blobs: int, total: int, changes: dict[str, regen.ManifestChange]) -> CommitReport:
    chosen = planned.chosen
    assert chosen is not None
    made = [layer.how for c in changes.values() for layer in c.layers]
    return CommitReport(
        format=fmt, output=output, namespace=options.namespace, container=src.container.id, name=src.name,
        manifest=chosen.descriptor["digest"], image_id=image_id, created=created,
        snapshotter=src.layer.snapshotter, snapshot=src.layer.key,
        layer={"digest": src.written.digest, "diff_id": src.written.diff_id, "size": src.written.size,
               "tar_size": src.written.tar_size, "media_type": chosen.layers[-1]["mediaType"],
               "compression": src.written.compression},
        base={"name": src.image.name, "platform": platform_string(src.base.platform),
              "manifest": src.base.descriptor["digest"], "image_id": src.base.config["digest"],
              "layers": len(src.base.layers), "regenerated_layers": made.count("regenerated"),
              "copied_layers": made.count("copied"),
              "rewritten_manifest": src.chosen.descriptor["digest"]
              if src.chosen.descriptor["digest"] != src.base.descriptor["digest"] else None},
        blobs=blobs, bytes=total,
    )


__all__ = [
    "ANNOTATION_BASE_DIGEST", "ANNOTATION_BASE_NAME", "CREATED_BY", "DOCKER_INIT_SUFFIX", "CommitOptions",
    "CommitReport", "ContainerLayer", "base_manifest", "commit", "commit_config", "commit_name", "container_image",
    "container_layer", "created_time", "default_name", "docker_containers", "find_container", "new_image",
    "tree_data_bytes", "write_container_layer",
]
