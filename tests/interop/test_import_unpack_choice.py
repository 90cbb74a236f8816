"""Which manifest an import unpacks, judged by ``ctr images import`` of the same archive:
containerd's ``Unpack`` takes the image's own manifest whatever its platform (an arm64 image
imported on amd64 is unpacked: a node image built on another architecture), and of an index
the best child its platform matches, children without a platform last and only the first of
them, by its config (found by a red-team run: ctrconv unpacked neither alike)."""

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
NAME = "docker.io/library/foreign:1"
FOREIGN = "arm64" if os.uname().machine != "aarch64" else "amd64"


def _check(root: Path, workdir: Path) -> dict[str, str]:
    with PrivateContainerd(root=root, workdir=workdir) as daemon:
        return parse_table(daemon.ctr("images", "check").stdout)[0]


def test_an_image_of_another_architecture_is_unpacked_as_ctr_import_unpacks_it(tmp_path: Path) -> None:
    archive = busybox_oci_archive(tmp_path, NAME, arch=FOREIGN)
    theirs = tmp_path / "theirs"
    with PrivateContainerd(root=theirs, workdir=tmp_path) as daemon:
        daemon.ctr("images", "import", str(archive))
    ours = tmp_path / "ours"
    done = subprocess.run([sys.executable, "-m", "ctrconv", "import", "--root", str(ours), "-i", str(archive), "-q"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    want, got = _check(theirs, tmp_path), _check(ours, tmp_path)
    assert want["REF"] == got["REF"] == NAME
    assert (got["STATUS"], got["UNPACKED"]) == (want["STATUS"], want["UNPACKED"]) == ("complete (2/2)", "true")
