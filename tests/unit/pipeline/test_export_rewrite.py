"""Export's rewrite stage without a daemon: zstd layers of every exported platform become plain
tars in a docker archive (configs and image IDs kept), and the report says how each rewritten
layer was made (snapshot, stored blob of the same tar, decompression)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from ctrconv.oci import mediatypes as mt

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _zstd_manifest(r: Any, label: str, arch: str, layers: int = 2) -> tuple[dict[str, Any], list[str]]:
    """An OCI manifest for ``linux/<arch>`` whose ``layers`` layers are zstd; (descriptor, diff IDs)."""
    descs, diff_ids = [], []
    for n in range(layers):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            data = f"{label} {arch} layer {n}\n".encode() * 500
            info = tarfile.TarInfo(f"f{n}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        plain = raw.getvalue()
        diff_ids.append(_digest(plain))
        descs.append(r.add_blob(zstandard.ZstdCompressor().compress(plain), mt.OCI_LAYER_ZSTD))
    config = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_desc = r.add_blob(json.dumps(config).encode(), mt.OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc, "layers": descs}
    return r.add_blob(json.dumps(manifest).encode(), mt.OCI_MANIFEST), diff_ids


def _multi_zstd_root(path: Path) -> tuple[Any, dict[str, str]]:
    """``zmulti:1``: an index of two platforms, both present, every layer zstd. Returns the
    builder and {arch: config digest}."""
    from support.synthetic_root import SyntheticRoot, host_arch, other_arch

    r = SyntheticRoot(path)
    children, configs = [], {}
    for arch in (host_arch(), other_arch()):
        desc, _ = _zstd_manifest(r, "zmulti", arch)
        manifest = json.loads(r.blobs[desc["digest"]])
        configs[arch] = manifest["config"]["digest"]
        children.append((desc, {"architecture": arch, "os": "linux"}))
    r.name("default", "docker.io/library/zmulti:1", r.index(children))
    r.write()
    return r, configs


def _files(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _blob(files: dict[str, bytes], digest: str) -> bytes:
    return files["blobs/sha256/" + digest.split(":", 1)[1]]


@pytest.mark.parametrize("all_platforms", [True, False])
def test_docker_archive_decompresses_zstd_layers_of_every_exported_platform(tmp_path: Path, cli,
                                                                            all_platforms: bool) -> None:
    """Every platform the archive holds (all with --all-platforms, the host's otherwise) names
    plain-tar layers that hash to its config's diff IDs; each config (Docker 20.10's image ID)
    is the stored one; the index keeps its platforms; no blob of the archive is zstd."""
    from support.json_schemas import check
    from support.synthetic_root import host_arch

    synth, configs = _multi_zstd_root(tmp_path / "root")
    out = tmp_path / "z.tar"
    args = ["--all-platforms"] if all_platforms else []
    res = cli("export", "--root", str(synth.path), "--image", "zmulti:1", *args, "-o", str(out),
              "--format", "docker-archive", "--json")
    assert res.code == 0, res.stderr
    check("export", res.json)
    report, = res.json["images"]
    platforms = 2 if all_platforms else 1
    assert report["decompressed_layers"] == 2 * platforms and report["regenerated_layers"] == 0
    assert report["image_id"] == report["original_image_id"] == configs[host_arch()]
    assert len(res.json["rewritten"]) == platforms and res.json["image_ids_changed"] == []
    assert f"{2 * platforms} zstd layer(s) decompressed; image ID unchanged" in res.stderr

    files = _files(out)
    assert not [name for name, data in files.items() if data.startswith(ZSTD_MAGIC)]
    entry, = json.loads(files["manifest.json"])
    assert entry["Config"] == "blobs/sha256/" + configs[host_arch()][7:]
    index_entry, = json.loads(files["index.json"])["manifests"]
    assert index_entry["digest"] == report["digest"] != report["original_digest"]
    index = json.loads(_blob(files, report["digest"]))
    assert [c["platform"]["architecture"] for c in index["manifests"]] == list(configs)  # both kept, in order
    held = [c for c in index["manifests"] if "blobs/sha256/" + c["digest"][7:] in files]
    assert len(held) == platforms
    for child in held:
        manifest = json.loads(_blob(files, child["digest"]))
        arch = child["platform"]["architecture"]
        assert manifest["config"]["digest"] == configs[arch]
        diff_ids = json.loads(_blob(files, configs[arch]))["rootfs"]["diff_ids"]
        assert [layer["digest"] for layer in manifest["layers"]] == diff_ids
        assert {layer["mediaType"] for layer in manifest["layers"]} == {mt.OCI_LAYER}
        assert all(_digest(_blob(files, d)) == d for d in diff_ids)
        assert manifest["annotations"]["io.ctrconv.original-manifest"].startswith("sha256:")
    for change in res.json["rewritten"]:
        assert not change["config_changed"] and [layer["how"] for layer in change["layers"]] == ["decompressed"] * 2


def test_oci_tar_all_platforms_keeps_every_zstd_layer(tmp_path: Path, cli) -> None:
    """Only docker archives change layers: an OCI tar keeps the stored index and zstd blobs."""
    synth, _ = _multi_zstd_root(tmp_path / "root")
    out = tmp_path / "o.tar"
    res = cli("export", "--root", str(synth.path), "--image", "zmulti:1", "--all-platforms", "-o", str(out), "--json")
    assert res.code == 0, res.stderr
    assert res.json["rewritten"] == [] and res.json["images"][0]["original_digest"] is None
    files = _files(out)
    zstd = [d for d, data in synth.blobs.items() if data.startswith(ZSTD_MAGIC)]
    assert len(zstd) == 4 and all(_blob(files, d).startswith(ZSTD_MAGIC) for d in zstd)


def test_report_says_how_each_rewritten_layer_was_made() -> None:
    """A layer written from its snapshot, one copied from a stored blob of the same tar (Docker
    never fetched its own), one decompressed: the ``--json`` layers say which, the counts per
    image split them, and stderr names the copied ones as copied, not as regenerated."""
    from support.json_schemas import check

    from ctrconv.run.export import rewrite_lines
    from ctrconv.pipeline import regenerate as regen
    from ctrconv.pipeline.export_report import ExportReport, ImageReport, change_json

    d = ["sha256:" + c * 64 for c in "0123456789"]
    layers = [
        regen.RegeneratedLayer("overlayfs", d[0], d[1], d[2], d[3], d[4], mt.OCI_LAYER_GZIP, 10),
        regen.RegeneratedLayer("overlayfs", d[5], d[6], d[7], d[8], d[7], mt.OCI_LAYER_GZIP, 10, source_blob=d[7]),
        regen.RegeneratedLayer("", "", d[9], d[2], d[2], d[2], mt.OCI_LAYER, 10),
    ]
    change = change_json(regen.ManifestChange("linux/amd64", d[0], d[1], d[2], d[3], layers))
    assert [(x["how"], x["snapshot"], x["source_blob"]) for x in change["layers"]] == [
        ("regenerated", d[0], None), ("copied", None, d[7]), ("decompressed", None, None)]
    image = ImageReport("docker.io/library/a:1", d[1], mt.OCI_MANIFEST, ["linux/amd64"], [], d[1], d[3], d[2],
                        d[0], regenerated_layers=1, copied_layers=1, decompressed_layers=1)
    report = ExportReport("oci-tar", "o.tar", "moby", [image], rewritten=[change])
    check("export", report.to_json())
    line, changed = rewrite_lines(report)
    assert "1 layer(s) regenerated from snapshots, 1 layer(s) never fetched into the namespace copied from a stored blob" in line
    assert "image ID" in changed
    copied_only = ImageReport("docker.io/library/b:1", d[1], mt.OCI_MANIFEST, ["linux/amd64"], [], d[1], d[2], d[2],
                              d[0], copied_layers=2)
    lines = rewrite_lines(ExportReport("oci-tar", "o.tar", "moby", [copied_only]), quiet=True)
    assert len(lines) == 1 and "regenerated" not in lines[0] and "2 layer(s) never fetched" in lines[0], lines
