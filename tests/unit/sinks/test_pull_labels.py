"""What a registry pull records, offline: the rules ``tests/interop/test_registry_matrix.py``
found by comparing with ``ctr images pull`` of containerd 1.6, 1.7 and 2.x.

Images are OCI layouts read through a source whose entries say they were pulled from a
registry (as ``RegistrySource`` does), so no registry and no daemon is needed.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

from ctrconv.bolt.reader import read_tree
from ctrconv.containerd import schema as K
from ctrconv.image.protocols import NamedEntry
from ctrconv.sinks.containerd_root import copy_images_to_root
from ctrconv.sinks.containerd_root import records as R

from support.layouts import LayoutBuilder, LayoutSource, layer_tar

META = Path(K.METADATA_PLUGIN_DIR) / K.META_DB
SOURCE = "containerd.io/distribution.source.reg.example"
UNCOMPRESSED = "containerd.io/uncompressed"


class PulledLayout(LayoutSource):
    """A layout whose images were "pulled" from ``reg.example/<repo>``."""

    def __init__(self, path: Path, repo: str) -> None:
        super().__init__(path)
        self.repo = repo

    def entries(self) -> list[NamedEntry]:
        return [dataclasses.replace(e, pulled_from=("reg.example", self.repo)) for e in super().entries()]


def blob_labels(root: Path) -> dict[str, dict[str, str]]:
    blobs = read_tree(root / META).bucket(K.V1, b"default", K.CONTENT, K.BLOB)
    assert blobs is not None
    return {k.decode(): R.read_map(b.bucket(K.LABELS)) for k, b in blobs.buckets()}


def test_append_sources_sorts_and_dedups_like_containerd() -> None:
    assert R.append_sources("", "b/x") == "b/x"
    assert R.append_sources("c/z,a/y", "b/x") == "a/y,b/x,c/z"
    assert R.append_sources("a/y,b/x", "b/x") == "a/y,b/x"


def test_a_pull_from_another_repository_adds_it_to_every_blob(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path / "layout")
    img = builder.image("reg.example/team/a:1", [{"etc/a": b"a\n"}])
    root = tmp_path / "root"
    copy_images_to_root(PulledLayout(builder.path, "team/a"), root)
    copy_images_to_root(PulledLayout(builder.path, "team/b"), root)
    copy_images_to_root(PulledLayout(builder.path, "team/a"), root)
    labels = blob_labels(root)
    for desc in (img["manifest"], img["config"], *img["layers"]):
        assert labels[desc["digest"]][SOURCE] == "team/a,team/b"
    # an archive import (no registry) leaves a recorded source as it is
    copy_images_to_root(LayoutSource(builder.path), root)
    assert blob_labels(root)[img["config"]["digest"]][SOURCE] == "team/a,team/b"


def test_uncompressed_label_only_on_layers_this_import_applied(tmp_path: Path) -> None:
    """Image B has A's layer uncompressed (same diff ID, other blob): its snapshot exists, so
    containerd applies nothing and labels B's layer blob with nothing."""
    files = {"etc/a": b"a\n"}
    a = LayoutBuilder(tmp_path / "a")
    img_a = a.image("t/a:1", [files])
    b = LayoutBuilder(tmp_path / "b")
    raw = layer_tar(files)
    layer = b.blob(raw, "application/vnd.oci.image.layer.v1.tar")
    config = b.blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                                "rootfs": {"type": "layers", "diff_ids": img_a["diff_ids"]}}).encode(),
                    "application/vnd.oci.image.config.v1+json")
    manifest = b.blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                  "config": config, "layers": [layer]}).encode(), "application/vnd.oci.image.manifest.v1+json")
    (b.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {**manifest, "annotations": {"io.containerd.image.name": "t/b:1"}}]}))
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(a.path), root)
    report = copy_images_to_root(LayoutSource(b.path), root)
    assert report.images[0].snapshots_reused == 1 and report.images[0].snapshots_created == 0
    labels = blob_labels(root)
    assert labels[img_a["layers"][0]["digest"]] == {UNCOMPRESSED: img_a["diff_ids"][0]}
    assert UNCOMPRESSED not in labels[layer["digest"]]


