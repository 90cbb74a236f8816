"""The library API (``ctrconv.api``): typed options objects named like the CLI's options, passed
through to the pipeline unchanged; any source to any sink through the same calls the CLI makes.

Offline: the committed small root (``fixtures/small-root.tar.xz``) and layouts exported from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ctrconv import api
from ctrconv.errors import UsageError
from ctrconv.pipeline.export_report import ConvertOptions, ConvertReport, ExportOptions, ExportReport
from ctrconv.recovery.options import RebuildOptions
from ctrconv.sinks.containerd_root import ContainerdRootSink, ImportOptions

IMAGE = "docker.io/library/busybox:small"
#: ImportOptions fields the CLI has no option of its own for (set by other means, or library only)
LIBRARY_ONLY = {"unpack_platform", "cri_labels", "keep_partial", "partial_from_records", "plans", "skip_unpackable"}



@pytest.fixture(scope="module")
def layout(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout") / "small.tar"
    report = api.export_images(small_root, out, image=[IMAGE])
    assert isinstance(report, ExportReport) and [i.name for i in report.images] == [IMAGE]
    return out


def _cli_options(command: str) -> set[str]:
    import typer

    from ctrconv.cli import _register, app

    _register()
    group = typer.main.get_command(app)
    return {opt for p in group.commands[command].params for opt in getattr(p, "opts", ())} | {
        opt for p in group.commands[command].params for opt in getattr(p, "secondary_opts", ())}


def _as_cli(field: str) -> set[str]:
    flag = "--" + field.replace("_", "-")
    return {flag, "--no-" + field.replace("_", "-")}


@pytest.mark.parametrize(("command", "options", "skip"), [
    ("import", ImportOptions, LIBRARY_ONLY), ("convert", ConvertOptions, set()),
    ("export", ExportOptions, {"name"}),  # name: convert's --name, carried by the shared options
    ("rebuild", RebuildOptions, set()),
])
def test_option_fields_are_named_like_the_cli_options(command: str, options: Any, skip: set[str]):
    cli = _cli_options(command)
    for field in dataclasses.fields(options):
        if field.name in skip:
            continue
        assert _as_cli(field.name) & cli, f"{options.__name__}.{field.name} is no {command} option ({sorted(cli)})"


def test_import_options_reach_the_writer_unchanged(layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every field becomes the writer's parameter of the same meaning; nothing is dropped."""
    seen: dict[str, Any] = {}

    def fake(source: Any, root: Any, namespace: str, options: ImportOptions, **kwargs: Any) -> str:
        seen.update(kwargs, root=root, namespace=namespace, options=options, entries=[e.name for e in source.entries()])
        return "report"

    monkeypatch.setattr("ctrconv.sinks.containerd_root.sink.copy_images_to_root", fake)
    options = ImportOptions(snapshotter="native", unpack=False, platform=["linux/arm64"], name="x:1", pin=True,
                            cri=True, containerd_version="2.x", backup=False, verify_existing=True,
                            max_layer_size=123, jobs=2, unpack_platform="linux/arm64")
    assert api.import_images(str(layout), tmp_path / "root", "ns1", options, progress="P") == "report"
    assert seen == {"root": tmp_path / "root", "namespace": "ns1", "entries": [IMAGE], "options": options,
                    "progress": "P"}
    seen.clear()
    api.import_images(str(layout), tmp_path / "root", "ns1", options, snapshotter="overlayfs")
    # a field replaces one, the others stay
    assert seen["options"] == dataclasses.replace(options, snapshotter="overlayfs")
    with pytest.raises(TypeError):
        api.import_images(str(layout), tmp_path / "root", platfrom=["linux/amd64"])  # no such option


def test_any_file_source_into_a_root_then_out_again(layout: Path, tmp_path: Path):
    """import (file source -> root sink), export (root source -> file sink), convert (file -> file):
    the same image ID and the same blobs all the way."""
    root = tmp_path / "root"
    imported = api.import_images(str(layout), root, "ns1", ImportOptions(unpack=False))
    assert [i.name for i in imported.images] == [IMAGE] and imported.written
    assert [i.name for i in api.list_images(root, ["ns1"])] == [IMAGE]
    back = tmp_path / "back.tar"
    exported = api.export_images(root, back, namespace="ns1", image=["busybox:small"])
    converted = api.convert_images(back, tmp_path / "docker.tar", ConvertOptions(format="docker-archive"))
    assert isinstance(converted, ConvertReport)
    assert converted.export.images[0].image_id == exported.images[0].image_id
    doc = converted.to_json()
    assert doc["input"] == str(back) and doc["format"] == "docker-archive" and "namespace" not in doc
    with tarfile.open(layout) as a, tarfile.open(back) as b:
        assert _blob_hashes(a) == _blob_hashes(b)


def _blob_hashes(tar: tarfile.TarFile) -> dict[str, str]:
    return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
            for m in tar.getmembers() if m.isfile() and m.name.startswith("blobs/")}


