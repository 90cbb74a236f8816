"""``ctrconv ls`` and plain ``ctrconv export`` command lines run without typer.

Why: importing typer and building the click command is ~40 ms of a ``ctrconv ls``, a quarter
of it on a small root, and ``ls`` is what scripts and operators run most; for ``export`` it
is a good part of what a ~150 MB image's export costs beyond copying and hashing its bytes.
A command line made only of the options below, each written the one way click reads without
doubt, is parsed here into what typer would pass to the command, and the command's body
(:func:`ctrconv.run.ls.ls`, :func:`ctrconv.run.export.export`) runs under the same outcome
rules (:mod:`ctrconv.run.outcome`). Anything else goes to typer, which words usage errors and
prints help: ``-h``/``--help``, an unknown or repeated option (but ``--image`` and
``--platform`` of an export), grouped short flags (``-Aq``), ``--opt=`` with no value, a
value starting with ``-``, ``--``, a positional argument (but an export's image references, which
follow its ``--image`` values as the typer command takes them), ``CTRCONV_DEBUG`` or click's
completion variable set; for an export also anything but one image set (``--image`` or a
reference, or ``--all``, not both) and an ``-o`` to a file or directory in a format the body
writes. A test compares what this parses with click's parse of thousands of command lines.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ctrconv.run.options import FALSE_WORDS, debug_word


@dataclass(frozen=True)
class _Spec:
    """The options of one command this module parses, by how they are written."""

    #: flags -> the command function's parameter
    flags: Mapping[str, str]
    #: options that take a value -> parameter
    valued: Mapping[str, str]
    #: of those, the parameters that may be given more than once (a list, in order)
    repeatable: frozenset[str]
    #: every parameter's value when not given (the environment's below aside)
    defaults: Mapping[str, Any]
    #: the parameter positional arguments are appended to (None: the command takes none)
    positional: str | None = None


#: parameters whose default comes from the environment when it is set and not empty (as click
#: reads ``envvar``), else the typer option's default
_FROM_ENVIRONMENT = {"root": ("CTRCONV_ROOT", "/var/lib/containerd"), "namespace": ("CONTAINERD_NAMESPACE", "default")}

_LS = _Spec(
    flags={"-A": "all_namespaces", "--all-namespaces": "all_namespaces", "--json": "as_json",
           "-q": "quiet", "--quiet": "quiet", "--ignore-lock": "ignore_lock"},
    valued={"--root": "root", "-n": "namespace", "--namespace": "namespace", "--platform": "platform"},
    repeatable=frozenset(),
    defaults={"all_namespaces": False, "platform": None, "as_json": False, "quiet": False, "ignore_lock": False,
              "wait": None},
)

_EXPORT = _Spec(
    flags={"--all": "all_images", "--all-platforms": "all_platforms", "--json": "as_json", "-q": "quiet",
           "--quiet": "quiet", "--ignore-lock": "ignore_lock", "--link": "link"},
    valued={"--root": "root", "-n": "namespace", "--namespace": "namespace", "--image": "image",
            "-o": "output", "--output": "output", "--format": "fmt", "-f": "fmt", "--platform": "platform"},
    repeatable=frozenset({"image", "platform"}),
    defaults={"image": None, "all_images": False, "output": None, "fmt": None, "platform": None,
              "all_platforms": False, "link": False, "as_json": False, "quiet": False, "ignore_lock": False,
              "wait": None},
    positional="image",  # (typer: ``--image`` values, then the REF arguments)
)

#: the formats :func:`ctrconv.run.export.export` writes (``api.EXPORT_FORMATS``, not imported here)
_EXPORT_FORMATS = ("oci-dir", "oci-tar", "docker-archive", "dir")

_SPECS = {"ls": _LS, "export": _EXPORT}


def parse(argv: list[str], environ: Mapping[str, str] = os.environ) -> tuple[str, dict[str, Any]] | None:
    """(command, the keyword arguments typer would call it with for ``argv``, the arguments after
    the program name, with whether ``--debug`` was given), or None when ``argv`` is not a command
    line this module takes (typer then runs it)."""
    args = list(argv)
    debug = args[:1] == ["--debug"]
    if debug:
        args = args[1:]
    spec = _SPECS.get(args[0]) if args else None
    if spec is None or debug_word(environ) not in FALSE_WORDS or environ.get("_CTRCONV_COMPLETE"):
        return None  # (debugging or a value typer refuses, or shell completion asking typer)
    params: dict[str, Any] = dict(spec.defaults)
    for name, (variable, default) in _FROM_ENVIRONMENT.items():
        params[name] = environ.get(variable) or default
    given: set[str] = set()
    positional: list[str] = []
    i = 1
    while i < len(args):
        if spec.positional is not None and not args[i].startswith("-"):
            positional.append(args[i])
            i += 1
            continue
        name, equals, value = args[i].partition("=") if args[i].startswith("--") else (args[i], "", "")
        if name in spec.flags and not equals:
            key, found = spec.flags[name], True
        elif name == "--wait" and (value or not equals):
            key, found = "wait", value if equals else "inf"
        elif name in spec.valued:
            key = spec.valued[name]
            if not equals:
                i += 1
                value = args[i] if i < len(args) else ""
            if not value or value.startswith("-"):
                return None
            found = value
        else:
            return None
        if key in spec.repeatable:
            params[key] = [*(params[key] or []), found]
        elif key in given:
            return None
        given.add(key)
        if key not in spec.repeatable:
            params[key] = found
        i += 1
    if positional:
        assert spec.positional is not None
        params[spec.positional] = [*(params[spec.positional] or []), *positional]
    if "root" not in given and environ.get("CTRCONV_ROOT") == "":
        return None  # (typer says why an empty CTRCONV_ROOT names no root)
    if spec is _EXPORT and not _plain_export(params):
        return None
    params["root"] = Path(params["root"])
    params["debug"] = debug
    return args[0], params


def _plain_export(params: Mapping[str, Any]) -> bool:
    """An export the shared body runs as the typer command would: one image set, an output,
    and a format it writes (the typer command judges the rest and words their errors)."""
    return (bool(params["image"]) != params["all_images"] and params["output"] is not None
            and params["fmt"] in (None, *_EXPORT_FORMATS))


def parse_ls(argv: list[str], environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """:func:`parse` of an ``ls`` command line; None for any other."""
    parsed = parse(argv, environ)
    return parsed[1] if parsed is not None and parsed[0] == "ls" else None


def take(argv: list[str]) -> Callable[[], int] | None:
    """The run of ``argv`` (its exit code) when this module takes it, else None."""
    if sys.stdout is None or sys.stderr is None:  # started with a standard stream closed: typer's case
        return None
    parsed = parse(argv)
    if parsed is None:
        return None
    command, params = parsed
    debug = params.pop("debug")

    def run() -> int:
        from ctrconv.run.outcome import guarded

        def invoke() -> int:  # (the command's imports too: a signal during them is the command's)
            from ctrconv import commitpoint

            commitpoint.reset()
            if command == "ls":
                from ctrconv.run.ls import ls

                return ls(**params) or 0
            from ctrconv.run.export import export

            given = dict(params)
            images = given.pop("image")
            export(given.pop("root"), given.pop("output"), images=None if given.pop("all_images") else images, **given)
            return 0

        return guarded(invoke, debug)

    return run