def _index_of_two(tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """An index: amd64 and arm64 manifests (one layer each)."""
    builder = LayoutBuilder(tmp_path / "multi")
    amd = builder.image(None, [{"etc/amd": b"amd\n"}])
    arm = builder.image(None, [{"etc/arm": b"arm\n"}])
    children = [{**amd["manifest"], "platform": {"architecture": "amd64", "os": "linux"}},
                {**arm["manifest"], "platform": {"architecture": "arm64", "os": "linux"}}]
    index = builder.blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                     "manifests": children}).encode(), "application/vnd.oci.image.index.v1+json")
    (builder.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {**index, "annotations": {"io.containerd.image.name": "reg.example/team/m:1"}}]}))
    return builder.path, amd, arm


def test_a_2x_pull_records_every_manifest_of_an_index_and_its_config(tmp_path: Path) -> None:
    """2.x's transfer-service pull: the arm64 manifest (GC labels) and config, not its layer."""
    path, amd, arm = _index_of_two(tmp_path)
    for line, recorded in (("1.7", False), ("2.x", True)):
        root = tmp_path / f"root-{line}"
        copy_images_to_root(PulledLayout(path, "team/m"), root, platform=["linux/amd64"], containerd_version=line)
        labels = blob_labels(root)
        assert amd["layers"][0]["digest"] in labels
        assert (arm["manifest"]["digest"] in labels, arm["config"]["digest"] in labels) == (recorded, recorded), line
        assert arm["layers"][0]["digest"] not in labels
        if recorded:
            assert labels[arm["manifest"]["digest"]] == {
                SOURCE: "team/m", "containerd.io/gc.ref.content.config": arm["config"]["digest"],
                "containerd.io/gc.ref.content.l.0": arm["layers"][0]["digest"]}
            assert labels[arm["config"]["digest"]] == {SOURCE: "team/m"}


def test_an_artifact_is_recorded_and_not_unpacked(tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path / "artifact")
    config = builder.blob(b'{"kind":"sbom"}', "application/vnd.example.sbom.config.v1+json")
    data = builder.blob(gzip.compress(b"{}", mtime=0), "application/vnd.example.sbom.v1+json")
    manifest = builder.blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                        "config": config, "layers": [data]}).encode(),
                            "application/vnd.oci.image.manifest.v1+json")
    (builder.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {**manifest, "annotations": {"io.containerd.image.name": "t/sbom:1"}}]}))
    root = tmp_path / "root"
    report = copy_images_to_root(LayoutSource(builder.path), root)
    assert report.images[0].unpacked is None and report.images[0].snapshots_created == 0
    labels = blob_labels(root)
    assert labels[manifest["digest"]] == {"containerd.io/gc.ref.content.0": config["digest"],
                                          "containerd.io/gc.ref.content.1": data["digest"]}


def test_an_all_platforms_pull_unpacks_every_platform_on_1x_and_none_on_2x(tmp_path: Path) -> None:
    """``ctr images pull --all-platforms`` of 1.6/1.7 unpacks each platform (arm64 too); 2.x's
    gives its transfer service no unpack platform at all (2.1.9: no snapshot, ``ctr images
    check`` unpacked false; ctrconv unpacked the host's, found by a red-team run); an archive
    import unpacks the host's only."""
    path, amd, arm = _index_of_two(tmp_path)
    snapshot = "containerd.io/gc.ref.snapshot.overlayfs"
    cases = (("1.7", PulledLayout(path, "team/m"), (True, True)), ("2.x", PulledLayout(path, "team/m"), (False, False)),
             ("1.7", LayoutSource(path), (True, False)))
    for n, (line, source, (host, every)) in enumerate(cases):
        root = tmp_path / f"root-{n}"
        report = copy_images_to_root(source, root, all_platforms=True, containerd_version=line)
        labels = blob_labels(root)
        assert (snapshot in labels[amd["config"]["digest"]], UNCOMPRESSED in labels[amd["layers"][0]["digest"]]) == \
            (host, host), (line, source)
        assert (snapshot in labels[arm["config"]["digest"]], UNCOMPRESSED in labels[arm["layers"][0]["digest"]]) == \
            (every, every), (line, source)
        assert report.images[0].unpacked == (labels[amd["config"]["digest"]][snapshot] if host else None)
        assert report.images[0].snapshots_created == (1 if host else 0)
        assert _snapshot_dirs(root) == (2 if every else 1 if host else 0), (line, source)


