"""The ``ctrconv`` command line: a thin typer layer over :mod:`ctrconv.api`.

Errors from the library become one ``ctrconv: error: ...`` line and the error's exit code;
tracebacks only with ``--debug``.
"""

from __future__ import annotations

import sys

import typer

from ctrconv import interrupts
from ctrconv.cli import _common

app = typer.Typer(
    name="ctrconv",
    help="Move container images in and out of containerd's on-disk store without the daemon.",
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from ctrconv import __version__

        sys.stdout.write(f"ctrconv {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.", envvar="CTRCONV_DEBUG"),
    version: bool = typer.Option(
        False, "--version", is_eager=True, expose_value=False, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    _common.STATE.debug = debug


def _register() -> None:
    from ctrconv.cli import commands  # noqa: F401  (registers every command on ``app``)


def main(argv: list[str] | None = None) -> None:
    """Run the app and map errors to exit codes (the process entry is :mod:`ctrconv.entry`,
    which installs the signal handlers before this module is imported)."""
    _register()
    # Names read from damaged or foreign stores may hold bytes that are not UTF-8 (decoded with
    # surrogateescape); show them escaped instead of failing on output.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    with interrupts.command_running():
        code = _common.run(app, argv if argv is not None else sys.argv[1:])
        late = interrupts.late_signals()
        if late and code == 0:
            # the command had passed its commit point: what it reported is written
            _common.warning_line(f"{interrupts.word(late[0])} after writing; the command had completed")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass
    raise SystemExit(code)
