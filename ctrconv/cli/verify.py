"""``ctrconv verify``: report every problem of a root or an OCI layout; exit 1 if any."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ctrconv import api
from ctrconv.errors import LockedError
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


@app.command("verify")
def verify_command(
    root: Path = ROOT_OPTION,
    namespace: str = NAMESPACE_OPTION,
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces", help="Check every namespace."),
    layout: Optional[str] = typer.Option(None, "-i", "--input", help="Verify an OCI layout (dir or tar) instead of a root."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
    ignore_lock: bool = IGNORE_LOCK_OPTION,
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", min=1, help="Blob hashing threads (default: cores)."),
    deep: bool = typer.Option(False, "--deep", help="Also re-apply every unpacked layer and compare it with its snapshot (slow)."),
    no_hash: bool = typer.Option(False, "--no-hash", help="Check records, presence and sizes of a root's blobs without reading their contents (fast on a large root)."),
    wait: Optional[str] = WAIT_OPTION,
) -> None:
    """Full integrity check. Prints each problem found; exit 1 if any."""
    try:
        with bars(quiet) as progress, api.waiting(wait_seconds(wait)):
            if layout is not None:
                report = api.verify_layout(layout, progress=progress)
            else:
                namespaces = None if all_namespaces else [api.check_namespace(namespace)]
                report = api.verify_root(root, namespaces, ignore_lock=ignore_lock, jobs=jobs, progress=progress,
                                         deep=deep, hash_contents=not no_hash)
    except LockedError as exc:
        # verify's exit 1 says "problems found": a root it may not read (containerd or a ctrconv
        # writer holds it) is an input it could not read, as the contract's exit 2 says
        exc.exit_code = 2
        raise
    if as_json:
        print_json(report.to_json())
    else:
        for problem in report.errors:
            write_line(sys.stdout, f"PROBLEM {problem}")
        for info in report.infos:
            write_line(sys.stdout, f"info    {info}")
        stats = ", ".join(f"{v} {k}" for k, v in report.stats.items())
        verdict = "clean: no problems" if report.ok else f"{len(report.errors)} problem(s) found"
        sys.stdout.write(f"{verdict} ({stats})\n" if stats else f"{verdict}\n")
    if not report.ok:
        raise typer.Exit(1)
