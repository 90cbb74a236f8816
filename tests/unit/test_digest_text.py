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


def test_remembered_answers_are_the_regular_expressions_and_stop_at_the_limit(monkeypatch) -> None:
    """Canonical texts are remembered (asked again, the answer comes from the set), refused
    ones never are, and the set is emptied at its limit while the answers stay the same."""
    from ctrconv import digest

    monkeypatch.setattr(digest, "_KNOWN_CANONICAL", set())
    monkeypatch.setattr(digest, "KNOWN_CANONICAL_LIMIT", 5)
    rng = random.Random(7)
    texts = [f"sha256:{rng.getrandbits(256):064x}" for _ in range(8)] + ["sha256:" + "A" * 64, "sha256:../x"]
    for _ in range(3):
        for text in texts:
            assert is_canonical(text) == _parse_agrees(text), text
    assert 1 <= len(digest._KNOWN_CANONICAL) <= 5 and digest._KNOWN_CANONICAL <= set(texts[:8])
    assert texts[7] in digest._KNOWN_CANONICAL  # the last one asked about
