"""Findings that are reported but not fixed yet, so CI stays green while they stay visible.

Each entry names the bug precisely. The regression corpus replays every saved input; inputs
whose finding is listed here are ``xfail(strict=True)``, so the day the owner fixes the bug
the replay starts passing and the entry must be removed.

Fixed and removed: PAX numbers that tarfile rejects with ValueError, uids/gids beyond 32 bits
(OverflowError), the GNU sparse bomb (checked against free space before writing) and entries
whose size lies (their data is read, so the stream ends in a FormatError instead of tarfile's
seek loop) - all in ``ctrconv/layers/apply.py``.
"""

from __future__ import annotations

import fnmatch

from fuzz.bounds import Finding, signature

#: signature pattern (fnmatch) -> what is wrong and where (see docs/testing.md, "Open findings")
KNOWN_OPEN: dict[str, str] = {}


def layer_hang(data: bytes) -> str | None:
    """The known hang a layer input triggers: none are open any more."""
    return None


def known_open(target: str, data: bytes, finding: Finding) -> str | None:
    """Why this finding is already known (and reported), or None for a new one."""
    return known_signature(signature(finding))


def known_signature(sig: str) -> str | None:
    for pattern, why in KNOWN_OPEN.items():
        if fnmatch.fnmatchcase(sig, pattern):
            return why
    return None
