"""Every command's ``--json`` output has a JSON Schema in ``schemas/cli/<command>.json``.

Real outputs of each command (on the committed small root, a damaged copy of it, layouts and
roots written from it) are validated against their schema, and every field they hold must be
described by it: a new field means a schema (and contract) update, never a silent change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from support.json_schemas import CLI_SCHEMAS, check




def _json(cli, *args: str, code: int = 0) -> Any:
    result = cli(*args)
    assert result.code == code, (args, result.stderr)
    return result.json


def test_every_schema_is_a_valid_draft_2020_12_schema():
    for path in sorted(CLI_SCHEMAS.glob("*.json")):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_every_command_with_json_has_a_schema():
    import typer

    from ctrconv.cli import _register, app

    _register()
    group = typer.main.get_command(app)
    with_json = sorted(name for name, command in group.commands.items()
                       if any("--json" in getattr(p, "opts", ()) for p in command.params))
    assert {"ls", "verify", "export", "import", "rebuild", "dump"} <= set(with_json)
    for name in with_json:
        assert (CLI_SCHEMAS / f"{name}.json").is_file(), f"{name} has --json but no schemas/cli/{name}.json"


def test_ls_json(cli, small_root: Path):
    check("ls", _json(cli, "ls", "--root", str(small_root), "-A", "--json"))
    check("ls", _json(cli, "ls", "--root", str(small_root), "-n", "nothing-here", "--json"))
    check("ls", _json(cli, "ls", "--root", str(small_root), "--platform", "linux/arm64", "--json"))


def test_verify_json_clean_damaged_and_layout(cli, small_root: Path, tmp_path: Path):
    clean = _json(cli, "verify", "--root", str(small_root), "-A", "--json")
    assert clean["ok"] is True
    check("verify", clean)
    damaged = tmp_path / "damaged"
    _copy_tree(small_root, damaged)
    blobs = sorted((damaged / "io.containerd.content.v1.content" / "blobs" / "sha256").iterdir())
    blobs[0].write_bytes(b"not the blob")
    report = _json(cli, "verify", "--root", str(damaged), "-A", "--json", code=1)
    assert report["ok"] is False and report["problems"]
    check("verify", report)
    layout = tmp_path / "busybox.tar"
    assert cli("export", "--root", str(small_root), "--all", "-o", str(layout), "-q").code == 0
    check("verify", _json(cli, "verify", "-i", str(layout), "--json"))


def test_export_json_every_format(cli, small_root: Path, tmp_path: Path):
    for fmt, out in [("oci-tar", "a.tar"), ("oci-dir", "a-dir"), ("docker-archive", "a-docker.tar"),
                     ("containerd-root", "a-root")]:
        args = ["export", "--root", str(small_root), "--all", "-o", str(tmp_path / out), "--format", fmt, "--json"]
        if fmt == "containerd-root":
            args.append("--no-unpack")
        document = _json(cli, *args)
        check("export", document)


def test_import_json_added_then_present(cli, small_root: Path, tmp_path: Path):
    layout = tmp_path / "all.tar"
    assert cli("export", "--root", str(small_root), "--all", "-o", str(layout), "-q").code == 0
    first = _json(cli, "import", "--root", str(tmp_path / "new"), "-i", str(layout), "--no-unpack", "--json")
    assert {i["status"] for i in first["images"]} == {"added"}
    check("import", first)
    again = _json(cli, "import", "--root", str(tmp_path / "new"), "-i", str(layout), "--no-unpack", "--json")
    assert {i["status"] for i in again["images"]} == {"present"}
    check("import", again)


def test_rebuild_json_healthy_and_damaged(cli, small_root: Path, tmp_path: Path):
    healthy = tmp_path / "healthy"
    _copy_tree(small_root, healthy)
    check("rebuild", _json(cli, "rebuild", "--root", str(healthy), "--json"))
    damaged = tmp_path / "damaged"
    _copy_tree(small_root, damaged)
    with open(damaged / "io.containerd.metadata.v1.bolt" / "meta.db", "r+b") as db:
        db.seek(4 * 4096)
        db.write(b"\xff" * 4096)
    report = _json(cli, "rebuild", "--root", str(damaged), "-o", str(tmp_path / "rebuilt"), "--no-unpack", "--json")
    assert report["damage_found"] is True and report["salvage"]
    check("rebuild", report)


def test_dump_json_meta_db_and_snapshotter_db(cli, small_root: Path):
    check("dump", _json(cli, "dump", "--root", str(small_root), "--json"))
    check("dump", _json(cli, "dump", "--root", str(small_root), "-n", "default", "--json"))
    snapshotter_db = small_root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    check("dump", _json(cli, "dump", str(snapshotter_db), "--json"))


def test_schema_catches_a_changed_field(cli, small_root: Path):
    """The check is not hollow: a renamed field and a wrong type are both refused."""
    document = _json(cli, "ls", "--root", str(small_root), "-A", "--json")
    renamed = json.loads(json.dumps(document))
    renamed["images"][0]["sizes"] = renamed["images"][0].pop("size")
    with pytest.raises(AssertionError):
        check("ls", renamed)
    wrong = json.loads(json.dumps(document))
    wrong["images"][0]["size"] = "1.9 MiB"
    with pytest.raises(AssertionError):
        check("ls", wrong)
    extra = json.loads(json.dumps(document))
    extra["images"][0]["new_field"] = 1
    with pytest.raises(AssertionError, match="does not describe"):
        check("ls", extra)


def _copy_tree(src: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(src, dest, symlinks=True)
