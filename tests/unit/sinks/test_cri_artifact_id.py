"""A CRI-mode import (``-n k8s.io``) of an artifact that is one manifest (a wasm module, a helm
chart) writes the image-ID record ``sha256:<config>`` that CRI 1.7 and 2.x write when they pull
one, beside ``repo:tag`` and ``repo@sha256:<manifest>`` (a red-team run against CRI's
PullImage: the ID record was left out)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def _blob(layout: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def test_a_wasm_module_gets_its_image_id_record(tmp_path: Path, cli) -> None:
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    config = _blob(layout, b'{"architecture":"wasm","os":"wasip1"}', "application/vnd.wasm.config.v0+json")
    module = _blob(layout, b"\0asm\x01\0\0\0", "application/vnd.wasm.content.layer.v1+wasm")
    manifest = _blob(layout, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                         "config": config, "layers": [module]}).encode(),
                     "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"io.containerd.image.name": "registry.example/wasm/app:1",
                               "org.opencontainers.image.ref.name": "1"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    root = tmp_path / "root"
    done = cli("import", "--root", str(root), "-n", "k8s.io", "-i", str(layout), "-q")
    assert done.code == 0, done.stderr
    names = {i["name"] for i in cli("ls", "--root", str(root), "-n", "k8s.io", "--json").json["images"]}
    assert names == {"registry.example/wasm/app:1", f"registry.example/wasm/app@{manifest['digest']}", config["digest"]}
