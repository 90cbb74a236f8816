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


def test_each_layer_is_reapplied_in_a_flagged_scratch_under_a_name_of_its_own(tmp_path, monkeypatch):
    """ext4 places a flagged directory's subdirectory by a hash of its name: a fixed name would
    put every re-applied tree where the previous one was just removed (see ctrconv.placement)."""
    from pathlib import Path

    from ctrconv import placement
    from ctrconv.sinks.containerd_root import copy_images_to_root
    from ctrconv.verify.root import verify_root
    from support.layouts import LayoutBuilder, LayoutSource

    builder = LayoutBuilder(tmp_path / "layout")
    builder.image("docker.io/library/t:1", [{"etc/a": b"a"}, {"etc/b": b"b"}])
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root)
    scratches: list[Path] = []
    monkeypatch.setattr(deep, "spread_subdirectories",
                        lambda d: scratches.append(Path(d)) or placement.spread_subdirectories(d))
    trees: list[str] = []
    real_unpack = deep.unpack_layer
    monkeypatch.setattr(deep, "unpack_layer", lambda blob, target, **kw: (
        trees.append(str(Path(target).relative_to(scratches[-1]))), real_unpack(blob, target, **kw))[1])
    report = verify_root(root, deep=True)
    assert not [p for p in report.problems if p.severity == "error"]
    assert len(scratches) == 2 and len(trees) == 2  # one scratch per layer, the tree right below it
    assert len(set(trees)) == 2 and all(t.startswith("fs-") and "/" not in t for t in trees)
