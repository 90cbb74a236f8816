"""``ctrconv import``: put images from an OCI layout / archive into a stopped containerd root."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ctrconv import api
from ctrconv.run.lines import write_line
from ctrconv.cli import app
from ctrconv.run.bars import bars
from ctrconv.cli._common import (
    JSON_OPTION,
    NAMESPACE_OPTION,
    QUIET_OPTION,
    ROOT_OPTION,
    WAIT_OPTION,
    parse_size,
    print_json,
    wait_seconds,
)
from ctrconv.cli._registry import (
    AUTHFILE_OPTION,
    CA_FILE_OPTION,
    CERT_DIR_OPTION,
    CREDS_OPTION,
    INSECURE_OPTION,
    PLAIN_HTTP_OPTION,
    RETRIES_OPTION,
    RETRY_DELAY_OPTION,
    TLS_VERIFY_OPTION,
    registry_options,
)
from ctrconv.errors import UsageError


def cri_mode(cri: bool, no_cri_names: bool) -> bool | None:
    """``--cri`` / ``--no-cri-names`` to the library's ``cri`` (None: CRI records in k8s.io)."""
    if cri and no_cri_names:
        raise UsageError("--cri and --no-cri-names are mutually exclusive")
    return True if cri else (False if no_cri_names else None)


@app.command("import")
def import_command(
    root: Path = ROOT_OPTION,
    namespace: str = NAMESPACE_OPTION,
    input_path: List[str] = typer.Option(
        ..., "-i", "--input",
        help="OCI layout dir, OCI tar or docker-archive tar; - = stdin; docker://HOST[:PORT]/REPO[:TAG|@DIGEST]: a "
             "registry. Repeatable, and a directory of archives "
             "(*.tar, *.tar.gz, *.tgz, *.tar.zst, *.tzst, *.tar.zstd) stands for all of them: every input in one transaction.",
    ),
    snapshotter: str = typer.Option("overlayfs", "--snapshotter", help="overlayfs or native."),
    no_unpack: bool = typer.Option(False, "--no-unpack", help="Only content and metadata, no snapshots."),
    platform: Optional[List[str]] = typer.Option(
        None, "--platform",
        help="Import this platform (repeatable). Given once, that platform is also the one unpacked, like ctr "
             "(a foreign one too: preloading an arm64 node image on an amd64 machine).",
    ),
    all_platforms: bool = typer.Option(False, "--all-platforms", help="Import every platform of an index."),
    name: Optional[str] = typer.Option(None, "--name", help="Store the (single) image under this name."),
    pin: bool = typer.Option(False, "--pin", help="Label the image io.cri-containerd.pinned=pinned."),
    cri: bool = typer.Option(
        False, "--cri",
        help="Record images as a CRI pull does (repo:tag, repo@digest, sha256:<id>, CRI labels) in any namespace; "
             "the default in k8s.io.",
    ),
    no_cri_names: bool = typer.Option(
        False, "--no-cri-names", help="In k8s.io record only the image's own name, as ctr images import does."),
    containerd_version: Optional[str] = typer.Option(
        None, "--containerd-version",
        help="Containerd that will run a new root: 1.6 (default), 1.7 or 2.x. An existing root keeps its own form.",
    ),
    no_backup: bool = typer.Option(False, "--no-backup", help="Do not keep the replaced bolt files as *.bak-<time>."),
    verify_existing: bool = typer.Option(
        False, "--verify-existing",
        help="Hash blobs already in the root before trusting them (default: those the namespace records are trusted).",
    ),
    max_layer_size: Optional[str] = typer.Option(
        None, "--max-layer-size", metavar="SIZE",
        help="Refuse a layer that decompresses to more than SIZE (e.g. 20G): a decompression-bomb limit. Default: free disk only.",
    ),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", min=1,
        help="Unpack up to N overlayfs layers of an image side by side, in worker processes (default 1: in order; "
             "no gain was measured on 2 cores, see benchmarks/README.md); from a registry, also download up to N "
             "blobs side by side (default 3, with layers unpacked in order as they arrive).",
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
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
    wait: Optional[str] = WAIT_OPTION,
) -> None:
    """Write images, content, GC labels and snapshots into a containerd root (daemon stopped).

    An input may also be docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]: pulled from a registry.
    """
    api.check_namespace(namespace)
    if name is not None and not name:
        raise UsageError("--name: an empty name names no image")
    if snapshotter not in api.containerd_schema.TREE_SNAPSHOTTERS:
        raise UsageError(f"unsupported snapshotter {snapshotter!r} (overlayfs or native)")
    with bars(quiet) as progress, api.waiting(wait_seconds(wait)):
        options = api.ImportOptions(
            snapshotter=snapshotter, unpack=not no_unpack, platform=platform or None,
            all_platforms=all_platforms, name=name, pin=pin,
            containerd_version=containerd_version, backup=not no_backup,
            max_layer_size=parse_size(max_layer_size) if max_layer_size is not None else None, jobs=jobs,
            unpack_platform=platform[0] if platform and len(platform) == 1 else None,
            cri=cri_mode(cri, no_cri_names), verify_existing=verify_existing,
        )
        report = api.import_images(
            input_path if len(input_path) > 1 else input_path[0], root, namespace, options, progress=progress,
            registry=registry_options(creds, authfile, ca_file, cert_dir, tls_verify, plain_http, insecure, retries,
                                      retry_delay, **({"pull_jobs": jobs} if jobs else {})),
        )
    if as_json:
        print_json(report.to_json())
        return
    for line in api.import_report_lines(report):
        write_line(sys.stdout, line)
