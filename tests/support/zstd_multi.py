"""A multi-platform image whose every layer is zstd, made from a fixture set's ``bbx:multi``
(busybox for three platforms) and stored in a fresh containerd root by ``ctrconv import``.

Each platform's layers are the same tars recompressed with zstd, so every config (its diff
IDs) and image ID is ``bbx:multi``'s; only manifests and the index are new. Used to judge that
a docker archive of it, with ``--all-platforms``, holds no zstd layer for any platform.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from ctrconv import api

NAME = "docker.io/library/bbx:zmulti"
SOURCE = "docker.io/library/bbx:multi"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@dataclass(frozen=True)
class ZstdMulti:
    root: Path
    #: ``{"linux/amd64": config digest, ...}`` (each platform's image ID, bbx:multi's)
    configs: dict[str, str]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _platform(p: dict[str, Any]) -> str:
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


class _Layout:
    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        (dst / "blobs" / "sha256").mkdir(parents=True)
        (dst / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def read(self, digest: str) -> bytes:
        return (self.src / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()

    def put(self, data: bytes) -> dict[str, Any]:
        digest = _digest(data)
        (self.dst / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        return {"digest": digest, "size": len(data)}


def _zstd_manifest(layout: _Layout, desc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The manifest ``desc`` with its layers as zstd (same tars); (new descriptor, config digest)."""
    doc = json.loads(layout.read(desc["digest"]))
    layout.put(layout.read(doc["config"]["digest"]))
    layers = []
    for layer in doc["layers"]:
        blob = layout.read(layer["digest"])
        tar = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        layers.append({"mediaType": OCI_ZSTD, **layout.put(zstandard.ZstdCompressor(level=3).compress(tar))})
    doc["layers"] = layers
    new = dict(desc)
    new.update(mediaType=doc.get("mediaType", desc["mediaType"]), **layout.put(json.dumps(doc).encode()))
    return new, doc["config"]["digest"]


def build(fixture_set: Any, work: Path) -> ZstdMulti:
    """``bbx:zmulti`` in a new root ``work/root`` (content only, not unpacked)."""
    src = work / "multi"
    api.export_images(fixture_set.root, src, image=[SOURCE], all_platforms=True, format="oci-dir")
    layout = _Layout(src, work / "zmulti")
    top = json.loads((src / "index.json").read_text())["manifests"][0]
    index = json.loads(layout.read(top["digest"]))
    configs: dict[str, str] = {}
    children = []
    for child in index["manifests"]:
        new, config = _zstd_manifest(layout, child)
        configs[_platform(child["platform"])] = config
        children.append(new)
    index["manifests"] = children
    entry = {"mediaType": top["mediaType"], **layout.put(json.dumps(index).encode()),
             "annotations": {"io.containerd.image.name": NAME, "org.opencontainers.image.ref.name": "zmulti"}}
    (layout.dst / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    root = work / "root"
    api.import_images(layout.dst, root, all_platforms=True, unpack=False)
    return ZstdMulti(root, configs)


def check_archive(archive: Path, configs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """No file of the docker archive is zstd; every platform manifest it holds lists plain
    layers hashing to its config's diff IDs, and keeps its config. Returns them by platform."""
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert not [n for n, data in files.items() if data.startswith(ZSTD_MAGIC)]

    def blob(digest: str) -> bytes:
        return files["blobs/sha256/" + digest.split(":", 1)[1]]

    top, = json.loads(files["index.json"])["manifests"]
    held = {}
    for child in json.loads(blob(top["digest"]))["manifests"]:
        if "blobs/sha256/" + child["digest"][7:] not in files:
            continue
        manifest = json.loads(blob(child["digest"]))
        platform = _platform(child["platform"])
        assert manifest["config"]["digest"] == configs[platform]
        diff_ids = json.loads(blob(manifest["config"]["digest"]))["rootfs"]["diff_ids"]
        assert [layer["digest"] for layer in manifest["layers"]] == diff_ids
        assert all(not layer["mediaType"].endswith("zstd") for layer in manifest["layers"])
        assert all(_digest(blob(d)) == d for d in diff_ids)
        held[platform] = manifest
    return held
