"""``ctrconv dump DBFILE``: a bolt file as a tree of buckets and keys."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ctrconv import api
from ctrconv.run.lines import LineWriter
from ctrconv.cli import app
from ctrconv.cli._common import IGNORE_LOCK_OPTION, JSON_OPTION, QUIET_OPTION, ROOT_OPTION, print_json


@app.command("dump")
def dump_command(
    dbfile: Optional[Path] = typer.Argument(
        None, help="A bolt file (meta.db, snapshotter metadata.db); default: the meta.db of --root."
    ),
    root: Path = ROOT_OPTION,
    namespace: Optional[str] = typer.Option(
        None, "-n", "--namespace", help="Show only this namespace's bucket (v1/NS) of a meta.db (default: everything)."
    ),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
    ignore_lock: bool = IGNORE_LOCK_OPTION,
) -> None:
    """Show a bolt file as a tree of buckets and keys, with containerd values decoded.

    A file that a running containerd holds is refused unless --ignore-lock, which reads a
    consistent private copy of it (never the live file)."""
    if dbfile is None:
        dbfile = root / api.containerd_schema.METADATA_PLUGIN_DIR / api.containerd_schema.META_DB
    document = api.dump_bolt(dbfile, ignore_lock=ignore_lock)
    if namespace is not None:
        document["root"] = _only_namespace(document["root"], api.check_namespace(namespace))
    if as_json:
        print_json(document)
        return
    meta = document["meta"]
    out = LineWriter(sys.stdout)
    out.write(
        f"# {dbfile}: page size {document['page_size']}, txid {meta['txid']}, "
        f"meta page {meta['page']}, freelist {'none (not synced)' if meta['freelist'] is None else meta['freelist']}\n"
    )
    _render(document["root"], 0, out)


def _only_namespace(root: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The tree reduced to ``v1/<namespace>`` (and ``v1``'s plain keys, e.g. the version)."""
    kept = []
    for entry in root["entries"]:
        if entry["key"] != "v1" or "bucket" not in entry:
            continue
        v1 = entry["bucket"]
        inner = [e for e in v1["entries"] if "bucket" not in e or e["key"] == namespace]
        kept.append({**entry, "bucket": {**v1, "entries": inner}})
    return {**root, "entries": kept}


def _render(bucket: dict[str, Any], depth: int, out: Any) -> None:
    indent = "  " * depth
    for entry in bucket["entries"]:
        key = entry["key"] if entry["key"] is not None else f"0x{entry['key_hex']}"
        if "bucket" in entry:
            seq = entry["bucket"]["sequence"]
            out.write(f"{indent}{key}/" + (f"  (sequence {seq})" if seq else "") + "\n")
            _render(entry["bucket"], depth + 1, out)
        else:
            value = entry["value"]
            shown = repr(value) if isinstance(value, str) else value
            if value is None:
                shown = f"0x{entry['value_hex']}" if entry["value_hex"] else '""'
            out.write(f"{indent}{key} = {shown}\n")
