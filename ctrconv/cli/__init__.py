"""The ``ctrconv`` command line: a thin typer layer over :mod:`ctrconv.api`.

Errors from the library become one ``ctrconv: error: ...`` line and the error's exit code;
tracebacks only with ``--debug``.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from typer.core import TyperGroup

from ctrconv.cli import _common
from ctrconv.cli._coerce import PlainCommand, use_plain_coercion
from ctrconv.cli.commands import COMMANDS
from ctrconv.run.outcome import finish


class _LazyGroup(TyperGroup):
    """The command group that imports a command's module only when that command runs or
    ``--help`` lists it, so ``ctrconv ls`` does not pay for import's or export's imports."""

    def list_commands(self, ctx: object) -> list[str]:  # type: ignore[override]
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: object, cmd_name: str) -> object:  # type: ignore[override]
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = _load(cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: object, args: list[str]) -> tuple:  # type: ignore[override]
        if args and args[0] not in COMMANDS and args[0] not in self.commands:
            # an unknown name: "Did you mean ...?" is chosen among every command's name
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)  # type: ignore[arg-type]

    def get_params(self, ctx: object) -> list:  # type: ignore[override]
        return use_plain_coercion(super().get_params(ctx))  # type: ignore[arg-type]


class _App(typer.Typer):
    """The app whose commands coerce their options without pydantic (:mod:`ctrconv.cli._coerce`)."""

    def command(self, name: str | None = None, *, cls: type | None = None, **settings: object):  # type: ignore[override]
        return super().command(name, cls=cls or PlainCommand, **settings)  # type: ignore[arg-type]


app = _App(
    cls=_LazyGroup,
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


def _load(name: str) -> typer.core.TyperCommand:
    """The click command ``name``: its module registers it on ``app`` when imported."""
    importlib.import_module(COMMANDS[name])
    for info in app.registered_commands:
        if info.name == name:
            command = typer.main.get_command_from_info(
                info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode)
            _common.plain_metavars(command)
            return command  # type: ignore[return-value]
    raise LookupError(f"{COMMANDS[name]} registers no command {name!r}")


def _register() -> None:
    """Import every command module (docgen, the schema tests); a run imports only its own."""
    for module in COMMANDS.values():
        importlib.import_module(module)


#: the shells typer writes completion scripts for
COMPLETION_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def names_a_completion_shell(argv: list[str]) -> bool:
    """Whether ``argv`` names the shell of ``--show-completion``/``--install-completion``
    (``--show-completion bash``, ``--show-completion=zsh``)."""
    for i, arg in enumerate(argv):
        option, equals, value = arg.partition("=")
        if option in ("--show-completion", "--install-completion"):
            named = value if equals else (argv[i + 1] if i + 1 < len(argv) else "")
            return named in COMPLETION_SHELLS
    return False


def main(argv: list[str] | None = None) -> None:
    """Run the app and map errors to exit codes (the process entry is :mod:`ctrconv.entry`,
    which installs the signal handlers before this module is imported; command modules are
    imported by :class:`_LazyGroup` as needed).

    A shell named after ``--show-completion``/``--install-completion`` is the one used: with
    ``shellingham`` installed typer takes the shell from the process's ancestors instead (and
    the name for an extra argument), so ``RUN ctrconv --show-completion bash > ...`` in an
    image build (under ``/bin/sh``) failed, and ``--show-completion zsh`` under bash printed
    bash's script. Typer declares the options taking a shell name when its detection is off."""
    args = argv if argv is not None else sys.argv[1:]
    if not names_a_completion_shell(args):
        finish(lambda: _common.run(app, args))
        return
    # (only for this run: a caller's later runs in the same process detect the shell again)
    before = os.environ.get(_NO_SHELL_DETECTION)
    os.environ[_NO_SHELL_DETECTION] = "1"
    try:
        finish(lambda: _common.run(app, args))
    finally:
        if before is None:
            os.environ.pop(_NO_SHELL_DETECTION, None)
        else:
            os.environ[_NO_SHELL_DETECTION] = before


#: typer's switch for declaring the completion options with a shell name (detection off)
_NO_SHELL_DETECTION = "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"
