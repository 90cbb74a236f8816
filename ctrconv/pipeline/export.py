"""Export and convert: image source -> resolve -> select platforms -> plan -> copy+verify -> name.

One pipeline for every layout transfer. The source is a containerd root
(:class:`~ctrconv.sources.containerd_root.ContainerdRootSource`, ``export``) or any file
source (OCI layout dir or tar, docker-archive, skopeo ``dir:``: ``convert``); the sink any
layout format (:mod:`ctrconv.sinks`). The stages live beside this module:
:mod:`.export_plan` (plan and validate), :mod:`.export_rewrite` (layers written again from
snapshots, zstd decompressed for docker archives), :mod:`.export_report` (options, report).

Behaviour follows ``ctr images export`` (containerd 1.6.20 ``images/archive/exporter.go``):

* platforms: for an index, children whose platform the matcher rejects are skipped (host
  platform by default, ``platforms.DefaultStrict()``; ``--platform`` values are matched like
  ``platforms.Ordered``); children without a platform are always taken; the index blob itself
  is exported unchanged, so it may reference manifests that are not in the output;
* ``manifest.json`` gets one manifest per image: the best-ranked platform match;
* every blob is verified (digest and size) while it is copied.

Unlike ctr, nothing is written until every image has been resolved and planned and all
index/manifest/config JSON has been read, verified and validated; missing content for a
selected platform fails the export up front, naming the platforms and digests. Only a root
source can write layers again from snapshots; a file source's missing blob is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

from ctrconv.containerd import schema as K
from ctrconv.containerd.records import ImageRecord
from ctrconv.digest import Digest
from ctrconv.errors import NAMES_NO_IMAGE, UsageError
from ctrconv.image.model import BlobSource
from ctrconv.image.protocols import ImageSource
from ctrconv.pipeline import regenerate as regen
from ctrconv.pipeline.completeness import LabelsOf, SnapshotExists, lookups_in
from ctrconv.pipeline.export_plan import (
    Planned, SnapshotLayers, blob_set, exported, image_report, plan_images, require_image_configs,
)
from ctrconv.pipeline.export_report import ExportOptions, ExportReport, ImageReport, change_json
from ctrconv.pipeline.export_rewrite import (
    RegeneratedSource, decompress_zstd_layers, regenerate_for_copy, regenerate_layers,
)
from ctrconv.pipeline.resolve import EntryImages, resolve_images, unnamed_by_id
from ctrconv.sinks import DIRECTORY_FORMATS, Sink, open_sink, resolve_sink_output
from ctrconv.sinks.oci_dir import check_target_dir
from ctrconv.sources.containerd_root import ContainerdRootSource
from ctrconv.progress import Progress, Stage, stage
from ctrconv.streams import CHUNK, PendingVerdicts, VerifyingReader

#: the names other modules (``commit``, the API) import from here, besides those defined here
__all__ = [
    "CTR_LINES", "ExportOptions", "ExportReport", "ImageReport", "Planned", "RegeneratedSource",
    "SnapshotLayers", "decompress_zstd_layers", "export", "image_report", "plan_images", "regenerate_for_copy",
    "regenerate_layers", "write_export",
]


class _ProgressReader:
    """Passes reads through and advances the stage by their sizes; accounts skipped bytes at the end."""

    def __init__(self, reader: VerifyingReader, size: int, step: Stage) -> None:
        self._reader = reader
        self._size = size
        self._step = step
        self._seen = 0

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n)
        self._seen += len(data)
        if data:
            self._step.advance(len(data))
        return data

    def verify_to_end(self) -> None:
        while self.read(CHUNK):
            pass

    def copy_to_fd(self, out_fd: int, on_chunk: Callable[[int], object] | None = None, *,
                   verdicts: PendingVerdicts | None = None) -> bool:
        """:meth:`VerifyingReader.copy_to_fd`, reporting progress per step."""
        return self._reader.copy_to_fd(out_fd, self._stepper(on_chunk), verdicts=verdicts)

    def verify_mapped(self, on_chunk: Callable[[int], object] | None = None, *,
                      verdicts: PendingVerdicts | None = None) -> bool:
        """:meth:`VerifyingReader.verify_mapped`, reporting progress per step."""
        return self._reader.verify_mapped(self._stepper(on_chunk), verdicts=verdicts)

    def _stepper(self, on_chunk: Callable[[int], object] | None) -> Callable[[int], None]:
        def step(n: int) -> None:
            self._seen += n
            self._step.advance(n)
            if on_chunk is not None:
                on_chunk(n)

        return step

    def finish(self) -> None:
        if self._seen < self._size:
            self._step.advance(self._size - self._seen)


#: containerd lines whose ``ctr images export`` output ctrconv can reproduce
CTR_LINES = ("1.6", "1.7", "2.x")


def ctr_copies_source_labels(line: str) -> bool:
    """Whether ``ctr images export`` of ``line`` copies the target blob's
    ``containerd.io/distribution.source.*`` labels into its index.json annotations
    (``copySourceLabels``, containerd 1.7.x and 2.x; not 1.6)."""
    return line != "1.6"


def source_annotations(source: ContainerdRootSource, record: ImageRecord) -> dict[str, str]:
    """The target blob's distribution-source labels in the source's namespace, as ctr 1.7+ exports them."""
    labels = source.blob_labels(record.target.digest)
    return {k: v for k, v in labels.items() if k.startswith(K.LABEL_DISTRIBUTION_SOURCE)}


def ctr_writes_index_media_type(line: str) -> bool:
    """Whether ``ctr images export`` of containerd ``line`` sets index.json's ``mediaType``.

    1.7.15+ and 2.x set it; 1.6.20 (Debian 12) does not. The line is the one that wrote the
    source root (:attr:`MetadataDB.writer_line`), so an export matches the node's own ``ctr``.
    A 1.6.31+ node (which also sets it) cannot be told from 1.6.20 by its meta.db: use
    ``--index-media-type`` there.
    """
    return line != "1.6"


def write_export(
    content: BlobSource,
    planned: Sequence[Planned],
    sink: Sink,
    progress: Progress | None = None,
    *,
    skip_non_distributable: bool = False,
    stage_name: str = "export",
) -> tuple[int, int]:
    """Name, copy+verify every blob, commit; abort the sink on any failure (a signal included).
    ``progress`` gets one stage, ``stage_name``, of the bytes of every blob. Returns (blobs, bytes)."""
    where = getattr(content, "blob_path", None)  # a root's blob files (``--link``); a file source has none
    try:
        blobs = blob_set(planned, sink.single_manifest, skip_non_distributable)
        total = sum(d["size"] for d in blobs)
        with stage(progress, stage_name, total) as step:
            _write_blobs(content, blobs, planned, sink, step, where)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return len(blobs), total


def _write_blobs(content: BlobSource, blobs: Sequence[dict[str, Any]], planned: Sequence[Planned], sink: Sink,
                 step: Stage, where: Callable[[Digest], Path] | None) -> None:
    """Names first, then every blob copied and verified as it flows."""
    sink.add_names([exported(p) for p in planned])
    for desc in blobs:
        digest = Digest.parse(desc["digest"])
        with content.open(digest) as stream:
            reader = _ProgressReader(
                VerifyingReader(stream, digest, desc["size"], what=f"blob {digest}"), desc["size"], step
            )
            sink.add_blob(desc, reader, source_path=where(digest) if where is not None else None)
            reader.finish()


@dataclass
class _Selected:
    """What the source side decided before planning: the images, where their blobs come from,
    whose ``ctr`` to match, and (a root) what covers missing layers."""

    records: list[ImageRecord]
    content: BlobSource
    line: str
    source_annotations: dict[str, dict[str, str]] = field(default_factory=dict)
    lookups: tuple[LabelsOf, SnapshotExists] | None = None
    snapshot_layers: SnapshotLayers | None = None


def _check_line(line: str) -> str:
    if line not in CTR_LINES:
        raise UsageError(f"unknown containerd line {line!r} (choose from {', '.join(CTR_LINES)})")
    return line


def _select_root(source: ContainerdRootSource, options: ExportOptions, fmt: str) -> _Selected:
    """A root: ``--image`` resolved among its records, its namespace's content only (another
    namespace's blobs are not this one's to export: ``ctr`` says not found), the line that wrote
    it, and its snapshots to write gone layers again from."""
    records = resolve_images(source, source.store, source.namespace, options.image)
    if fmt == "docker-archive":  # ``docker save <ID>``: an image asked for by ID only is unnamed
        records = unnamed_by_id(source, source.store, source.namespace, options.image, records)
    line = _check_line(options.containerd_version or source.writer_line)
    # Docker's own exporter copies the distribution-source labels whatever its containerd
    annotations = {r.name: source_annotations(source, r) for r in records} \
        if ctr_copies_source_labels(line) or fmt == "docker-archive" else {}
    meta = source.meta  # what only the open meta.db answers: content labels and snapshots
    lookups = lookups_in(meta, source.namespace)
    snapshot_layers = None
    if options.from_snapshots != "never":
        snapshots = regen.SnapshotIndex(source.root, meta, source.namespace, ignore_lock=source.ignore_lock)
        snapshot_layers = SnapshotLayers(source.content, options.from_snapshots, snapshots, lookups[0],
                                         options.skip_non_distributable)
    return _Selected(records, source.content, line, annotations, lookups, snapshot_layers)


def _select_file(source: ImageSource, options: ExportOptions) -> _Selected:
    """A file source: ``--image`` resolved among its named entries (names, image IDs, digests,
    as for a root); index.json written like the newest ``ctr`` unless a line is asked for."""
    if options.link:
        raise UsageError("--link hard-links blobs of a containerd root; a file input is copied")
    entries = source.entries()
    if options.name is not None:  # ``convert --name``: a skopeo dir: layout, say, names no image
        images = len({str(e.descriptor.get("digest")) for e in entries})  # (one image, several names: one)
        if images != 1:
            raise UsageError(f"--name needs an input with exactly one image; it has {images}")
        entries = [dataclasses.replace(entries[0], name=options.name)]
    images = EntryImages(entries)
    if not list(images.images("")):
        raise UsageError(NAMES_NO_IMAGE,
                         hint="name its one image with --name")
    records = resolve_images(images, source, "", options.image)
    return _Selected(records, source, _check_line(options.containerd_version or CTR_LINES[-1]))


def _check_options(options: ExportOptions, fmt: str) -> None:
    """Refuse option combinations the format cannot honour, before any work."""
    if options.skip_non_distributable and fmt == "docker-archive":
        raise UsageError("docker load needs every layer of manifest.json; --skip-non-distributable needs oci-dir or oci-tar")
    if not options.link and not options.verify:
        raise UsageError("--no-verify only applies to --link (copied blobs are always verified)")
    if options.from_snapshots not in regen.FROM_SNAPSHOTS:
        raise UsageError(f"unknown --from-snapshots value {options.from_snapshots!r} "
                         f"(choose from {', '.join(regen.FROM_SNAPSHOTS)})")
    if options.compression is not None and options.compression not in regen.COMPRESSIONS:
        raise UsageError(f"unknown --compression {options.compression!r} (choose from {', '.join(regen.COMPRESSIONS)})")
    if fmt == "docker-archive" and options.compression == "zstd":
        raise UsageError("a docker archive holds no zstd layers (docker load before 25 cannot read them); "
                         "use --compression gzip or none, or an OCI format")


def export(
    source: ImageSource,
    out: str | Path | BinaryIO,
    options: ExportOptions,
    progress: Progress | None = None,
) -> ExportReport:
    """Export ``options.image`` (or all images) of ``source`` to ``out``.

    ``source`` is a :class:`ContainerdRootSource` opened with ``keep_open=True`` (``export``)
    or any file source (``convert``); ``out`` is a path, ``-`` (stdout) or a binary stream (tar
    formats). The source is only read.
    """
    target, fmt = resolve_sink_output(out, options.format)
    spool: regen.Spool | None = None
    sink: Sink | None = None
    try:
        _check_options(options, fmt)
        # a docker archive, and a dir: layout without --all-platforms, hold the chosen manifest only
        single_manifest = fmt == "docker-archive" or (fmt == "dir" and not options.all_platforms)
        if fmt in DIRECTORY_FORMATS and target.path is not None:
            check_target_dir(target.path)  # before any work (regenerating layers can take a while)
        chosen = _select_root(source, options, fmt) if isinstance(source, ContainerdRootSource) \
            else _select_file(source, options)
        index_media_type = options.index_media_type
        if index_media_type is None and fmt != "docker-archive":
            index_media_type = ctr_writes_index_media_type(chosen.line)
        planned = plan_images(chosen.content, chosen.records, options, single_manifest, chosen.lookups,
                              chosen.snapshot_layers)
        if fmt == "docker-archive":
            require_image_configs(planned)
        for p in planned:
            p.source_annotations = chosen.source_annotations.get(p.record.name, {})
        content: Any = chosen.content
        changes: dict[str, regen.ManifestChange] = {}
        spool_near = target.path.parent if target.path is not None else None
        if any(p.jobs for p in planned):
            spool = regen.Spool(spool_near)
            content, planned = regenerate_layers(content, planned, options, single_manifest, spool, changes,
                                                 avoid_zstd=fmt == "docker-archive")
        if fmt == "docker-archive" and any(
                regen.is_zstd(d.get("mediaType", "")) for p in planned for m in p.plan.manifests for d in m.layers):
            spool = spool or regen.Spool(spool_near)
            content, planned = decompress_zstd_layers(content, planned, options, spool, changes)
        sink = open_sink(
            fmt, target.target(), index_media_type=index_media_type, manifest_json=not options.skip_manifest_json,
            link=options.link, verify_links=options.verify, all_platforms=options.all_platforms,
        )
        blobs, total = write_export(content, planned, sink, progress,
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
        namespace=getattr(source, "namespace", ""),
        images=[image_report(p, changes) for p in planned],
        blobs=blobs,
        bytes=total,
        linked=getattr(sink, "linked", 0),
        rewritten=[change_json(c) for c in changes.values()],
    )
