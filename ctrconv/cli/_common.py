"""Shared CLI plumbing: options, output, and the one error exit path (progress bars: :mod:`ctrconv.run.bars`)."""

from __future__ import annotations

import errno

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ctrconv import commitpoint
from ctrconv.errors import UsageError
# (the command modules import these from here too)
from ctrconv.run.options import WAIT_FOREVER, debug_from_environment, wait_seconds  # noqa: F401
from ctrconv.run.outcome import EXIT_BROKEN_PIPE, error_line, guarded, print_json  # noqa: F401
from ctrconv.run.export import check_layout_output, skipped_platform_lines  # noqa: F401


@dataclass
class _State:
    debug: bool = debug_from_environment()


STATE = _State()

def _root_from_environment(ctx: typer.Context, param: typer.CallbackParam, value: Path) -> Path:
    """``CTRCONV_ROOT=""`` (a variable that expanded to nothing) names no root: click takes an
    empty variable for an unset one, and the default root, ``/var/lib/containerd``, was written."""
    import os

    source = ctx.get_parameter_source(param.name or "root")  # (typer's own click: compared by name)
    # a command told to read something else (verify -i LAYOUT, dump FILE: given, so taken
    # before this defaulted option) reads no root
    reads_other = ctx.params.get("layout") is not None or ctx.params.get("dbfile") is not None
    if os.environ.get("CTRCONV_ROOT") == "" and getattr(source, "name", None) == "DEFAULT" and not reads_other:
        raise typer.BadParameter("CTRCONV_ROOT is set but empty: it names no root (unset it, or give --root)")
    return value


ROOT_OPTION = typer.Option(
    Path("/var/lib/containerd"), "--root", envvar="CTRCONV_ROOT", help="containerd root directory.",
    callback=_root_from_environment,
)
NAMESPACE_OPTION = typer.Option(
    "default", "-n", "--namespace", envvar="CONTAINERD_NAMESPACE", help="containerd namespace."
)
JSON_OPTION = typer.Option(False, "--json", help="Machine-readable output on stdout (one JSON document).")
QUIET_OPTION = typer.Option(False, "-q", "--quiet", help="No progress bars.")
WAIT_OPTION = typer.Option(
    None, "--wait", metavar="[=SECONDS]",
    help="When another ctrconv holds the root, wait for it (without a limit, or up to SECONDS: --wait=30) "
         "instead of refusing.",
)
IGNORE_LOCK_OPTION = typer.Option(
    False, "--ignore-lock", help="Read a root that a running containerd holds, from a consistent private copy."
)


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``20G``, ``512M``, ``1048576`` -> bytes (binary units; a trailing ``B``/``iB`` is fine)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    try:
        size = int(float(number) * _SIZE_UNITS[unit])
    except ValueError:
        raise UsageError(f"invalid size {text!r} (use e.g. 20G, 512M or a number of bytes)") from None
    if size <= 0:
        raise UsageError(f"invalid size {text!r}: must be positive")
    return size


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(exit, abort, usage) exception classes of the click typer runs on.

    typer >= 0.27 vendors click as ``typer._click``; older releases use ``click`` itself.
    """
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    usage: list[type] = []
    click = sys.modules.get("click")  # only a typer that runs on click itself has imported it
    if click is not None:
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
        usage.append(click.ClickException)
    try:
        from typer._click import exceptions as vendored  # type: ignore[import-not-found]

        usage.append(vendored.ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(aborts), tuple(usage)


_EXIT, _ABORT, _USAGE = _click_exceptions()


def plain_metavars(group: object) -> None:
    """Show ``--image IMAGE`` in help, not typer's ``<list[str]>`` type names (a group and the
    commands it holds, or one command)."""
    commands = getattr(group, "commands", {}) or {}
    for command in [group, *commands.values()]:
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and param.metavar is None and not param.is_flag and param.name:
                param.metavar = param.name.upper().replace("-", "_")


def run(app: typer.Typer, argv: list[str]) -> int:
    """Run the typer app; return the exit code (0, 1 operation failed, 2 usage)."""
    # decided per run: the callback sets STATE.debug only while the command runs, so a value
    # left by an earlier in-process run (a library caller, a test) must not count
    STATE.debug = debug_from_environment()
    debug = STATE.debug or "--debug" in argv
    commitpoint.reset()
    # ``--wait`` alone = wait without a limit; ``--wait=SECONDS`` sets one (click cannot
    # express an option whose value is optional)
    argv = [WAIT_FOREVER if arg == "--wait" else arg for arg in argv]

    def invoke() -> int:
        try:
            command = typer.main.get_command(app)
            plain_metavars(command)
            result = command.main(args=argv, prog_name="ctrconv", standalone_mode=False)
            # click returns the code of a ``typer.Exit`` instead of raising it in this mode
            return result if isinstance(result, int) else 0
        except _EXIT as exc:
            return int(getattr(exc, "exit_code", 0) or 0)
        except SystemExit as exc:
            # click ends a command whose stdout's reader went away with exit 1, even out of
            # standalone mode: that is outcome.EXIT_BROKEN_PIPE here, never verify's 1
            if isinstance(exc.__context__, OSError) and exc.__context__.errno == errno.EPIPE:
                return 0 if commitpoint.passed() else EXIT_BROKEN_PIPE  # (see outcome.guarded)
            raise
        except _ABORT:
            error_line("aborted")
            return 1
        except _USAGE as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare ``ctrconv``: show the help
                sys.stdout.write(exc.format_message().rstrip() + "\n")
                return 2
            error_line(exc.format_message())
            return 2

    return guarded(invoke, debug)
