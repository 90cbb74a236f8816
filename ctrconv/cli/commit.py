"""``ctrconv commit``: a container's writable layer as a new image (offline ``nerdctl commit``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ctrconv import api
from ctrconv.run.lines import write_line
from ctrconv.api import EXPORT_FORMATS as FORMATS
from ctrconv.cli import app
from ctrconv.run.bars import bars
from ctrconv.cli._common import (
    IGNORE_LOCK_OPTION,
    JSON_OPTION,
    NAMESPACE_OPTION,
    QUIET_OPTION,
    ROOT_OPTION,
    WAIT_OPTION,
    check_layout_output,
    print_json,
    wait_seconds,
)
from ctrconv.errors import UsageError


@app.command("commit")
def commit_command(
    container_arg: Optional[str] = typer.Argument(None, metavar="CONTAINER", help="Container ID (same as --container)."),
    root: Path = ROOT_OPTION,
    namespace: str = NAMESPACE_OPTION,
    container: Optional[str] = typer.Option(
        None, "--container", "-c",
        help="ID of the container to commit, or a unique prefix of 12+ characters (as crictl ps and docker ps show "
             "IDs; Docker's containerd store: -n moby).",
    ),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output path; '-' streams a tar to stdout."),
    ref: Optional[str] = typer.Option(
        None, "--ref", metavar="NAME",
        help="Name of the new image, normalised like nerdctl (default: the image's repository, tag commit-CONTAINER).",
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", help=f"One of {', '.join(FORMATS)} (default: oci-tar for *.tar and -, else oci-dir).",
    ),
    compression: str = typer.Option("gzip", "--compression", metavar="gzip|zstd|none",
                                     help="Compression of the new layer (docker-archive: not zstd)."),
    message: Optional[str] = typer.Option(None, "-m", "--message", help="History comment of the new layer."),
    author: Optional[str] = typer.Option(None, "-a", "--author", help="Author recorded in the config and history."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
    ignore_lock: bool = IGNORE_LOCK_OPTION,
    wait: Optional[str] = WAIT_OPTION,
) -> None:
    """Write a container's writable layer (its snapshot) as a new top layer on the container's image, with no
    daemon: for stopped, killed or crashed containers of a dead node. Set SOURCE_DATE_EPOCH for a fixed commit
    time."""
    if container and container_arg and container != container_arg:
        raise UsageError("give the container once (CONTAINER or --container)")
    wanted = container or container_arg
    if not wanted:
        raise UsageError("no container given (use --container ID)")
    if output is None:
        raise UsageError("no output given (use -o OUT)")
    check_layout_output(output, as_json, fmt, FORMATS)
    with bars(quiet) as progress, api.waiting(wait_seconds(wait)):
        report = api.commit_container(
            root, wanted, output, namespace=api.check_namespace(namespace), ref=ref, format=fmt, compression=compression,
            message=message, author=author, ignore_lock=ignore_lock,
            progress=progress,
        )
    rewritten = report.base["rewritten_manifest"]
    manifest = (f"base manifest now {rewritten}" if rewritten is not None
                else "base manifest unchanged (every layer blob byte for byte the original)")
    if report.base["regenerated_layers"]:
        write_line(sys.stderr, f"{report.base['name']}: {report.base['regenerated_layers']} base layer(s) regenerated "
                               f"from snapshots (their blobs were gone); {manifest}")
    if report.base["copied_layers"]:
        write_line(sys.stderr, f"{report.base['name']}: {report.base['copied_layers']} base layer(s) never fetched into "
                               f"the namespace copied from a stored blob (their own, held by another namespace, or "
                               f"one of the same tar); {manifest}")
    if as_json:
        print_json(report.to_json())
    elif not quiet and not api.is_stdout(output):
        write_line(sys.stderr, f"committed container {report.container} as {report.name} (image ID {report.image_id}; "
                               f"new layer {api.human_size(report.layer['tar_size'])} uncompressed) to {report.output} "
                               f"[{report.format}]")
