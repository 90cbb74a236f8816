"""``ctrconv dump DBFILE``: a bolt file as a tree of buckets and keys."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from ctrconv import api
from ctrconv.cli import app
from ctrconv.cli._common import JSON_OPTION, print_json


@app.command("dump")
def dump_command(
    dbfile: Path = typer.Argument(..., help="A bolt file (meta.db, snapshotter metadata.db)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a bolt file as a tree of buckets and keys, with containerd values decoded."""
    document = api.dump_bolt(dbfile)
    if as_json:
        print_json(document)
        return
    meta = document["meta"]
    out = sys.stdout
    out.write(
        f"# {dbfile}: page size {document['page_size']}, txid {meta['txid']}, "
        f"meta page {meta['page']}, freelist {'none (not synced)' if meta['freelist'] is None else meta['freelist']}\n"
    )
    _render(document["root"], 0, out)


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
