"""Start-up cost, judged by what is imported (never by a clock): ``ctrconv --version`` loads no
CLI framework, and a command loads only what it uses (issue 17).

Each case runs the real entry point in a fresh interpreter and reads ``sys.modules`` when the
process exits, so an import added anywhere on the path (a module-level import in a command
module, an eager package ``__init__``) fails here by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from ctrconv.cli.commands import COMMANDS

REPO = Path(__file__).resolve().parents[3]

#: ``sys.modules`` at exit, written to the file named by argv[1]; the rest is ctrconv's argv
_DRIVER = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["ctrconv", *sys.argv[2:]]
from ctrconv.entry import main
main()
"""

#: heavy third-party modules no command imports unless it uses them
HEAVY = ("jsonschema", "referencing", "construct", "zstandard", "tqdm", "rich", "pydantic")




def _modules(tmp_path: Path, *args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CTRCONV_DEBUG", None)
    result = subprocess.run([sys.executable, "-c", _DRIVER, str(out), *args], capture_output=True, text=True,
                            timeout=120, env=env, cwd=tmp_path)
    return set(json.loads(out.read_text())), result


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


def test_version_imports_no_cli_framework(tmp_path: Path) -> None:
    modules, result = _modules(tmp_path, "--version")
    assert (result.returncode, result.stderr) == (0, "") and result.stdout.startswith("ctrconv ")
    assert _loaded(modules, ("typer", "click", *HEAVY)) == []
    assert not {m for m in modules if m.startswith(("ctrconv.cli", "ctrconv.api"))}


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    """``--help`` lists every command (so imports every command module), but no library behind them."""
    modules, result = _modules(tmp_path, "--help")
    assert result.returncode == 0 and "Commands" in result.stdout
    assert "ctrconv.cli.ls" in modules  # the listing really loaded the command modules
    assert _loaded(modules, ("jsonschema", "referencing", "construct", "zstandard", "tqdm", "rich", "pydantic")) == []


def test_ls_imports_only_what_listing_needs(tmp_path: Path, small_root: Path) -> None:
    modules, result = _modules(tmp_path, "ls", "--root", str(small_root))
    assert result.returncode == 0, result.stderr
    assert "docker.io/library/busybox" in result.stdout  # it really listed the root
    # pydantic comes with typer's option coercion, tqdm with a bar, zstandard with a zstd layer,
    # jsonschema with a document the compiled schema check cannot prove valid (none here)
    # construct declares the bolt layouts; readers run the codecs generated from it
    # and no CLI framework: a plain ``ls`` command line runs through the shortcut
    assert _loaded(modules, ("jsonschema", "referencing", "construct", "zstandard", "tqdm", "rich", "pydantic",
                             "click", "typer")) == []
    assert not {m for m in modules if m.startswith("ctrconv.cli")}
    assert not {m for m in modules if m.startswith(("ctrconv.sinks", "ctrconv.registry", "ctrconv.recovery"))}
    # one typer leaves to it (grouped short flags) loads the ls command module and no other
    modules, result = _modules(tmp_path, "ls", "--root", str(small_root), "-Aq")
    assert result.returncode == 0 and "docker.io/library/busybox" in result.stdout, result.stderr
    assert "typer" in modules and "ctrconv.cli.ls" in modules
    assert not {m for m in modules if m in set(COMMANDS.values()) - {"ctrconv.cli.ls"}}


def test_export_imports_only_what_copying_needs(tmp_path: Path, small_root: Path) -> None:
    """An oci-tar export of stored blobs: no compressor (layers are only written again for a
    lost blob), no thread pool, no schema library, no file reader, no other command's machinery."""
    out = tmp_path / "out.tar"
    modules, result = _modules(tmp_path, "export", "--root", str(small_root), "-q", "--image",
                               "docker.io/library/busybox:small", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert tarfile.is_tarfile(out)  # it really exported
    assert _loaded(modules, (*HEAVY, "click", "concurrent", "logging")) == []
    assert not {m for m in modules if m.startswith(("ctrconv.registry", "ctrconv.recovery", "ctrconv.verify",
                                                    "ctrconv.inventory", "ctrconv.layers.parallelgzip"))}
    # the root is read through its own source: no file reader (tar, docker archive, layouts)
    assert {m for m in modules if m.startswith("ctrconv.sources.")} == {"ctrconv.sources.base",
                                                                       "ctrconv.sources.containerd_root"}
    assert "tarfile" not in modules
    # nor what only a layer written again (from a snapshot tree), an external decompressor (a
    # child process) or a printed traceback use: ~4 ms of every export's start
    assert not {"ctrconv.layers.regenerate", "subprocess", "traceback"} & modules, \
        sorted({"ctrconv.layers.regenerate", "subprocess", "traceback"} & modules)
    # nor the layer writer (a layer written again) or the bolt writer: reading writes no bolt file
    assert not {"ctrconv.layers.layerblob", "ctrconv.bolt.writer"} & modules, \
        sorted({"ctrconv.layers.layerblob", "ctrconv.bolt.writer"} & modules)
    # its summary line's size loads no listing machinery (``ls``'s, with its worker processes)
    out.unlink()
    modules, result = _modules(tmp_path, "export", "--root", str(small_root), "--image",
                               "docker.io/library/busybox:small", "-o", str(out))
    assert result.returncode == 0 and "MiB" in result.stderr, result.stderr
    assert not {"ctrconv.inventory", "ctrconv.forked", "ctrconv.listingfacts", "pickle"} & modules


def test_an_option_value_is_still_checked_by_typer(tmp_path: Path, small_root: Path) -> None:
    """The plain coercion hands what it cannot decide to typer: its refusal, in its words."""
    _, result = _modules(tmp_path, "verify", "--root", str(small_root), "--jobs", "many")
    assert result.returncode == 2
    assert result.stderr.startswith("ctrconv: error: ") and "--jobs" in result.stderr


def test_version_with_standard_output_closed_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(f"{sys.executable} -m ctrconv --version >&-", shell=True, capture_output=True, text=True,
                            timeout=60, env=env, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, "ctrconv: error: standard output is closed\n")
