"""Go ``encoding/json`` output, byte for byte: the documents ctrconv makes itself.

ctrconv never re-serialises a document it read (content is addressed by its exact bytes); the
documents it creates (``index.json``, docker ``manifest.json``, synthesised manifests of docker
archives, rewritten manifests and configs) are written as Go's ``json.Marshal`` writes the
matching struct, so they are byte-identical to containerd's and Docker's.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: lists longer than this are encoded one element at a time (see :func:`_go_encode`)
_JOIN_ITEMS_OVER = 64
_GO_NEEDS_ESCAPE = re.compile("[\x00-\x1f\"\\\\<>&\u2028\u2029\ud800-\udfff]")


def _go_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _GO_ESCAPES:
        return _GO_ESCAPES[ch]
    if "\ud800" <= ch <= "\udfff":
        return "\ufffd"  # Go writes invalid UTF-8 as U+FFFD
    return f"\\u{ord(ch):04x}"


def _go_string(text: str) -> str:
    return '"' + _GO_NEEDS_ESCAPE.sub(_go_escape, text) + '"'


def _go_encode(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, str):
        out.append(_go_string(obj))
    elif isinstance(obj, Mapping):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(_go_string(key))
            out.append(":")
            _go_encode(value, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            if len(obj) > _JOIN_ITEMS_OVER:
                # one string per element: a long list (index.json of 10,000 images) would
                # otherwise hold millions of small pieces at once, ~10x the output's size
                piece: list[str] = []
                _go_encode(value, piece)
                out.append("".join(piece))
            else:
                _go_encode(value, out)
        out.append("]")
    else:
        raise TypeError(f"cannot marshal {type(obj).__name__} like Go's encoding/json")


def marshal_go(obj: Any) -> bytes:
    """Bytes equal to Go's ``json.Marshal`` (pre-1.22 escaping: ``<>&`` as ``\\u003c``…,
    control characters other than ``\\n\\r\\t`` as ``\\u00XX``) for a value built from dicts
    in struct field order, lists, strings, ints, bools and None. Floats are refused."""
    out: list[str] = []
    _go_encode(obj, out)
    return "".join(out).encode("utf-8")
