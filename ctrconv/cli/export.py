"""``ctrconv export``: images of a root -> OCI layout dir, OCI layout tar or docker archive."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ctrconv import api
from ctrconv.run.export import export as run_export, rewrite_lines
from ctrconv.run.lines import write_line
from ctrconv.cli import app
from ctrconv.run.bars import bars
from ctrconv.cli._common import (
    IGNORE_LOCK_OPTION,
    JSON_OPTION,
    NAMESPACE_OPTION,
    QUIET_OPTION,
    ROOT_OPTION,
    WAIT_OPTION,
    print_json,
    wait_seconds,
)
from ctrconv.cli._registry import (
    AUTHFILE_OPTION,
    CA_FILE_OPTION,
    CERT_DIR_OPTION,
    CHUNK_SIZE_OPTION,
    CHUNK_THRESHOLD_OPTION,
    CREDS_OPTION,
    INSECURE_OPTION,
    PLAIN_HTTP_OPTION,
    PUSH_JOBS_OPTION,
    RETRIES_OPTION,
    RETRY_DELAY_OPTION,
    TLS_VERIFY_OPTION,
    any_given,
    push_command,
    registry_options,
)
from ctrconv.cli._common import parse_size
from ctrconv.cli.import_ import cri_mode
from ctrconv.errors import UsageError

#: in the --format help text (``ctrconv.sinks``: imported with this module, so by export and --help only)
FORMATS = api.EXPORT_FORMATS


@app.command("export")
def export_command(
    ctx: typer.Context,
    refs: Optional[List[str]] = typer.Argument(None, metavar="REF", help="Images to export (same as --image)."),
    root: Path = ROOT_OPTION,
    namespace: str = NAMESPACE_OPTION,
    image: Optional[List[str]] = typer.Option(
        None, "--image",
        help="Image to export (repeatable): a name, an image ID or a unique prefix of 12+ hex digits (as crictl "
             "shows it), or repo@sha256:DIGEST.",
    ),
    all_images: bool = typer.Option(False, "--all", help="Export every image of the namespace."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output path; '-' streams a tar to stdout."),
    to: Optional[str] = typer.Option(
        None, "--to", metavar="docker://HOST[:PORT]/REPO[:TAG]",
        help="Push to a registry instead of writing -o (no tag: each image under its own tags).",
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f",
        help=f"One of {', '.join(FORMATS)}, containerd-root (default: oci-tar for *.tar and -, else oci-dir).",
    ),
    platform: Optional[List[str]] = typer.Option(None, "--platform", help="Platform to export (repeatable; default: host)."),
    all_platforms: bool = typer.Option(False, "--all-platforms", help="Export every platform of multi-platform images."),
    index_media_type: Optional[bool] = typer.Option(
        None, "--index-media-type/--no-index-media-type",
        help="Write the top-level mediaType in index.json (default: like the ctr of the containerd that wrote the root: "
             "no for 1.6, yes for 1.7 and 2.x; yes for docker-archive).",
    ),
    skip_manifest_json: bool = typer.Option(False, "--skip-manifest-json", help="No docker manifest.json in OCI formats."),
    skip_non_distributable: bool = typer.Option(
        False, "--skip-non-distributable",
        help="Leave non-distributable (foreign, e.g. Windows base) layers out; they need not be present.",
    ),
    from_snapshots: str = typer.Option(
        "auto", "--from-snapshots", metavar="auto|always|never",
        help="Write layers again from their unpacked snapshots (overlayfs, native): auto = only layers whose blob "
             "is gone (discard_unpacked_layers nodes, lost blobs), always = every layer, never = fail instead.",
    ),
    compression: Optional[str] = typer.Option(
        None, "--compression", metavar="gzip|zstd|none",
        help="Compression of regenerated layers (default: like the original layer; docker-archive: never zstd).",
    ),
    link: bool = typer.Option(False, "--link", help="oci-dir: hardlink blobs from the content store when on the same filesystem."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="With --link: hash linked blobs (reads them once)."),
    target_namespace: Optional[str] = typer.Option(
        None, "--target-namespace", help="containerd-root: namespace to write into (default: the source namespace)."
    ),
    cri: bool = typer.Option(
        False, "--cri", help="containerd-root: record images as a CRI pull does in any namespace (the default in k8s.io)."),
    no_cri_names: bool = typer.Option(
        False, "--no-cri-names", help="containerd-root: in k8s.io record only the images' own names."),
    snapshotter: str = typer.Option("overlayfs", "--snapshotter", help="containerd-root: overlayfs or native."),
    no_unpack: bool = typer.Option(False, "--no-unpack", help="containerd-root: content and metadata only."),
    containerd_version: Optional[str] = typer.Option(
        None, "--containerd-version",
        help="1.6, 1.7 or 2.x. OCI formats: match that line's ctr images export (default: the line that wrote the "
             "root). containerd-root: the line that will run a new root (default 1.6); an existing root keeps its form.",
    ),
    creds: Optional[str] = CREDS_OPTION,
    authfile: Optional[str] = AUTHFILE_OPTION,
    ca_file: Optional[str] = CA_FILE_OPTION,
    cert_dir: Optional[str] = CERT_DIR_OPTION,
    tls_verify: Optional[str] = TLS_VERIFY_OPTION,
    plain_http: bool = PLAIN_HTTP_OPTION,
    insecure: bool = INSECURE_OPTION,
    retries: int = RETRIES_OPTION,
    retry_delay: float = RETRY_DELAY_OPTION,
    jobs: int = PUSH_JOBS_OPTION,
    chunk_threshold: str = CHUNK_THRESHOLD_OPTION,
    chunk_size: Optional[str] = CHUNK_SIZE_OPTION,
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
    ignore_lock: bool = IGNORE_LOCK_OPTION,
    wait: Optional[str] = WAIT_OPTION,
) -> None:
    """Export images to an OCI layout directory, an OCI layout tar (like ctr images export) or a docker archive,
    or push them to a registry (--to docker://HOST[:PORT]/REPO[:TAG])."""
    wanted = list(image or []) + list(refs or [])
    if all_images and wanted:
        raise UsageError("give either --all or image references, not both")
    if not all_images and not wanted:
        raise UsageError("no image given (use --image REF or --all)")
    if to is not None:
        if output is not None or fmt is not None:
            raise UsageError("--to pushes to a registry: it takes neither -o nor --format")
        with api.waiting(wait_seconds(wait)):
            push_command(
                root, to, namespace, None if all_images else wanted, platforms=list(platform or []),
                all_platforms=all_platforms, ignore_lock=ignore_lock, as_json=as_json, quiet=quiet,
                options=registry_options(creds, authfile, ca_file, cert_dir, tls_verify, plain_http, insecure, retries,
                                         retry_delay, jobs=jobs, chunk_threshold=parse_size(chunk_threshold),
                                         chunk_size=parse_size(chunk_size) if chunk_size else None),
            )
        return
    if output is None:
        raise UsageError("no output given (use -o OUT, or --to docker://HOST/REPO to push)")
    for flag, value in (("--containerd-version", containerd_version), ("--snapshotter", snapshotter)):
        if value == "":  # (a variable that expanded to nothing: the default was used silently)
            raise UsageError(f"{flag}: an empty value names nothing (did a variable expand to nothing?)")
    if any_given(creds, authfile, ca_file, cert_dir, tls_verify, plain_http, insecure):
        raise UsageError("registry options (--creds, --authfile, --ca-file, --cert-dir, --tls-verify, --plain-http) "
                         "need --to docker://...")
    pushing_only = [f"--{name.replace('_', '-')}" for name in _PUSH_ONLY if given_on_command_line(ctx, name)]
    if pushing_only:  # (their values are defaults otherwise: a given one would be ignored)
        raise UsageError(f"{', '.join(pushing_only)}: only for a push (--to docker://...)")
    if target_namespace is not None and fmt != "containerd-root":
        raise UsageError("--target-namespace applies to --format containerd-root only")
    if fmt == "containerd-root":
        with api.waiting(wait_seconds(wait)):
            _export_to_root(
                root, output, api.check_namespace(namespace), None if all_images else wanted,
                target_namespace=api.check_namespace(namespace if target_namespace is None else target_namespace),
                snapshotter=snapshotter,
                unpack=not no_unpack, containerd_version=containerd_version, platform=list(platform or []) or None,
                unpack_platform=platform[0] if platform and len(platform) == 1 else None,
                all_platforms=all_platforms, ignore_lock=ignore_lock, as_json=as_json, quiet=quiet,
                cri=cri_mode(cri, no_cri_names), from_snapshots=from_snapshots, compression=compression,
                on_regenerated=_said_regenerated,
            )
        return
    if cri or no_cri_names:
        raise UsageError("--cri and --no-cri-names apply to --format containerd-root only")
    run_export(root, output, namespace=namespace, images=None if all_images else wanted, fmt=fmt,
               platform=list(platform or []), all_platforms=all_platforms, index_media_type=index_media_type,
               containerd_version=containerd_version, skip_manifest_json=skip_manifest_json,
               skip_non_distributable=skip_non_distributable, link=link, verify=verify, ignore_lock=ignore_lock,
               from_snapshots=from_snapshots, compression=compression, as_json=as_json, quiet=quiet, wait=wait)


#: options of a push that have defaults of their own, so that only the command line says they were given
_PUSH_ONLY = ("retries", "retry_delay", "jobs", "chunk_threshold", "chunk_size")


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line, not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _said_regenerated(images) -> None:
    """``--format containerd-root``: layers written again from snapshots, said like export does."""
    from ctrconv.api import ExportReport

    for line in rewrite_lines(ExportReport(format="containerd-root", output="", namespace="", images=list(images))):
        write_line(sys.stderr, line)


def _export_to_root(root: Path, output: str, namespace: str, refs: Optional[List[str]], *, as_json: bool, quiet: bool, **options) -> None:
    """``--format containerd-root``: the import writer as the sink, no intermediate archive."""
    from ctrconv.api import import_report_lines as report_lines

    if api.is_stdout(output):
        raise UsageError("a containerd root cannot be written to stdout")
    with bars(quiet) as progress:
        report = api.export_to_root(root, output, namespace, refs, progress=progress, **options)
    if as_json:
        print_json(report.to_json())
    elif not quiet:
        for line in report_lines(report):
            write_line(sys.stderr, line)
