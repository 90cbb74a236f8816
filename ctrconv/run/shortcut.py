"""``ctrconv ls`` command lines run without typer.

Why: importing typer and building the click command of ``ls`` is ~40 ms of a ``ctrconv ls``,
a quarter of it on a small root, and ``ls`` is what scripts and operators run most. A command
line made only of the options below, each written the one way click reads without doubt, is
parsed here into what typer would pass to the command, and the command's body
(:func:`ctrconv.run.ls.ls`) runs under the same outcome rules (:mod:`ctrconv.run.outcome`).
Anything else goes to typer, which words usage errors and prints help: ``-h``/``--help``, an
unknown or repeated option, grouped short flags (``-Aq``), ``--opt=`` with no value, a value
starting with ``-``, ``--``, a positional argument, ``CTRCONV_DEBUG`` or click's completion
variable set. A test compares what this parses with click's parse of thousands of command lines.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from ctrconv.run.options import FALSE_WORDS, debug_word

#: flags of ``ls`` -> the command function's parameter
_FLAGS = {"-A": "all_namespaces", "--all-namespaces": "all_namespaces", "--json": "as_json",
          "-q": "quiet", "--quiet": "quiet", "--ignore-lock": "ignore_lock"}
#: options of ``ls`` that take a value -> parameter
_VALUED = {"--root": "root", "-n": "namespace", "--namespace": "namespace", "--platform": "platform"}
#: parameters whose default comes from the environment when it is set and not empty (as click
#: reads ``envvar``), else the typer option's default
_FROM_ENVIRONMENT = {"root": ("CTRCONV_ROOT", "/var/lib/containerd"), "namespace": ("CONTAINERD_NAMESPACE", "default")}


def parse_ls(argv: list[str], environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The keyword arguments typer would call ``ls`` with for ``argv`` (the arguments after the
    program name), and whether ``--debug`` was given, or None when ``argv`` is not a command
    line this module takes (typer then runs it)."""
    args = list(argv)
    debug = args[:1] == ["--debug"]
    if debug:
        args = args[1:]
    if args[:1] != ["ls"] or debug_word(environ) not in FALSE_WORDS or environ.get("_CTRCONV_COMPLETE"):
        return None  # (debugging or a value typer refuses, or shell completion asking typer)
    params: dict[str, Any] = {"all_namespaces": False, "platform": None, "as_json": False, "quiet": False,
                              "ignore_lock": False, "wait": None}
    for name, (variable, default) in _FROM_ENVIRONMENT.items():
        params[name] = environ.get(variable) or default
    given: set[str] = set()
    i = 1
    while i < len(args):
        name, equals, value = args[i].partition("=") if args[i].startswith("--") else (args[i], "", "")
        if name in _FLAGS and not equals:
            key, found = _FLAGS[name], True
        elif name == "--wait" and (value or not equals):
            key, found = "wait", value if equals else "inf"
        elif name in _VALUED:
            key = _VALUED[name]
            if not equals:
                i += 1
                value = args[i] if i < len(args) else ""
            if not value or value.startswith("-"):
                return None
            found = value
        else:
            return None
        if key in given:
            return None
        given.add(key)
        params[key] = found
        i += 1
    if "root" not in given and environ.get("CTRCONV_ROOT") == "":
        return None  # (typer says why an empty CTRCONV_ROOT names no root)
    params["root"] = Path(params["root"])
    params["debug"] = debug
    return params


def take(argv: list[str]) -> Callable[[], int] | None:
    """The run of ``argv`` (its exit code) when this module takes it, else None."""
    if sys.stdout is None or sys.stderr is None:  # started with a standard stream closed: typer's case
        return None
    params = parse_ls(argv)
    if params is None:
        return None
    debug = params.pop("debug")

    def run() -> int:
        from ctrconv.run.outcome import guarded

        def invoke() -> int:  # (the command's imports too: a signal during them is the command's)
            from ctrconv import commitpoint
            from ctrconv.run.ls import ls

            commitpoint.reset()
            return ls(**params) or 0

        return guarded(invoke, debug)

    return run
