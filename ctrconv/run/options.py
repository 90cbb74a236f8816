"""Option values whose parsing the typer CLI and the shortcut share."""

from __future__ import annotations

from ctrconv.errors import UsageError

#: ``--wait`` given alone: the command line as typer receives it (click cannot express an
#: option whose value is optional)
WAIT_FOREVER = "--wait=inf"


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
