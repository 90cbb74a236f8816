"""``indented`` is ``json.dumps(indent=2, sort_keys=False, default=str)``, byte for byte."""

from __future__ import annotations

import enum
import json
import math
import random
from pathlib import Path

import pytest

from ctrconv.run.jsontext import MAX_DEPTH, indented


def _reference(document):
    return json.dumps(document, indent=2, sort_keys=False, default=str)


class _Level(enum.IntEnum):
    HIGH = 3


class _Tagged(str):
    pass


def _random(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "float", "none", "bool", "path", "enum", "tagged"]
    if depth < 5:
        kinds += ["list", "tuple", "dict", "dict", "empty"]
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice(['a', 'é', '"', '\\', '\n', '\x00', '\u2028', '😀', ' ', '/']) for _ in range(rng.randint(0, 6)))
    if kind == "int":
        return rng.choice([0, -1, 7, 2**53, -(2**70), rng.randint(-10**6, 10**6)])
    if kind == "float":
        return rng.choice([0.0, -0.0, 1.5, 1e300, 1e-300, math.inf, -math.inf, math.nan, rng.random()])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "path":
        return Path("/x") / str(rng.randint(0, 9))
    if kind == "enum":
        return _Level.HIGH
    if kind == "tagged":
        return _Tagged("t")
    if kind == "empty":
        return rng.choice([[], {}, ()])
    if kind in ("list", "tuple"):
        items = [_random(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return items if kind == "list" else tuple(items)
    return {"k" + str(rng.randint(0, 9)) + rng.choice(["", "é", '"']): _random(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_random_documents_read_as_json_dumps_writes_them():
    rng = random.Random(17)
    for _ in range(3000):
        document = _random(rng)
        assert indented(document) == _reference(document)


@pytest.mark.parametrize("document", [
    {1: "a", True: "b", None: "c", 1.5: "d"},  # keys json.dumps names itself
    {"a": {2: "x"}},
    [[[[]]]],
    "plain",
    {"images": [{"name": "x", "platforms": ["linux/amd64"], "missing": [], "problem": None, "size": 5}]},
])
def test_documents_it_leaves_to_json_dumps_and_plain_ones(document):
    assert indented(document) == _reference(document)


def test_nesting_past_its_depth_and_cycles_are_json_dumps_own():
    deep: list = []
    node = deep
    for _ in range(MAX_DEPTH + 5):
        node.append([])
        node = node[0]
    assert indented(deep) == _reference(deep)
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference"):
        indented(cycle)
