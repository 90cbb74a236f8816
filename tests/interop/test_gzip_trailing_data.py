"""Bytes after a gzip layer's last member: containerd accepts them when it inflates with
``unpigz`` (on its PATH and not disabled by ``CONTAINERD_DISABLE_PIGZ``) and refuses them with
Go's reader. ``ctrconv import`` decides as containerd on the same host does: the oracle is the
real daemon's ``ctr images import`` of the same archive under the same environment, then the
daemon running what ctrconv unpacked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.archives import busybox_oci_archive
from support.daemon import PrivateContainerd, parse_table

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
NAME = "docker.io/library/trailing:1"


@pytest.mark.parametrize("pigz", ["host", "disabled"])
@pytest.mark.parametrize("tail", [b"\0" * 8, b"JUNKJUNK", b"\x1f\x8bgarbage"], ids=["zeros", "text", "broken-header"])
def test_import_accepts_trailing_bytes_exactly_when_containerd_does(pigz: str, tail: bytes, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if pigz == "disabled":
        monkeypatch.setenv("CONTAINERD_DISABLE_PIGZ", "1")
    else:
        monkeypatch.delenv("CONTAINERD_DISABLE_PIGZ", raising=False)
    archive = busybox_oci_archive(tmp_path, NAME, tail=tail, cmd="echo trailing-ok")
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
