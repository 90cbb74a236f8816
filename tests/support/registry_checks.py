"""What the registry tests ask of a registry and of a root: skopeo runs, seeding from the fixture
archives, manifest digests as served, and a root's records without timestamps."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ctrconv.containerd.root import ContainerdRoot

needs_registry = pytest.mark.skipif(
    not (shutil.which("docker-registry") and shutil.which("skopeo") and shutil.which("openssl")),
    reason="needs docker-registry, skopeo and openssl (apt-get install docker-registry skopeo openssl)")

#: fixture archive key -> the ``org.opencontainers.image.ref.name`` skopeo reads (None: docker-archive)
ARCHIVE_REF = {"bbx-oci": "oci", "bbx-multi": "multi", "bbx-zstd": "zstd", "bbx-uncompressed": "uncompressed",
               "bbx-sparse": "sparse", "bbx-docker": None}


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    return res


def seed(registry_host: str, fixture_set: Any, key: str, repo: str, *extra: str) -> None:
    """Copy a fixture archive into the registry with skopeo (every platform, digests kept)."""
    archive = fixture_set.inputs / f"{key}.tar"
    ref_name = ARCHIVE_REF[key]
    src = f"oci-archive:{archive}:{ref_name}" if ref_name else f"docker-archive:{archive}"
    skopeo("copy", "--all", "--dest-tls-verify=false", *extra, src, f"docker://{registry_host}/{repo}")


def records(root: Path, namespace: str = "default") -> tuple[dict, dict]:
    """Image records (target, labels, annotations) and content records (size, labels): no times."""
    with ContainerdRoot(root).open_metadata() as meta:
        images = {i.name: (i.target, i.labels, i.annotations) for i in meta.images(namespace)}
        blobs = {b.digest: (b.size, b.labels) for b in meta.blobs(namespace)}
    return images, blobs


def target_of(root: Path, name: str, namespace: str = "default") -> str:
    with ContainerdRoot(root).open_metadata() as meta:
        return next(i.target.digest for i in meta.images(namespace) if i.name == name)


def raw_digest(ref: str, *extra: str) -> str:
    """The digest of the manifest a registry serves for ``ref`` (``docker://…``)."""
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", *extra, ref],
                         capture_output=True, timeout=120, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 1, (result.code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ctrconv: error: "), result.stderr
    return lines[0]
