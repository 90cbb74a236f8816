"""Valid seed inputs that mutators damage: real bolt files and a small, deterministic image.

The bolt seeds are the ``meta.db`` and snapshotter ``metadata.db`` that a real containerd wrote
into ``fixtures/small-root.tar.xz``. The image seeds (layer tar, config, manifest, index, OCI
layout tar, docker-archive tar) are built here from fixed bytes, so every run sees the same
seeds without a daemon.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMALL_ROOT = REPO / "fixtures" / "small-root.tar.xz"
BOLT_MEMBERS = {
    "meta.db": "small-root/io.containerd.metadata.v1.bolt/meta.db",
    "metadata.db": "small-root/io.containerd.snapshotter.v1.overlayfs/metadata.db",
}
MTIME = 1700000000
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@lru_cache(maxsize=None)
def bolt_seed(name: str) -> bytes:
    """``meta.db`` or ``metadata.db`` bytes from the committed small root."""
    with tarfile.open(SMALL_ROOT, "r:xz") as tf:
        member = tf.extractfile(BOLT_MEMBERS[name])
        assert member is not None
        return member.read()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar stream of ``(TarInfo, data)`` pairs, with fixed owner and mtime unless set."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644, linkname: str = "",
          data: bytes | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, MTIME, linkname
    return info, data if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else None


@lru_cache(maxsize=None)
def layer_tar() -> bytes:
    """An uncompressed layer with every entry kind apply has to handle."""
    return tar_bytes([
        entry("bin/", tarfile.DIRTYPE, mode=0o755),
        entry("bin/tool", data=b"#!/bin/sh\necho hi\n" * 20, mode=0o755),
        entry("bin/sh", tarfile.SYMTYPE, linkname="tool"),
        entry("bin/hard", tarfile.LNKTYPE, linkname="bin/tool"),
        entry("etc/", tarfile.DIRTYPE, mode=0o755),
        entry("etc/conf", data=b"key=value\n"),
        entry("etc/.wh.old", data=b""),
        entry("var/.wh..wh..opq", data=b""),
        entry("var/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry("var/" + "long-name-" * 12, data=b"x" * 3000),
    ])


@lru_cache(maxsize=None)
def image_blobs() -> dict[str, bytes]:
    """The image's documents and layer by role: layer, config, manifest, index (index.json)."""
    raw = layer_tar()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(raw)]},
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
    }, separators=(",", ":")).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
            "annotations": {"io.containerd.image.name": "docker.io/library/seed:1",
                            "org.opencontainers.image.ref.name": "1"},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }, separators=(",", ":")).encode()
    return {"layer": layer, "layer_tar": raw, "config": config, "manifest": manifest, "index": index}


def layout_files() -> dict[str, bytes]:
    """An OCI image layout as ``{path: bytes}``."""
    blobs = image_blobs()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": blobs["index"]}
    for role in ("layer", "config", "manifest"):
        files["blobs/sha256/" + sha256(blobs[role])[7:]] = blobs[role]
    return files


def files_tar(files: dict[str, bytes]) -> bytes:
    return tar_bytes([entry(name, data=data) for name, data in files.items()])


@lru_cache(maxsize=None)
def oci_tar() -> bytes:
    """The image as an OCI layout tar (what ``ctr images export`` writes, minus manifest.json)."""
    return files_tar(layout_files())


@lru_cache(maxsize=None)
def docker_archive() -> bytes:
    """The image as a docker-archive (``docker save`` before 25: manifest.json + layer.tar)."""
    blobs = image_blobs()
    config_name = sha256(blobs["config"])[7:] + ".json"
    layer_name = sha256(blobs["layer_tar"])[7:] + "/layer.tar"
    manifest = json.dumps([{
        "Config": config_name, "RepoTags": ["seed:1"], "Layers": [layer_name],
    }]).encode()
    return files_tar({"manifest.json": manifest, config_name: blobs["config"], layer_name: blobs["layer_tar"]})


def json_seeds() -> dict[str, bytes]:
    """Media type -> a valid document of that type."""
    blobs = image_blobs()
    return {OCI_INDEX: blobs["index"], OCI_MANIFEST: blobs["manifest"], OCI_CONFIG: blobs["config"]}
