"""Plain coercion of the parameter types ctrconv declares, so a command run does not import pydantic.

typer (0.2x) coerces every option value through a pydantic ``TypeAdapter`` built on first use:
that imports pydantic, about 130 ms, more than all the rest of a ``ctrconv ls``. ctrconv's
options are strings, paths, lists of strings, and integers and floats with a lower bound;
their values arrive from click as strings (or as the declared defaults), so coercing them
needs no schema. A value the plain rules cannot take exactly as typer would (a malformed
number, a bound not met, an unexpected type) goes to typer's own coercion, so its messages
and refusals stay the same. With a typer that lacks these internals nothing is changed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, get_args, get_origin

from typer.core import TyperCommand

try:
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer.core import _TyperParameter
except ImportError:  # another typer: its own coercion is used throughout
    RuntimeParam = None  # type: ignore[assignment,misc]

_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
#: the value a plain rule cannot decide; typer's coercion is asked instead
_UNSURE = object()


def _number(kind: type, value: Any, info: Any) -> Any:
    """A default of the right type, or plain digits (``5``, ``0.5``) within the bounds."""
    pattern = _INT if kind is int else _FLOAT
    if type(value) is kind:
        number = value
    elif isinstance(value, str) and pattern.fullmatch(value):
        number = kind(value)
    else:
        return _UNSURE
    if info.clamp:
        return _UNSURE
    if (info.min is not None and number < info.min) or (info.max is not None and number > info.max):
        return _UNSURE
    return number


def _plain(kind: type, value: Any, info: Any) -> Any:
    """``value`` as typer's adapter for ``kind`` would return it, or :data:`_UNSURE`."""
    if kind is str:
        return value if isinstance(value, str) else _UNSURE
    if kind is bool:  # a flag's own value; a string from an environment variable goes to typer
        return value if isinstance(value, bool) else _UNSURE
    if kind is Path:
        if value == "":  # Path("") is the current directory: a variable that expanded to nothing
            raise _empty_path()
        if not isinstance(value, (str, Path)) or (info.readable and os.path.exists(value) and not os.access(value, os.R_OK)):
            return _UNSURE  # typer refuses an unreadable path in its own words
        return Path(value)
    if kind in (int, float):
        return _number(kind, value, info)
    if kind is List:  # a repeated option or a variadic argument of strings
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        return items if all(isinstance(item, str) for item in items) else _UNSURE
    return _UNSURE


def _empty_path() -> Exception:
    """The usage error of an empty path option (``--root ""``: with ``--root "$ROOT"`` and the
    variable unset, ``import`` made the current directory a containerd root)."""
    import typer

    return typer.BadParameter("an empty path names nothing (did a variable expand to nothing?)")


def _kind(descriptor: Any) -> type | None:
    """The plain rule for a parameter, or None for one typer must coerce itself."""
    annotation, info = descriptor.annotation, descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None:
        return None
    if get_origin(annotation) is list:
        return List if get_args(annotation) == (str,) else None
    if annotation is Path:
        plain_path = not (info.allow_dash or info.path_type is not None or info.resolve_path or info.exists
                          or info.writable or not info.file_okay or not info.dir_okay)
        return Path if plain_path else None
    if annotation in (str, bool, int, float):
        return annotation  # type: ignore[no-any-return]
    return None


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _PlainParam(RuntimeParam):  # type: ignore[misc,valid-type]
        """Coercion without pydantic; typer's own for what it cannot decide."""

        kind: type = str

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            result = _plain(self.kind, value, self.parameter_info)
            if result is _UNSURE:
                typer_own = build_runtime_param(param.type_descriptor)
                return typer_own._coerce_value(value, param=param, ctx=ctx)
            return result


def use_plain_coercion(params: list[Any]) -> list[Any]:
    """Give ``params`` (a command's, its help option included) the plain rules; returns them."""
    if RuntimeParam is None:
        return params
    for param in params:
        if not isinstance(param, _TyperParameter) or getattr(param, "_runtime_param", True) is not None:
            continue
        kind = _kind(param.type_descriptor)
        if kind is not None:
            descriptor = param.type_descriptor
            param._runtime_param = _PlainParam(
                parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, kind=kind)
    return params


class PlainCommand(TyperCommand):
    """A typer command whose parameters (and ``--help``, made on first use) coerce plainly."""

    def get_params(self, ctx: Any) -> list[Any]:
        return use_plain_coercion(super().get_params(ctx))
