"""``export`` to an OCI layout, an OCI tar, a docker archive or a skopeo ``dir`` (not a push,
not a containerd root): the command's body, shared by the typer command
(:mod:`ctrconv.cli.export`) and the command lines :mod:`ctrconv.run.shortcut` takes without
typer, and the output rules and report lines the image-writing commands share. No CLI
framework is imported here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ctrconv.errors import UsageError
from ctrconv.run.lines import write_line
from ctrconv.run.options import wait_seconds
from ctrconv.run.outcome import print_json


def export(
    root: Path, output: str, *, namespace: str, images: list[str] | None, fmt: str | None = None,
    platform: list[str] | None = None, all_platforms: bool = False, index_media_type: bool | None = None,
    containerd_version: str | None = None, skip_manifest_json: bool = False, skip_non_distributable: bool = False,
    link: bool = False, verify: bool = True, ignore_lock: bool = False, from_snapshots: str = "auto",
    compression: str | None = None, as_json: bool = False, quiet: bool = False, wait: str | None = None,
) -> None:
    """Write ``images`` (None: every image of the namespace) to ``output``; the report on
    stderr, or as JSON on stdout. The caller has checked the option combinations."""
    from ctrconv import api
    from ctrconv.run.bars import bars

    check_layout_output(output, as_json, fmt, api.EXPORT_FORMATS, extra=", containerd-root")
    with bars(quiet) as progress, api.waiting(wait_seconds(wait)):
        options = api.ExportOptions(
            namespace=api.check_namespace(namespace), image=images, format=fmt,
            platform=list(platform or []), all_platforms=all_platforms, index_media_type=index_media_type,
            containerd_version=containerd_version, skip_manifest_json=skip_manifest_json,
            skip_non_distributable=skip_non_distributable, link=link, verify=verify, ignore_lock=ignore_lock,
            from_snapshots=from_snapshots, compression=compression,
        )
        report = api.export_images(root, output, options, progress=progress)
    for line in rewrite_lines(report, quiet=quiet):
        write_line(sys.stderr, line)
    if as_json:
        print_json(report.to_json())
        return
    if not quiet and not api.is_stdout(output):
        linked = f", {report.linked} hardlinked" if report.linked else ""
        write_line(sys.stderr, f"exported {len(report.images)} image(s), {report.blobs} blobs "
                               f"({api.human_size(report.bytes)}{linked}) to {report.output} [{report.format}]")
        for line in skipped_platform_lines(report.images):
            write_line(sys.stderr, line)


def check_layout_output(output: str | None, as_json: bool, fmt: str | None = None,
                        formats: tuple[str, ...] | None = None, extra: str = "") -> None:
    """The output rules every command writing an image layout shares: a known format, no
    ``--json`` with ``-o -`` (stdout carries the tar), never a tar onto a terminal."""
    from ctrconv import api

    if fmt is not None and formats is not None and fmt not in formats:
        raise UsageError(f"unknown format {fmt!r} (choose from {', '.join(formats)}{extra})")
    if as_json and output is not None and api.leads_to_stdout(output):
        raise UsageError("--json cannot be combined with -o - (stdout carries the tar)")
    if api.is_stdout(output) and sys.stdout.isatty():
        raise UsageError("refusing to write a tar archive to a terminal", hint="redirect stdout or use -o FILE")


def skipped_platform_lines(images: Any) -> list[str]:
    """One line per exported image some of whose platforms were left out."""
    return [f"  {i.name}: skipped platforms {', '.join(i.skipped_platforms)}" for i in images if i.skipped_platforms]



def rewrite_lines(report, *, quiet: bool = False) -> list[str]:
    """What the export changed: layers regenerated, copied or decompressed, and image IDs changed.

    Layers regenerated from snapshots or copied from a stored blob of the same tar (new blob
    digests, maybe a new image ID) are said even with ``-q``, like a warning; zstd layers
    decompressed for a docker archive (image ID kept) only without it."""
    lines = []
    reproduced = {c["manifest"] for c in report.rewritten if c["manifest"] == c["original_manifest"]}
    for i in report.images:
        done = []
        if i.regenerated_layers:
            done.append(f"{i.regenerated_layers} layer(s) regenerated from snapshots")
        if i.copied_layers:
            done.append(f"{i.copied_layers} layer(s) never fetched into the namespace copied from a stored blob "
                        "(their own, held by another namespace, or one of the same tar)")
        if i.decompressed_layers and not quiet:
            done.append(f"{i.decompressed_layers} zstd layer(s) decompressed")
        if not done:
            continue
        idline = "image ID changed (below)" if i.image_id != i.original_image_id else f"image ID unchanged {i.image_id}"
        unchanged = i.manifest in reproduced or i.original_digest is None  # (the stored target kept)
        manifest = f"manifest unchanged {i.manifest} (every layer blob byte for byte the original)" \
            if unchanged else f"new manifest {i.manifest}"
        lines.append(f"{i.name}: {', '.join(done)}; {idline}; {manifest}")
    for change in report.image_ids_changed:
        lines.append(f"image ID {change['from']} is now {change['to']} ({', '.join(change['names'])}): a regenerated "
                     "layer differs from the config's diff ID; the original manifest digest is kept in annotation "
                     "io.ctrconv.original-manifest")
    return lines
