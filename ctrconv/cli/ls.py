"""``ctrconv ls``: list the images of a root, like ``ctr images ls`` plus completeness (the
command's body is :func:`ctrconv.run.ls.ls`, which the shortcut runs without typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctrconv.cli import app
from ctrconv.cli._common import IGNORE_LOCK_OPTION, JSON_OPTION, NAMESPACE_OPTION, ROOT_OPTION, WAIT_OPTION
from ctrconv.run.ls import ls


@app.command("ls")
def ls_command(
    root: Path = ROOT_OPTION,
    namespace: str = NAMESPACE_OPTION,
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces", help="List every namespace."),
    platform: Optional[str] = typer.Option(None, "--platform", help="Judge completeness for this platform (default: host)."),
    as_json: bool = JSON_OPTION,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print image names only, one per line."),
    ignore_lock: bool = IGNORE_LOCK_OPTION,
    wait: Optional[str] = WAIT_OPTION,
) -> None:
    """List images: namespace, name, type, digest, size, platforms, content present.

    For roots of 1,000 images or more, what a listing learnt from the indexes, manifests
    and configs (checked against their digests on every run) is kept in $CTRCONV_CACHE_DIR
    or ~/.cache/ctrconv for the next one; CTRCONV_NO_CACHE=1 turns that off. The root is
    never written. With -q the names come from the image records alone.
    """
    ls(root, namespace, all_namespaces, platform, as_json, quiet, ignore_lock, wait)