def test_rebuild_options_reach_the_rebuild(small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: dict[str, Any] = {}

    def fake(root: Any, output: Any, **kwargs: Any) -> str:
        seen.update(kwargs)
        return "report"

    monkeypatch.setattr("ctrconv.recovery.rebuild_root", fake)
    options = RebuildOptions(name={"sha256:" + "1" * 64: "a:1"}, unpack=False, trust_snapshots=True, link=True,
                             regenerate_layers=True)
    assert api.rebuild_root(small_root, tmp_path / "new", options, progress="P") == "report"
    assert seen == {"names": {"sha256:" + "1" * 64: "a:1"}, "unpack": False, "progress": "P", "trust_snapshots": True,
                    "link": True, "regenerate_layers": True}


def test_export_reads_the_root_only(small_root: Path, tmp_path: Path):
    """Export goes through the root source: the root's files are byte for byte as before."""
    before = {p: p.read_bytes() for p in small_root.rglob("*") if p.is_file()}
    api.export_images(small_root, tmp_path / "o", image=[IMAGE], format="oci-dir")
    assert {p: p.read_bytes() for p in small_root.rglob("*") if p.is_file()} == before


def test_export_to_root_takes_import_options(small_root: Path, tmp_path: Path):
    report = api.export_to_root(small_root, tmp_path / "new", "default", [IMAGE], target_namespace="k",
                                options=ImportOptions(unpack=False, cri=False))
    assert [i.name for i in report.images] == [IMAGE] and report.namespace == "k"
    assert report.images[0].unpacked is None and report.images[0].snapshots_created == 0  # unpack=False reached it
    assert report.images[0].names == [IMAGE]  # cri=False: no CRI aliases


def test_convert_refuses_its_own_input_and_registries(layout: Path):
    with pytest.raises(UsageError, match="is the input"):
        api.convert_images(layout, layout)
    with pytest.raises(UsageError, match="convert reads files"):
        api.convert_images("docker://example.invalid/x:1", "/nonexistent/x.tar")


def test_root_sink_writes_the_given_entries_only(small_root: Path, layout: Path, tmp_path: Path):
    from ctrconv.sources import open_source

    with open_source(str(layout)) as source:
        [entry] = source.entries()
        sink = ContainerdRootSink(tmp_path / "r", "ns", ImportOptions(unpack=False, name="renamed:1"))
        report = sink.write(source, [entry])
    assert [i.name for i in report.images] == ["renamed:1"]


def test_every_cli_helper_the_api_serves_resolves_in_a_fresh_interpreter():
    """The CLI's helpers are imported on first use; each must resolve on its own, whatever the
    command imported before it (a submodule is not an attribute of its package until imported)."""
    import subprocess
    import sys

    names = sorted(api._FOR_THE_CLI)
    assert names
    for name in names:
        code = f"import ctrconv.api as a; getattr(a, {name!r})"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, (name, result.stderr)


def test_a_snapshot_whose_stored_name_is_no_utf8_is_reused(tmp_path: Path):
    """Importing again into a root whose snapshot names (meta.db ``name``, the snapshotter's key
    and parent) are no UTF-8 reuses those snapshots, their names kept byte for byte: the reuse
    check decoded the name strictly and failed with an internal error."""
    from ctrconv.bolt.reader import BoltFile
    from ctrconv.bolt.tree import BucketTree
    from ctrconv.bolt.writer import write_bolt
    from ctrconv.containerd import schema as K
    from ctrconv.oci import mediatypes as mt
    from support.archives import LAYOUT, layer_tar, sha
    from support.synthetic_root import host_arch

    layout = tmp_path / "two-layers"  # an image of two layers: a chain of two snapshots
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        (blobs / sha(data)[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": sha(data), "size": len(data)}

    layers = [layer_tar(b"one\n"), layer_tar(b"two\n")]
    config = blob(json.dumps({"architecture": host_arch(), "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [sha(layer) for layer in layers]}}).encode(), mt.OCI_CONFIG)
    manifest = blob(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": [
        blob(layer, mt.OCI_LAYER) for layer in layers]}).encode(), mt.OCI_MANIFEST)
    manifest["annotations"] = {"io.containerd.image.name": "example.com/two:1"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_bytes(LAYOUT)
    root = tmp_path / "root"
    first = api.import_images(str(layout), root, "ns1", ImportOptions())
    assert first.images[0].snapshots_created > 0
    meta_db = root / K.METADATA_PLUGIN_DIR / K.META_DB
    backend_db = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    renamed: dict[bytes, bytes] = {}
    with BoltFile(meta_db) as db:
        meta = BucketTree.load(db.root)
    for record in meta.bucket(K.V1, b"ns1", K.SNAPSHOTS, b"overlayfs").entries.values():
        old = record.get(K.NAME)
        renamed[old] = old + b"\xff"
        record.put(K.NAME, renamed[old])
    with BoltFile(backend_db) as db:
        backend = BucketTree.load(db.root)
    records = backend.bucket(K.V1, K.SNAPSHOTS)
    for old, new in renamed.items():
        records.entries[new] = records.entries.pop(old)
    for record in records.entries.values():
        parent = record.get(K.PARENT)
        if parent in renamed:
            record.put(K.PARENT, renamed[parent])
    assert len(renamed) >= 2  # a chain: the parent check compares names too
    write_bolt(meta_db, meta)
    write_bolt(backend_db, backend)
    again = api.import_images(str(layout), root, "ns1", ImportOptions())
    assert again.images[0].snapshots_created == 0 and again.images[0].unpacked == first.images[0].unpacked
    with BoltFile(backend_db) as db:
        assert set(BucketTree.load(db.root).bucket(K.V1, K.SNAPSHOTS).entries) == set(renamed.values())
