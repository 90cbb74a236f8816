"""Human output that stays one line per line, and never a terminal control sequence.

Names shown to the user come from archives, stores and the command line: an image name can
hold a newline, a carriage return or an escape sequence (``ok:1\\r\\x1b[2K\\x1b[31mFAKE``). Written
as they are, they erase and recolour the terminal, forge lines, split ``ls -q``'s one name per
line and make a one-line error two. Every human line goes out through :func:`one_line`: C0
controls (newline, tab and escape included), DEL and the C1 controls are shown as ``\\n``,
``\\r``, ``\\t`` or ``\\xNN``. ``--json`` needs none of this (JSON escapes them itself).
"""

from __future__ import annotations

import re
from typing import TextIO

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: "re.Match[str]") -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (printable text as it is)."""
    if text.isprintable():  # (nearly every line: one C call)
        return text
    return _CONTROL.sub(_escaped, text)


def write_line(stream: TextIO, text: str) -> None:
    """``text`` as one line of ``stream``."""
    stream.write(one_line(text) + "\n")


class LineWriter:
    """A stream for reports written a line per ``write`` (each ending in a newline): what each
    line holds is escaped, its own newline kept."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        if text.endswith("\n"):
            write_line(self.stream, text[:-1])
        else:
            self.stream.write(one_line(text))
