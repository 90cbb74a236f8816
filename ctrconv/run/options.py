"""Option values whose parsing the typer CLI and the shortcut share."""

from __future__ import annotations

import os
from typing import Mapping

from ctrconv.errors import UsageError

#: ``--wait`` given alone: the command line as typer receives it (click cannot express an
#: option whose value is optional)
WAIT_FOREVER = "--wait=inf"


#: click's boolean words (``BoolParamType``), as typer reads ``CTRCONV_DEBUG``; any other value
#: is typer's usage error
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off", ""})


def debug_word(environ: Mapping[str, str] = os.environ) -> str:
    """``CTRCONV_DEBUG`` as click compares it (stripped, lower case; "" when unset)."""
    return environ.get("CTRCONV_DEBUG", "").strip().lower()


def debug_from_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``CTRCONV_DEBUG`` asks for tracebacks: ``CTRCONV_DEBUG=0`` (or false, no, off)
    does not, as ``--debug``'s own reading of the variable says."""
    return debug_word(environ) in TRUE_WORDS


def wait_seconds(value: str | None) -> float | None:
    """``--wait`` -> inf, ``--wait=30`` -> 30.0, absent -> None (refuse at once)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"--wait takes a number of seconds, not {value!r}") from None
    if seconds < 0 or seconds != seconds:
        raise UsageError(f"--wait takes a number of seconds, not {value!r}")
    return seconds
