"""The console script and ``python -m ctrconv``: signal handlers first, heavy imports after.

Importing the CLI pulls in typer, jsonschema and every command module (about 0.4 s); a
Ctrl-C in that time must give one line and exit 130, not a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

from ctrconv import interrupts


def main(argv: list[str] | None = None) -> None:
    interrupts.install_early()
    try:
        from ctrconv.cli import main as cli_main

        cli_main(argv)
    finally:
        # the command has decided its outcome: a signal now must not kill the process while
        # the interpreter shuts down (which puts Python handlers back to SIG_DFL, and a
        # Ctrl-C then ends the process by the signal instead of the command's exit code)
        interrupts.ignore_from_now_on()
