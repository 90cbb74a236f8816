"""``ctrconv ls``: list the images of a root, like ``ctr images ls`` plus completeness."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ctrconv import api
from ctrconv.cli import app
from ctrconv.cli._common import (
    IGNORE_LOCK_OPTION,
    JSON_OPTION,
    NAMESPACE_OPTION,
    ROOT_OPTION,
    WAIT_OPTION,
    print_json,
    wait_seconds,
)


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
    namespaces = None if all_namespaces else [api.check_namespace(namespace)]
    if quiet and not as_json:  # names only: from the image records, no document read
        with api.waiting(wait_seconds(wait)):
            names = api.list_image_names(root, namespaces, ignore_lock=ignore_lock, platform=platform)
        sys.stdout.write("".join(name + "\n" for name in names))
        return
    with api.waiting(wait_seconds(wait)):
        images = api.list_images(root, namespaces, ignore_lock=ignore_lock, platform=platform)
    if as_json:
        print_json({"images": [i.to_json() for i in images]})
        return
    judged = images[0].judged_platform if images else ""
    rows = [("NAMESPACE", "REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", f"COMPLETE ({judged})" if judged else "COMPLETE")]
    for i in images:
        if i.status == "platform-absent":
            complete = f"not pulled (has {','.join(i.present_platforms)})"
        elif i.status == "layers-discarded":
            complete = "no (layer blobs not stored: discarded after unpack or never fetched; runs)"
        else:
            complete = "yes" if i.complete else ("error" if i.problem else f"no ({len(i.missing)} missing)")
        rows.append((i.namespace, i.name, i.media_type, i.digest, api.human_size(i.size), ",".join(i.platforms) or "-", complete))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    line = "  ".join(f"{{:{w}}}" for w in widths)  # each cell padded as ``str.ljust`` pads it
    sys.stdout.write("".join(line.format(*r).rstrip() + "\n" for r in rows))
    for i in images:
        if i.problem:
            sys.stderr.write(f"ctrconv: warning: {i.namespace}/{i.name}: {i.problem}\n")
