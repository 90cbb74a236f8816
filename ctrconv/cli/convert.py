"""``ctrconv convert``: images from one file format to another, no containerd root involved."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from ctrconv import api
from ctrconv.run.lines import write_line
from ctrconv.cli import app
from ctrconv.cli._common import JSON_OPTION, QUIET_OPTION, check_layout_output, print_json, skipped_platform_lines


@app.command("convert")
def convert_command(
    input_path: str = typer.Option(
        ..., "-i", "--input", metavar="IN",
        help="OCI layout dir, OCI layout tar, docker-archive tar or skopeo dir: layout (tars may be gzip- or "
             "zstd-compressed); - = stdin.",
    ),
    output: str = typer.Option(..., "-o", "--output", metavar="OUT", help="Output path; '-' streams a tar to stdout."),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", metavar="FORMAT",
        help="One of oci-dir, oci-tar, docker-archive, dir (default: oci-tar for *.tar and -, else oci-dir).",
    ),
    image: Optional[List[str]] = typer.Option(
        None, "--image",
        help="Image of the input to convert (repeatable): a name, an image ID or a unique prefix of 12+ hex digits, "
             "or repo@sha256:DIGEST (default: every named image).",
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Store the input's (single) image under this name."),
    platform: Optional[List[str]] = typer.Option(None, "--platform", help="Platform to convert (repeatable; default: host)."),
    all_platforms: bool = typer.Option(False, "--all-platforms", help="Convert every platform of multi-platform images."),
    index_media_type: Optional[bool] = typer.Option(
        None, "--index-media-type/--no-index-media-type",
        help="Write the top-level mediaType in index.json (default: yes, as containerd 1.7.15+ and 2.x do).",
    ),
    skip_manifest_json: bool = typer.Option(False, "--skip-manifest-json", help="No docker manifest.json in OCI formats."),
    skip_non_distributable: bool = typer.Option(
        False, "--skip-non-distributable",
        help="Leave non-distributable (foreign, e.g. Windows base) layers out; they need not be present.",
    ),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Convert images between OCI layout dir, OCI layout tar, docker-archive and skopeo dir: (every blob
    verified while it streams; the output appears only when complete)."""
    check_layout_output(output, as_json)
    options = api.ConvertOptions(
        image=list(image) if image else None, format=fmt, platform=list(platform or []), all_platforms=all_platforms,
        index_media_type=index_media_type, skip_manifest_json=skip_manifest_json,
        skip_non_distributable=skip_non_distributable, name=name,
    )
    report = api.convert_images(input_path, output, options)
    if as_json:
        print_json(report.to_json())
        return
    exported = report.export
    for i in exported.images:
        if i.decompressed_layers and not quiet:
            write_line(sys.stderr, f"{i.name}: {i.decompressed_layers} zstd layer(s) decompressed; image ID unchanged "
                                   f"{i.image_id}; new manifest {i.manifest}")
    if not quiet and not api.is_stdout(output):
        write_line(sys.stderr, f"converted {len(exported.images)} image(s), {exported.blobs} blobs "
                               f"({api.human_size(exported.bytes)}) from {report.input} to {exported.output} "
                               f"[{exported.format}]")
        for line in skipped_platform_lines(exported.images):
            write_line(sys.stderr, line)
