"""The console script and ``python -m ctrconv``: signal handlers first, heavy imports after.

Importing the CLI pulls in typer and the command's module (tens of milliseconds, more on a
loaded machine); a Ctrl-C in that time must give one line and exit 130, not a
``KeyboardInterrupt`` traceback. ``--version`` is answered here, without the CLI.
"""

from __future__ import annotations

import sys

from ctrconv import interrupts


def _version_only(argv: list[str]) -> bool:
    """``ctrconv --version`` (``--debug`` aside): answered before typer is imported, as the
    CLI's eager ``--version`` would answer it."""
    return "--version" in argv and set(argv) <= {"--version", "--debug"}


def _print_version() -> int:
    from ctrconv import __version__

    if sys.stdout is None:  # started with standard output closed
        if sys.stderr is not None:
            sys.stderr.write("ctrconv: error: standard output is closed\n")
        return 1
    try:
        sys.stdout.write(f"ctrconv {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (``| head -c0``): as the CLI, no message
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    interrupts.install_early()
    if _version_only(sys.argv[1:] if argv is None else argv):
        code = _print_version()
        interrupts.ignore_from_now_on()
        raise SystemExit(code)
    try:
        from ctrconv.cli import main as cli_main

        cli_main(argv)
    finally:
        # the command has decided its outcome: a signal now must not kill the process while
        # the interpreter shuts down (which puts Python handlers back to SIG_DFL, and a
        # Ctrl-C then ends the process by the signal instead of the command's exit code)
        interrupts.ignore_from_now_on()
