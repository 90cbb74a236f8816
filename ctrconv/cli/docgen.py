"""The command reference of ``docs/cli.md``, generated from the CLI itself.

``--help`` and the documentation have one source: the typer options and docstrings of
:mod:`ctrconv.cli`. This module renders every command's ``--help`` (as ``ctrconv CMD --help``
prints it on a 100-column terminal) into the block between :data:`BEGIN` and :data:`END` in
``docs/cli.md``; the test suite fails when the file and the CLI differ.

    python3 -m ctrconv.cli.docgen --write docs/cli.md    # regenerate the block
    python3 -m ctrconv.cli.docgen --check docs/cli.md    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

WIDTH = 80
BEGIN = "<!-- BEGIN GENERATED: python3 -m ctrconv.cli.docgen --write docs/cli.md -->"
END = "<!-- END GENERATED -->"


def _help(args: list[str], width: int) -> str:
    """What ``ctrconv ARGS --help`` prints on a ``width``-column terminal: the real run."""
    import contextlib
    import io
    import os

    from ctrconv.cli import _common, _register, app

    _register()
    out = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        with contextlib.redirect_stdout(out):
            code = _common.run(app, [*args, "--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    if code != 0:
        raise RuntimeError(f"ctrconv {' '.join(args)} --help exited {code}")
    return out.getvalue().rstrip("\n")


def help_texts(width: int = WIDTH) -> dict[str, str]:
    """``{"": root help, "ls": ls help, ...}``, exactly as ``--help`` prints them at ``width``."""
    import typer

    from ctrconv.cli import _register, app

    _register()
    group = typer.main.get_command(app)
    names = group.list_commands(group.context_class(group, info_name="ctrconv"))
    return {"": _help([], width), **{name: _help([name], width) for name in names}}


def reference() -> str:
    """The generated block (markers included)."""
    parts = [BEGIN, "", "### `ctrconv --help`", "", "```text", help_texts()[""], "```"]
    for name, text in help_texts().items():
        if name:
            parts += ["", f"### `ctrconv {name} --help`", "", "```text", text, "```"]
    parts += ["", END]
    return "\n".join(parts)


def replace_block(document: str) -> str:
    """``document`` with its generated block replaced (appended when it has none)."""
    start, end = document.find(BEGIN), document.find(END)
    if start == -1 or end == -1 or end < start:
        return document.rstrip("\n") + "\n\n" + reference() + "\n"
    return document[:start] + reference() + document[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ctrconv.cli.docgen", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="FILE", help="Regenerate the block in FILE.")
    action.add_argument("--check", type=Path, metavar="FILE", help="Exit 1 if FILE's block is out of date.")
    action.add_argument("--print", action="store_true", help="Print the block.")
    args = parser.parse_args(argv)
    if args.print:
        sys.stdout.write(reference() + "\n")
        return 0
    path = args.write or args.check
    current = path.read_text(encoding="utf-8")
    wanted = replace_block(current)
    if args.check:
        if wanted != current:
            sys.stderr.write(f"{path}: the command reference is out of date (python3 -m ctrconv.cli.docgen --write {path})\n")
            return 1
        return 0
    if wanted != current:
        path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
