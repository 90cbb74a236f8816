"""The CLI contract of ../shared/spec/cli.md: exit codes, one-line errors, the options it names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("args", [
    ("ls", "--bogus"),
    ("export", "--root", "/nonexistent", "--all"),          # missing -o
    ("verify", "-j", "many"),
    ("export", "--root", "/tmp", "--all", "-o", "x", "--format", "nope"),
    ("import", "--root", "/tmp/x", "-i", "/nonexistent.tar"),
    ("rebuild", "--root", "/nonexistent"),
    ("dump", "/nonexistent.db"),
])
def test_usage_errors_exit_2_with_one_line(cli, args):
    result = cli(*args)
    assert result.code == 2, (result.code, result.stderr)
    assert result.stderr.startswith("ctrconv: error: ") and result.stderr.count("\n") == 1
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_python_m_ctrconv_and_help():
    out = subprocess.run([sys.executable, "-m", "ctrconv", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("ls", "export", "import", "verify", "rebuild", "dump"):
        assert command in out.stdout


@pytest.mark.parametrize("command,options", [
    ("ls", ["--root", "--namespace", "--all-namespaces", "--json", "--quiet", "--ignore-lock", "--wait"]),
    ("export", ["--root", "--namespace", "--image", "--all", "--output", "--format", "--platform", "--all-platforms", "--json", "--quiet", "--ignore-lock", "--wait"]),
    ("import", ["--root", "--namespace", "--input", "--snapshotter", "--no-unpack", "--platform", "--all-platforms", "--name", "--json", "--wait"]),
    ("verify", ["--root", "--namespace", "--all-namespaces", "--input", "--json", "--wait"]),
    ("rebuild", ["--root", "--output", "--json", "--quiet", "--link", "--wait"]),
    ("dump", ["--json", "--root", "--namespace", "--quiet", "--ignore-lock"]),
])
def test_every_option_of_the_contract_exists(cli, command, options):
    result = cli(command, "--help")
    assert result.code == 0
    for option in options:
        assert option in result.stdout, f"{command} lacks {option}"


def test_debug_shows_a_traceback(cli, tmp_path):
    bad = tmp_path / "x.db"
    bad.write_bytes(b"junk" * 1000)
    assert "Traceback" not in cli("dump", str(bad)).stderr
    assert "Traceback" in cli("--debug", "dump", str(bad)).stderr


@pytest.mark.parametrize("value, traceback", [
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
    ("1", True), ("true", True), ("yes", True), ("ON", True),
])
@pytest.mark.parametrize("command", [("ls", "--root"), ("dump",)])
def test_ctrconv_debug_is_read_as_a_boolean(cli, tmp_path, monkeypatch, value, traceback, command):
    """``CTRCONV_DEBUG=0`` (or false, no, off) shows no traceback, as typer reads the variable
    for ``--debug``: any non-empty value did (found by a red-team run); ``ls`` takes the
    shortcut that runs without typer, ``dump`` does not."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\0" * 8192)
    monkeypatch.setenv("CTRCONV_DEBUG", value)
    result = cli(*command, str(bad))
    assert result.code != 0
    assert ("Traceback" in result.stderr) is traceback, result.stderr


def test_readme_documents_every_command():
    readme = (REPO / "README.md").read_text()
    for command in ("ls", "export", "import", "verify", "rebuild"):
        assert f"ctrconv {command}" in readme


def test_debug_does_not_leak_into_the_next_run(tmp_path, cli):
    """--debug of one in-process run must not show tracebacks in the next one."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\0" * 8192)
    assert "Traceback" in cli("--debug", "dump", str(bad)).stderr
    result = cli("dump", str(bad))
    assert result.code != 0 and "Traceback" not in result.stderr, result.stderr


def test_ls_quiet_prints_the_names_of_the_listing(cli, small_root: Path):
    """``ls -q``: one name a line, the names ``ls --json`` lists, in its order (``-A`` too)."""
    import json

    for scope in (("-A",), ()):
        listed = json.loads(cli("ls", "--root", str(small_root), *scope, "--json").stdout)["images"]
        quiet = cli("ls", "--root", str(small_root), *scope, "-q")
        assert quiet.code == 0 and quiet.stderr == ""
        assert quiet.stdout == "".join(image["name"] + "\n" for image in listed)
    assert cli("ls", "--root", str(small_root), "-A", "-q", "--platform", "linux//x").code == 2


def test_ls_columns_hold_names_that_are_no_utf8(tmp_path: Path) -> None:
    """A stored name that is no UTF-8 is written with ``\\udcXX`` escapes (six characters for one
    byte); the table's columns count them as written, so every row's columns line up."""
    from support.odd_names import odd_names_root

    root, _ = odd_names_root(tmp_path / "root")
    out = subprocess.run([sys.executable, "-m", "ctrconv", "ls", "-A", "--root", str(root)], cwd=REPO,
                         capture_output=True, text=True, env={**os.environ, "CTRCONV_NO_CACHE": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("\\udcff" in line for line in lines) and len(lines) > 2
    assert len({line.index("sha256:") for line in lines[1:]}) == 1, out.stdout
