"""An image whose non-distributable (foreign) layer is not in the input is imported, as
containerd's ``ctr images import`` imports it (found by a red-team run: ctrconv refused its own
``export --skip-non-distributable``); it cannot be unpacked, which the report says."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from support.layouts import LayoutBuilder, layer_tar

FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def _layout(path: Path, media_type: str) -> None:
    layout = LayoutBuilder(path)
    raw = layer_tar({"bin/tool": b"x"})
    present = layout.blob(gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    absent_raw = layer_tar({"Windows/base": b"y"})
    absent_blob = gzip.compress(absent_raw, mtime=0)
    absent = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(absent_blob).hexdigest(),
              "size": len(absent_blob), "urls": ["https://example.invalid/base"]}
    diff_ids = ["sha256:" + hashlib.sha256(r).hexdigest() for r in (absent_raw, raw)]
    config = layout.blob(json.dumps({"architecture": "amd64", "os": "linux",
                                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode(),
                         "application/vnd.oci.image.config.v1+json")
    manifest = layout.blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "config": config, "layers": [absent, present]}).encode(),
                           "application/vnd.oci.image.manifest.v1+json")
    layout.index.append({**manifest, "annotations": {"io.containerd.image.name": "example.com/foreign:1"}})
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": layout.index}))


@pytest.mark.parametrize("media_type", [FOREIGN, NONDIST])
def test_an_absent_non_distributable_layer_is_no_missing_input(cli, tmp_path: Path, media_type: str) -> None:
    _layout(tmp_path / "layout", media_type)
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-i", str(tmp_path / "layout"))
    assert result.code == 0, result.stderr
    assert "not unpacked: a non-distributable layer of it is not in the input" in result.stdout
    listed = cli("ls", "--root", str(root), "--json").json["images"]
    assert [(i["name"], i["complete"], len(i["missing"])) for i in listed] == [("example.com/foreign:1", False, 1)]
    quiet = cli("import", "--root", str(tmp_path / "root2"), "-i", str(tmp_path / "layout"), "--no-unpack")
    assert quiet.code == 0 and "not unpacked" not in quiet.stdout


def test_an_absent_distributable_layer_is_still_missing_input(cli, tmp_path: Path) -> None:
    _layout(tmp_path / "layout", "application/vnd.oci.image.layer.v1.tar+gzip")
    result = cli("import", "--root", str(tmp_path / "root"), "-i", str(tmp_path / "layout"), "--no-unpack")
    assert result.code == 1 and "the input lacks" in result.stderr
