"""Export's plans kept small (issue 17): shared descriptors, documents let go, the same bytes out.

An export of a whole root keeps every image's plan until the copy ends; ``export_compact``
makes equal descriptors one dict and drops the manifest documents nothing reads again. These
tests prove the output does not change (oci-tar and docker-archive, byte for byte, with and
without compaction), that the shared layers are shared, that documents a rewrite needs stay,
and that what a plan retains per image does not grow with the root (traced, not timed).
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from ctrconv import api
from ctrconv.digest import Digest
from ctrconv.image.model import ImagePlan, PlannedManifest
from ctrconv.oci import mediatypes as mt
from ctrconv.pipeline import export_compact
from ctrconv.pipeline.export_compact import PlanCompactor
from ctrconv.pipeline.export_plan import Planned, blob_set, plan_images
from ctrconv.pipeline.export_report import ExportOptions
from ctrconv.sinks import blob_path
from ctrconv.sources.containerd_root import ContainerdRootSource
from support.scale_root import build_root

SIZES = (40, 120)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("compact")
    out = {}
    for n in SIZES:
        build_root(base / f"root-{n}", n, base_layers=10)
        out[n] = base / f"root-{n}"
    return out


def _planned(root: Path) -> list[Planned]:
    with ContainerdRootSource(root, "default", namespace_content_only=True, keep_open=True) as source:
        return plan_images(source.content, source.records, ExportOptions(), False)


@pytest.mark.parametrize("fmt", ["oci-tar", "docker-archive"])
def test_export_bytes_are_the_same_with_and_without_compaction(roots: dict[int, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    root = roots[SIZES[0]]
    api.export_images(root, tmp_path / "compact.tar", format=fmt)
    monkeypatch.setattr(PlanCompactor, "compact", lambda self, plan, rewritten: None)
    api.export_images(root, tmp_path / "plain.tar", format=fmt)
    assert (tmp_path / "compact.tar").read_bytes() == (tmp_path / "plain.tar").read_bytes()


def test_shared_layers_are_one_dict_and_documents_are_let_go(roots: dict[int, Path]) -> None:
    planned = _planned(roots[SIZES[0]])
    layers = [layer for p in planned for m in p.plan.manifests for layer in m.layers]
    by_digest: dict[str, set[int]] = {}
    for layer in layers:
        by_digest.setdefault(layer["digest"], set()).add(id(layer))
    assert len(layers) > 2 * len(by_digest)  # the root shares its 10 base layers
    assert all(len(ids) == 1 for ids in by_digest.values())
    for p in planned:
        for m in p.plan.manifests:
            assert set(m.document) <= {"mediaType"}
            assert m.config in p.plan.blobs and all(any(b is layer for b in p.plan.blobs) for layer in m.layers)


def _manifest(digest: str, layer_type: str) -> PlannedManifest:
    layer = {"mediaType": layer_type, "digest": "sha256:" + "c" * 64, "size": 3}
    config = {"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "b" * 64, "size": 2}
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": [layer]}
    return PlannedManifest({"mediaType": mt.OCI_MANIFEST, "digest": digest, "size": 1}, None, config, [layer], doc)


def test_documents_a_rewrite_reads_stay() -> None:
    """A manifest whose layers are written again (a job) or that has zstd layers (a docker
    archive decompresses them) keeps its document; another keeps only its media type."""
    jobbed, zstd, plain = ("sha256:" + c * 64 for c in "123")
    plan = ImagePlan(target={})
    plan.manifests = [_manifest(jobbed, mt.OCI_LAYER_GZIP), _manifest(zstd, mt.OCI_LAYER_ZSTD),
                      _manifest(plain, mt.OCI_LAYER_GZIP)]
    PlanCompactor().compact(plan, {jobbed})
    assert [set(m.document) for m in plan.manifests] == [
        {"schemaVersion", "mediaType", "config", "layers"}, {"schemaVersion", "mediaType", "config", "layers"},
        {"mediaType"}]


def test_descriptors_that_differ_are_not_merged() -> None:
    """Only descriptors equal item for item, in the same order, become one dict."""
    compactor = PlanCompactor()
    digest = "sha256:" + "d" * 64
    first = {"mediaType": mt.OCI_LAYER_GZIP, "digest": digest, "size": 5}
    reordered = {"digest": digest, "mediaType": mt.OCI_LAYER_GZIP, "size": 5}
    annotated = {"mediaType": mt.OCI_LAYER_GZIP, "digest": digest, "size": 5, "annotations": {"a": "b"}}
    same = dict(first)
    assert compactor._shared(first) is first
    assert compactor._shared(same) is first
    assert compactor._shared(reordered) is reordered
    assert compactor._shared(annotated) is annotated and annotated["annotations"] == {"a": "b"}


def test_blob_set_sorts_like_layout_paths() -> None:
    """Sorted by digest text, the blobs come in their tar path order, algorithms mixed; each once."""
    digests = ["sha512:" + "0" * 128, "sha256:" + "f" * 64, "sha384:" + "1" * 96, "sha256:" + "0" * 64]
    descs = [{"mediaType": mt.OCI_LAYER_GZIP, "digest": d, "size": 1} for d in digests]
    plan = ImagePlan(target={}, blobs=[*descs, dict(descs[1])])
    record = object()
    blobs = blob_set([Planned(record, plan, None)], False)  # type: ignore[arg-type]
    assert [b["digest"] for b in blobs] == sorted(digests, key=lambda d: blob_path(Digest.parse(d)))


def _retained(root: Path) -> int:
    """Bytes the plans of every image of ``root`` hold once planned (imports and caches warmed)."""
    with ContainerdRootSource(root, "default", namespace_content_only=True, keep_open=True) as source:
        plan_images(source.content, source.records, ExportOptions(), False)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            planned = plan_images(source.content, source.records, ExportOptions(), False)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(planned) == len(source.records)
        return held


def test_plans_retain_a_bounded_amount_per_image(roots: dict[int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the plans hold grows by a few KiB per image (records, the image's own config and
    layer, its platform), less than before compaction: 3.8 KiB per image before, 2.6 now; 10,000
    images then hold ~26 MiB of plans. Compaction disabled, the same measure is larger."""
    small, large = (_retained(roots[n]) for n in SIZES)
    per_image = (large - small) / (SIZES[1] - SIZES[0])
    assert 0 < per_image <= 3 * 1024, per_image
    monkeypatch.setattr(export_compact.PlanCompactor, "compact", lambda self, plan, rewritten: None)
    small_plain, large_plain = (_retained(roots[n]) for n in SIZES)
    assert (large_plain - small_plain) / (SIZES[1] - SIZES[0]) > per_image * 1.2
