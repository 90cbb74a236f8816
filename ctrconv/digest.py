"""Digest value type with strict validation, so no digest string ever becomes an unsafe path."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from ctrconv.errors import InvalidDigestError

#: algorithm -> exact hex length. containerd accepts these three (go-digest's registry).
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+\Z")
#: the canonical text of every digest :meth:`Digest.parse` accepts (one per algorithm)
_CANONICAL = re.compile("|".join(f"{algorithm}:[0-9a-f]{{{length}}}" for algorithm, length in ALGORITHMS.items()))


#: canonical digest texts matched lately, so a text asked about again soon costs a set lookup:
#: ``ls`` of a large root asks about each digest three times while it summarises one image
#: (its document's schema pattern, its descriptor's check, the content lookup), each ~0.6-1 us
#: as a regular expression
_KNOWN_CANONICAL: set[str] = set()
#: the set is emptied when it holds this many (~1 MB): the repeated questions come close
#: together, and remembering every digest of a 10,000-image root kept the strings of documents
#: long let go alive (5 MiB more at the peak of a rebuild)
KNOWN_CANONICAL_LIMIT = 1 << 13


def is_canonical(text: str) -> bool:
    """Whether ``Digest.parse(text)`` succeeds and ``str()`` of it is ``text`` again: one
    regular expression instead of a :class:`Digest` made and dropped, and a set lookup for a
    text seen before."""
    if text in _KNOWN_CANONICAL:
        return True
    if _CANONICAL.fullmatch(text) is None:
        return False
    if len(_KNOWN_CANONICAL) >= KNOWN_CANONICAL_LIMIT:
        _KNOWN_CANONICAL.clear()
    _KNOWN_CANONICAL.add(text)
    return True


@dataclass(frozen=True, order=True)
class Digest:
    """``algorithm:hex``, validated on construction. ``str(d)`` gives the canonical form."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        want = ALGORITHMS.get(self.algorithm)
        if want is None:
            raise InvalidDigestError(f"unsupported digest algorithm {self.algorithm!r}")
        if len(self.hex) != want or not _HEX.match(self.hex):
            raise InvalidDigestError(
                f"invalid {self.algorithm} digest {self.algorithm}:{self.hex[:80]!r}"
            )

    @classmethod
    def parse(cls, text: object) -> "Digest":
        """Parse ``sha256:<64 hex>``; anything else (``sha256:../../x``) is refused."""
        if type(text) is str and cls is Digest:  # the common case first: a walk parses 150,000
            return _parse_text(text)
        if isinstance(text, Digest):
            return text
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise InvalidDigestError(f"invalid digest {text[:80]!r}") from None
        if not isinstance(text, str):
            raise InvalidDigestError(f"invalid digest {text!r}")
        return _parse_text(text) if cls is Digest else cls._from_text(text)

    @classmethod
    def _from_text(cls, text: str) -> "Digest":
        alg, sep, hexpart = text.partition(":")
        if not sep:
            raise InvalidDigestError(f"invalid digest {text[:80]!r}: no algorithm")
        return cls(alg, hexpart)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]

    def hasher(self) -> "hashlib._Hash":
        return hashlib.new(self.algorithm)

    @classmethod
    def from_bytes(cls, data: bytes, algorithm: str = "sha256") -> "Digest":
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


@lru_cache(maxsize=1 << 12)
def _parse_text(text: str) -> Digest:
    """:meth:`Digest.parse` of a string, remembered: a digest is immutable, and ``ls`` or
    ``verify`` of a large root parse the same few thousand digests hundreds of thousands of
    times (a refused text raises every time; exceptions are not cached). The last 4,096 used:
    the shared ones (base layers) stay, and an image's own are parsed again while it is worked
    on; 65,536 held ~25 MiB at 20,000 images, a tenth of an export's peak."""
    return Digest._from_text(text)
