"""``digest.is_canonical`` is exactly "``Digest.parse`` accepts the text and gives it back"."""

from __future__ import annotations

import random

import pytest

from ctrconv.digest import ALGORITHMS, Digest, is_canonical
from ctrconv.errors import InvalidDigestError


def _parse_agrees(text: str) -> bool:
    try:
        return str(Digest.parse(text)) == text
    except InvalidDigestError:
        return False


@pytest.mark.parametrize("text", [
    *(f"{algorithm}:{'a' * length}" for algorithm, length in ALGORITHMS.items()),
    *(f"{algorithm}:{'a' * (length + d)}" for algorithm, length in ALGORITHMS.items() for d in (-1, 1)),
    "sha256:" + "A" * 64, "SHA256:" + "a" * 64, "sha256:" + "a" * 64 + "\n", "sha256:" + "a" * 63 + "\n",
    "sha256:../../x", "sha256::" + "a" * 63, "md5:" + "a" * 32, "sha256:", ":" + "a" * 64, "", "sha256",
    "sha256:" + "a" * 63 + "g", " sha256:" + "a" * 64, "sha384:" + "a" * 64, "sha512:" + "a" * 96,
])
def test_named_cases(text: str) -> None:
    assert is_canonical(text) == _parse_agrees(text)


def test_random_texts_near_digests() -> None:
    rng = random.Random(20261206)
    for _ in range(20000):
        algorithm = rng.choice([*ALGORITHMS, "sha1", "SHA256", "", "sha256 "])
        length = rng.choice([*ALGORITHMS.values(), 0, 1, 63, 65, 95, 97, 127, 129])
        separator = rng.choice([":", ":", ":", "::", "", "/"])
        alphabet = rng.choice(["0123456789abcdef", "0123456789abcdefABCDEF\n/.g"])
        text = algorithm + separator + "".join(rng.choice(alphabet) for _ in range(length))
        assert is_canonical(text) == _parse_agrees(text), text
