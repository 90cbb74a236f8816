"""``HostRuns``: the host matcher built once per verify, each distinct platform judged once,
with the answers :func:`runs_here` gives."""

from __future__ import annotations

from ctrconv.oci import platform as plat
from ctrconv.verify import deep
from ctrconv.verify.deep import HostRuns, runs_here

PLATFORMS = [
    {"os": "linux", "architecture": "amd64"},
    {"os": "linux", "architecture": "arm64", "variant": "v8"},
    {"os": "linux", "architecture": "arm", "variant": "v7"},
    {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"},
    {"os": "linux", "architecture": "amd64", "os.features": ["x"]},  # unhashable: not remembered
    {"os": "linux", "architecture": 1},  # does not parse: never runs
    {"os": "linux", "architecture": "386"},
]


def test_answers_equal_runs_here_and_the_matcher_is_built_once(monkeypatch):
    host = plat.default_matcher()
    built = []
    monkeypatch.setattr(deep.plat, "default_matcher", lambda: built.append(1) or host)
    judged = []
    real = deep.runs_here
    monkeypatch.setattr(deep, "runs_here", lambda m, p: judged.append(p) or real(m, p))
    runs = HostRuns()
    for _ in range(3):
        for p in PLATFORMS:
            assert runs(dict(p)) == runs_here(host, p), p
    assert built == [1]
    # each hashable platform judged once; the one with a list value every time
    assert len(judged) == len(PLATFORMS) - 1 + 3
