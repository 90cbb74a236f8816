"""Import and export onto a full disk (a 2 MiB tmpfs): a clean error and nothing half-written."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from hostile.images import image, member, tar
from support.ctrconv_runs import import_args, listed_images, run_ctrconv

BIG = 3 << 20  # more than the tmpfs holds


@pytest.fixture
def small_fs(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _big(name: str) -> bytes:
    rng = random.Random(7)
    return image([tar([member("blob", data=rng.randbytes(BIG))])], name=name)


def _one_error_line(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctrconv: error: "), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr


def test_import_onto_full_disk(tmp_path: Path, small_fs: Path) -> None:
    old = tmp_path / "old.tar"
    old.write_bytes(image([tar([member("old", data=b"old")])], name="docker.io/library/old:1"))
    new = tmp_path / "new.tar"
    new.write_bytes(_big("docker.io/library/new:1"))
    root = small_fs / "root"
    run_ctrconv(*import_args(root, old))
    before = listed_images(root)
    proc = run_ctrconv(*import_args(root, new), check=False)
    assert proc.returncode == 1, proc.stderr
    _one_error_line(proc.stderr)
    assert listed_images(root) == before
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    assert all(p.stat().st_size < BIG for p in blobs.iterdir()), "a partial blob was left in blobs/"


def test_export_onto_full_disk(tmp_path: Path, small_fs: Path) -> None:
    source = tmp_path / "big.tar"
    source.write_bytes(_big("docker.io/library/big:1"))
    root = tmp_path / "root"
    run_ctrconv(*import_args(root, source))
    for fmt, out in (("oci-tar", small_fs / "out.tar"), ("oci-dir", small_fs / "out")):
        proc = run_ctrconv("export", "--root", str(root), "-o", str(out), "--format", fmt, "-q",
                        "docker.io/library/big:1", check=False)
        assert proc.returncode == 1, proc.stderr
        _one_error_line(proc.stderr)
        assert not out.exists(), f"{fmt}: half-written output left at {out}"
        assert not [p for p in small_fs.iterdir()], f"{fmt}: leftovers {list(small_fs.iterdir())}"