def test_a_pull_naming_several_platforms_unpacks_each(tmp_path: Path) -> None:
    """``ctr images pull --platform linux/arm64 --platform linux/amd64`` unpacks both (1.6 and
    1.7 loop ``Unpack`` over them, 2.x asks for one ``WithUnpack`` each); ctrconv unpacked the
    host's only (found by a red-team run). An archive import still unpacks the host's."""
    path, amd, arm = _index_of_two(tmp_path)
    snapshot = "containerd.io/gc.ref.snapshot.overlayfs"
    for n, (line, source, both) in enumerate((("1.6", PulledLayout(path, "team/m"), True),
                                              ("2.x", PulledLayout(path, "team/m"), True),
                                              ("1.6", LayoutSource(path), False))):
        root = tmp_path / f"root-{n}"
        copy_images_to_root(source, root, platform=["linux/arm64", "linux/amd64"], containerd_version=line)
        labels = blob_labels(root)
        assert snapshot in labels[amd["config"]["digest"]], line
        assert (snapshot in labels[arm["config"]["digest"]], UNCOMPRESSED in labels[arm["layers"][0]["digest"]]) == \
            (both, both), (line, source)
        assert _snapshot_dirs(root) == (2 if both else 1), (line, source)


def _snapshot_dirs(root: Path) -> int:
    snapshots = root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    return len(list(snapshots.iterdir())) if snapshots.is_dir() else 0


def test_a_2x_pull_leaves_the_sources_of_a_layer_it_did_not_walk(tmp_path: Path) -> None:
    """2.x skips a layer of the unpacked manifest whose snapshot exists: a second pull from
    another repository adds itself to the manifest and config, not to that layer, unless it
    pulls every platform (then every layer is walked). 1.7 adds itself everywhere."""
    builder = LayoutBuilder(tmp_path / "layout")
    img = builder.image("reg.example/team/a:1", [{"etc/a": b"a\n"}])
    layer, config = img["layers"][0]["digest"], img["config"]["digest"]
    for n, (line, every, walked) in enumerate((("2.x", False, False), ("2.x", True, True), ("1.7", False, True))):
        root = tmp_path / f"root-{n}"
        copy_images_to_root(PulledLayout(builder.path, "team/a"), root, containerd_version=line)
        copy_images_to_root(PulledLayout(builder.path, "team/b"), root, all_platforms=every)
        labels = blob_labels(root)
        assert labels[config][SOURCE] == "team/a,team/b"
        assert labels[layer][SOURCE] == ("team/a,team/b" if walked else "team/a"), (line, every)


def test_an_import_of_fewer_platforms_keeps_every_child_an_index_record_references(tmp_path: Path) -> None:
    """A pull records an index referencing every child (``m.0`` amd64, ``m.1`` arm64); an archive
    import of the same index with ``--platform linux/arm64`` numbered its one child ``m.0`` over
    the pull's: nothing referenced the amd64 manifest, and containerd's GC deleted it and its
    snapshots (a red-team run on 2.x, whose ctr keeps every reference). References are only
    ever added to an existing record."""
    path, amd, arm = _index_of_two(tmp_path)
    root = tmp_path / "root"
    copy_images_to_root(PulledLayout(path, "team/m"), root, containerd_version="2.x")
    index = json.loads((path / "index.json").read_text())["manifests"][0]["digest"]
    before = blob_labels(root)[index]
    assert {before["containerd.io/gc.ref.content.m.0"], before["containerd.io/gc.ref.content.m.1"]} == \
        {amd["manifest"]["digest"], arm["manifest"]["digest"]}
    copy_images_to_root(LayoutSource(path), root, platform=["linux/arm64"], containerd_version="2.x")
    after = blob_labels(root)[index]
    assert {v for k, v in after.items() if k.startswith("containerd.io/gc.ref.content.")} >= \
        {amd["manifest"]["digest"], arm["manifest"]["digest"]}, after


def test_references_moved_aside_take_keys_neither_side_uses() -> None:
    """An index recorded by an import of one platform (``m.0`` = arm64), then pulled whole
    (``m.0`` amd64, ``m.1`` arm64, ``m.2`` arm/v7): the pull's ``m.0`` moved to a key that
    neither the record nor the pull uses, so no reference of either is lost (the first version
    of the rule gave it ``m.1``, which the pull's own ``m.1`` then took)."""
    m = "containerd.io/gc.ref.content.m."
    kept = R._keeping_content_references({f"{m}0": "arm64"}, {f"{m}0": "amd64", f"{m}1": "arm64", f"{m}2": "v7"})
    merged = {f"{m}0": "arm64", **kept}
    assert set(merged.values()) == {"amd64", "arm64", "v7"} and merged[f"{m}0"] == "arm64"
