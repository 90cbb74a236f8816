"""Short, deterministic fuzzing of every reader (CI budget): results or CtrconvError only.

Each target gets a fixed number of hypothesis examples (``derandomize=True``: the same cases on
every run) drawn by the structure-aware mutators of :mod:`fuzz.mutators` from valid seeds. A case
must finish within its time bound and Python heap bound (:mod:`fuzz.bounds`). The committed
regression corpus (``tests/regressions/<target>/*.bin``) is replayed first. Long runs:
``python tests/fuzz/run_long.py --seconds 600``.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.bounds import Finding, signature
from fuzz.known import KNOWN_OPEN, known_open, layer_hang
from fuzz.targets import TARGETS, check

REGRESSIONS = Path(__file__).resolve().parents[3] / "tests" / "regressions"

#: examples per target: ~40 s for the whole file on 2 cores
EXAMPLES = {
    "meta-db": 400, "snapshotter-db": 400, "json-index": 150, "json-manifest": 150,
    "json-config": 150, "oci-tar": 400, "docker-archive": 400, "layer-tar": 250, "layer-gzip": 250,
}


def _known_hang(path: Path) -> str | None:
    """A corpus input recorded as a timeout that is a known open hang (not run: it would hang)."""
    note = path.with_suffix(".txt")
    if not path.parent.name.startswith("layer") or not note.exists():
        return None
    if not note.read_text().startswith("timeout"):
        return None
    return layer_hang(path.read_bytes())


def _regression_cases() -> list:
    cases = []
    for path in sorted(REGRESSIONS.glob("*/*.bin")):
        target = path.parent.name
        marks = []
        hang = _known_hang(path)
        if hang:
            marks.append(pytest.mark.skip(reason=f"known open: {hang}"))
        cases.append(pytest.param(target, path, marks=marks, id=f"{target}/{path.stem}"))
    return cases


@pytest.mark.parametrize("target,path", _regression_cases())
def test_regression_corpus(target: str, path: Path) -> None:
    """Every input that once broke the contract now gives a result or a CtrconvError.

    Inputs of a finding listed in :data:`fuzz.known.KNOWN_OPEN` (reported, owner's fix pending)
    are xfail; :func:`test_known_open_entries_are_live` keeps that list honest.
    """
    data = path.read_bytes()
    try:
        check(TARGETS[target], data)
    except Finding as finding:
        why = known_open(target, data, finding)
        if why is None:
            raise
        pytest.xfail(f"known open: {why}")


def test_known_open_entries_are_live() -> None:
    """Each known-open entry is still reproduced by a corpus input (else the bug is fixed: drop it)."""
    live: set[str] = set()
    for path in sorted(REGRESSIONS.glob("layer*/*.bin")):
        data = path.read_bytes()
        if _known_hang(path):
            continue
        try:
            check(TARGETS[path.parent.name], data)
        except Finding as finding:
            for pattern in KNOWN_OPEN:
                if fnmatch.fnmatchcase(signature(finding), pattern):
                    live.add(pattern)
    assert live == set(KNOWN_OPEN), f"stale known-open entries: {set(KNOWN_OPEN) - live}"


def test_every_target_has_a_budget() -> None:
    assert set(EXAMPLES) == set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_is_accepted(name: str) -> None:
    """The unmutated seed passes its target (so mutations start from valid input)."""
    check(TARGETS[name], TARGETS[name].seed())


def _fuzz(name: str):
    target = TARGETS[name]
    seed = target.seed()

    @settings(max_examples=EXAMPLES[name], derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(rng=st.randoms(use_true_random=False))
    def run(rng) -> None:
        data = target.mutate(seed, rng)
        if name.startswith("layer") and layer_hang(data):
            return  # known open hangs (fuzz/known.py); the corpus keeps one case of each
        try:
            check(target, data)
        except Finding as finding:
            if known_open(name, data, finding) is None:
                raise AssertionError(f"{signature(finding)}: {finding}") from finding

    return run


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz(name: str) -> None:
    """Mutated inputs: a result or a CtrconvError, within the time and memory bounds."""
    _fuzz(name)()
