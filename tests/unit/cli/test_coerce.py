"""The CLI's plain option coercion (``ctrconv.cli._coerce``) agrees with typer's own: for every
value it decides, the result is exactly what typer's pydantic adapter returns; anything else it
leaves to typer (so typer's refusals and messages stay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest

from ctrconv.cli import _coerce

typer_coercion = pytest.importorskip("typer._coercion")
from typer.models import OptionInfo  # noqa: E402

VALUES: list[Any] = ["5", "007", "0", "1.5", ".5", "5.", "abc", " 5", "-1", "1e3", "", "/x/y", "-", "~/a", 5, 0.5, True,
                    ("a", "b"), (), ["c"]]
CASES = [
    (str, OptionInfo()), (Path, OptionInfo()), (bool, OptionInfo()), (List[str], OptionInfo()),
    (int, OptionInfo()), (int, OptionInfo(min=1)), (float, OptionInfo(min=0.0)), (int, OptionInfo(max=3)),
]


def typer_bad_parameter() -> type:
    import typer

    return typer.BadParameter  # type: ignore[no-any-return]


def _typer(annotation: Any, info: OptionInfo, value: Any) -> tuple[str, Any]:
    descriptor = typer_coercion.resolve_type_descriptor(annotation, info)
    try:
        return "ok", typer_coercion.build_runtime_param(descriptor)._coerce_value(value, param=None, ctx=None)
    except Exception as exc:  # typer's refusal (BadParameter) or pydantic's
        return "refused", type(exc).__name__


@pytest.mark.parametrize("annotation,info", CASES, ids=[f"{a}-{i.min}-{i.max}" for a, i in CASES])
def test_plain_coercion_matches_typer_or_defers(annotation: Any, info: OptionInfo) -> None:
    descriptor = typer_coercion.resolve_type_descriptor(annotation, info)
    kind = _coerce._kind(descriptor)
    assert kind is not None, annotation  # every type ctrconv declares has a plain rule
    decided = 0
    for value in VALUES:
        if annotation is Path and value == "":
            # the one deliberate difference: typer takes "" for the current directory
            with pytest.raises(typer_bad_parameter()):
                _coerce._plain(kind, value, info)
            continue
        mine = _coerce._plain(kind, value, info)
        if mine is _coerce._UNSURE:
            continue
        decided += 1
        outcome, theirs = _typer(annotation, info, value)
        assert outcome == "ok" and theirs == mine and type(theirs) is type(mine), (annotation, value, mine, theirs)
    assert decided  # the plain rules decide the ordinary values


def test_an_unsure_value_gets_typers_refusal() -> None:
    """``--jobs 0`` with ``min=1``: not decided here, refused by typer as before."""
    info = OptionInfo(min=1)
    assert _coerce._plain(int, "0", info) is _coerce._UNSURE
    assert _typer(int, info, "0")[0] == "refused"
