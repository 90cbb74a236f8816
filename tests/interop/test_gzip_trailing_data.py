"""Bytes after a gzip layer's last member: containerd accepts them when it inflates with
``unpigz`` (on its PATH and not disabled by ``CONTAINERD_DISABLE_PIGZ``) and refuses them with
Go's reader. ``ctrconv import`` decides as containerd on the same host does: the oracle is the
real daemon's ``ctr images import`` of the same archive under the same environment, then the
daemon running what ctrconv unpacked."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from support.daemon import PrivateContainerd, parse_table

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
NAME = "docker.io/library/trailing:1"


def _blob(layout: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _archive(tmp_path: Path, tail: bytes) -> Path:
    """One image whose one gzip layer (busybox as /bin/sh) is followed by ``tail``."""
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    busybox = Path("/bin/busybox").read_bytes()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin/", "bin/sh"):
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(busybox), 0o755
                tar.addfile(info, io.BytesIO(busybox))
    layer = _blob(layout, gzip.compress(raw.getvalue(), mtime=0) + tail, "application/vnd.oci.image.layer.v1.tar+gzip")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = _blob(layout, json.dumps({
        "architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh", "-c", "echo trailing-ok"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]},
    }).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = _blob(layout, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                         "config": config, "layers": [layer]}).encode(),
                     "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"io.containerd.image.name": NAME, "org.opencontainers.image.ref.name": "1"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    archive = tmp_path / "trailing.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(layout), "."], check=True)
    return archive


@pytest.mark.parametrize("pigz", ["host", "disabled"])
@pytest.mark.parametrize("tail", [b"\0" * 8, b"JUNKJUNK", b"\x1f\x8bgarbage"], ids=["zeros", "text", "broken-header"])
def test_import_accepts_trailing_bytes_exactly_when_containerd_does(pigz: str, tail: bytes, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if pigz == "disabled":
        monkeypatch.setenv("CONTAINERD_DISABLE_PIGZ", "1")
    else:
        monkeypatch.delenv("CONTAINERD_DISABLE_PIGZ", raising=False)
    archive = _archive(tmp_path, tail)
    with PrivateContainerd(root=tmp_path / "ctr-root", workdir=tmp_path) as daemon:
        oracle = daemon.ctr("images", "import", str(archive), check=False).returncode == 0
    ours_root = tmp_path / "ours"
    ours = subprocess.run([sys.executable, "-m", "ctrconv", "import", "--root", str(ours_root), "-i", str(archive), "-q"],
                          cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
    assert (ours.returncode == 0) == oracle, (oracle, ours.returncode, ours.stderr)
    if not oracle:
        lines = ours.stderr.splitlines()
        assert ours.returncode == 1 and len(lines) == 1, ours.stderr
        # one line naming the layer, as containerd's "failed to extract layer"
        assert lines[0].startswith("ctrconv: error: layer sha256:") and "gzip layer" in lines[0], lines
        return
    with PrivateContainerd(root=ours_root, workdir=tmp_path) as daemon:
        rows = {r["REF"]: r for r in parse_table(daemon.ctr("images", "check").stdout)}
        assert rows[NAME]["STATUS"].startswith("complete") and rows[NAME]["UNPACKED"] == "true"
        run = daemon.ctr("run", "--rm", NAME, f"trailing-{os.getpid()}-{pigz}-{tail[:1].hex()}")
        assert run.stdout.strip() == "trailing-ok"
