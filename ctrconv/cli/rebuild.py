"""``ctrconv rebuild``: recover a damaged root, in place (with backups) or into a new root."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ctrconv import api
from ctrconv.run.lines import LineWriter
from ctrconv.cli import app
from ctrconv.run.bars import bars
from ctrconv.cli._common import (
    JSON_OPTION,
    QUIET_OPTION,
    ROOT_OPTION,
    WAIT_OPTION,
    print_json,
    wait_seconds,
)
from ctrconv.errors import UsageError


def _parse_names(values: list[str]) -> dict[str, str]:
    names = {}
    for value in values:
        digest, sep, ref = value.partition("=")
        if not sep or not ref:
            raise UsageError(f"--name takes DIGEST=REF, not {value!r}")
        names[digest] = ref
    return names


@app.command("rebuild")
def rebuild_command(
    root: Path = ROOT_OPTION,
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the rebuilt root here; the damaged root is left untouched."),
    name: List[str] = typer.Option([], "--name", help="DIGEST=REF: name for an image re-derived from content (repeatable)."),
    no_unpack: bool = typer.Option(False, "--no-unpack", help="Do not re-unpack missing snapshots."),
    trust_snapshots: bool = typer.Option(
        False, "--trust-snapshots",
        help="Reuse every whole snapshot chain as it is (default: compare each tree with its layer and unpack again what differs).",
    ),
    link: bool = typer.Option(
        False, "--link",
        help="With -o: hard-link blobs from the damaged root instead of copying them (shared inodes: a later "
             "damage to one root is damage to both). Default: copy, reflinked where the filesystem can.",
    ),
    regenerate_layers: bool = typer.Option(
        False, "--regenerate-layers",
        help="Write layer blobs lost to damage again from their surviving snapshots. An image whose blobs do "
             "not come back byte for byte gets a new manifest (and config, if a layer's diff ID changed): "
             "its digests change, and the report names it.",
    ),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
    wait: Optional[str] = WAIT_OPTION,
) -> None:
    """Salvage a damaged meta.db, re-derive what is lost, drop what points at missing content."""
    if link and output is None:
        raise UsageError("--link needs -o (in place there is nothing to link)")
    with bars(quiet) as progress, api.waiting(wait_seconds(wait)):
        options = api.RebuildOptions(name=_parse_names(name), unpack=not no_unpack, trust_snapshots=trust_snapshots,
                                     link=link, regenerate_layers=regenerate_layers)
        report = api.rebuild_root(root, output, options, progress=progress)
    if as_json:
        print_json(report.to_json())
        return
    out = LineWriter(sys.stdout)
    if report.healthy and report.not_repairable:
        out.write(f"{report.root}: nothing a rebuild can repair (nothing written); verify reports what no rebuild "
                  "mends:\n")
        for problem in report.not_repairable:
            out.write(f"  {problem}\n")
        return
    if report.healthy:
        out.write(f"{report.root}: verified clean, nothing to repair (nothing written)\n")
        return
    for path, info in report.salvage.items():
        if info["damage"] or info["source"] in ("missing", "empty", "unreadable") or info["source"].startswith("orphan"):
            out.write(f"salvaged {path}: from {info['source']}" + (f", {len(info['damage'])} damaged part(s)" if info["damage"] else "") + "\n")
        for damage in info["damage"]:
            out.write(f"  lost: {damage}\n")
    for blob in report.corrupt_blobs:
        out.write(f"corrupt blob {blob['digest']}: {blob['reason']} (quarantined)\n")
    for drop in report.dropped:
        out.write(f"dropped {drop['object']}: {drop['reason']}\n")
    for image in report.images:
        if image["origin"] != "kept":
            out.write(f"image {image['namespace']}/{image['name']}: {image['origin']}\n")
    for regenerated in report.regenerated:
        _print_regenerated(out, regenerated)
    for restored in report.restored:
        out.write(f"restored {restored['object']}: {restored['reason']}\n")
    for cleaned in report.cleaned:
        out.write(f"cleaned up {cleaned['object']}: {cleaned['reason']}\n")
    if report.snapshots_unpacked:
        removed = report.snapshots_unpacked_removed
        why = "" if not removed else (" (removed from the root before: containerd unpacks them again on first use)"
                                      if removed == report.snapshots_unpacked else
                                      f" ({removed} of them removed from the root before: containerd unpacks those "
                                      "again on first use)")
        out.write(f"snapshots: {report.snapshots_reused} reused, {report.snapshots_unpacked} unpacked again{why}\n")
    if report.carried:
        out.write(f"copied as they are (not rebuilt): {', '.join(report.carried)}\n")
    if not report.damage_found:
        kept = f"{len(report.images)} image(s) kept, {report.snapshots_reused} snapshot(s) reused"
        if report.backups:  # (what verify reported lay outside the records: a meta page, a free list)
            out.write(f"no record lost; the bolt files were written again to mend what verify reported; {kept}\n")
        else:
            out.write(f"nothing to repair; {kept}\n")
    for backup in report.backups:
        out.write(f"backup: {backup}\n")


def _print_regenerated(out, entry: dict) -> None:
    """Which layers came back from snapshots, and whether the image's digests changed."""
    where = f"image {entry['namespace']}/{entry['name']}"
    layers = sum(len(m["layers"]) for m in entry["manifests"])
    if not entry["changed"]:
        out.write(f"{where}: {layers} layer blob(s) regenerated from snapshots, byte for byte: image unchanged\n")
        return
    out.write(f"{where}: {layers} layer blob(s) regenerated from snapshots; new target {entry['digest']} "
              f"(was {entry['original_digest']})\n")
    if entry.get("renamed"):
        out.write(f"  renamed {entry['renamed']}: the name states the image's digest\n")
    for m in entry["manifests"]:
        platform = f" ({m['platform']})" if m["platform"] else ""
        if m["config"] != m["original_config"]:
            out.write(f"  image ID{platform} changed: {m['config']} (was {m['original_config']})\n")
        else:
            out.write(f"  image ID{platform} unchanged: {m['config']}; manifest {m['manifest']} "
                      f"(was {m['original_manifest']})\n")
