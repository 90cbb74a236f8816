"""Rebuild's re-import walks each image once to decide its group, and the first group's import
reuses that walk for an image without an index (issue 17: rebuild walked every image's plan
four times)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import ctrconv.image.plan as plan_module
from ctrconv.image.plan import plan_image
from ctrconv.oci import mediatypes as mt
import ctrconv.recovery.rebuild as rebuild_module
from ctrconv.recovery.rebuild import rebuild_root
from ctrconv.sinks.containerd_root.importer import _known_plan
from ctrconv.sources.containerd_root import ContainerdRootSource
from support.scale_root import build_root


def _count_document_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Reads of each document by any plan walk (:func:`plan_image` reads through this name)."""
    reads: Counter[str] = Counter()
    real = plan_module.read_json_blob

    def counting(source: Any, desc: dict[str, Any], cache: Any = None) -> dict[str, Any]:
        reads[str(desc.get("digest"))] += 1
        return real(source, desc, cache)

    monkeypatch.setattr(plan_module, "read_json_blob", counting)
    return reads


def test_a_rebuild_walks_the_first_groups_plain_images_twice_and_the_rest_three_times(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    build_root(root, 40, base_layers=4)
    with ContainerdRootSource(root, "default") as source:
        targets = {e.name: e.descriptor for e in source.entries()}
    reads = _count_document_reads(monkeypatch)
    work: list[Any] = []
    real_groups = rebuild_module.reimport_groups

    def keeping(*args: Any, **kwargs: Any) -> Any:
        work.extend(real_groups(*args, **kwargs))
        return work

    monkeypatch.setattr(rebuild_module, "reimport_groups", keeping)
    report = rebuild_root(root, tmp_path / "out", link=True, trust_snapshots=True)
    assert len(report.images) == 40 and not report.dropped
    [item] = work
    first = {e.name for e in next(iter(item.groups.values()))}
    plain = {n for n, d in targets.items() if mt.is_manifest(d["mediaType"])}
    assert len(plain) == 38 and 1 <= len(first & plain) < 38
    # stage 5 (drop the images that cannot run) and the re-import's grouping; the first
    # group's import reuses the grouping's walk (before: four walks each)
    assert {reads[targets[n]["digest"]] for n in first & plain} == {2}
    # later groups and indexes are walked again by their import
    assert {reads[d["digest"]] for n, d in targets.items() if n not in first & plain} == {3}


def test_a_known_plan_is_reused_only_for_its_own_target_without_an_index(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_root(root, 20, base_layers=2)
    with ContainerdRootSource(root, "default") as source:
        entries = {e.name: e.descriptor for e in source.entries()}
        plans = {name: plan_image(source, desc) for name, desc in entries.items()}
    plain = next(n for n, d in entries.items() if mt.is_manifest(d["mediaType"]))
    index = next(n for n, d in entries.items() if mt.is_index(d["mediaType"]))
    assert _known_plan(plans, plain, entries[plain]) is plans[plain]
    assert _known_plan(plans, index, entries[index]) is None  # a selector may change its walk
    assert _known_plan(plans, plain, {**entries[plain], "size": entries[plain]["size"] + 1}) is None
    assert _known_plan(None, plain, entries[plain]) is None
    assert _known_plan(plans, "no such image", entries[plain]) is None
