"""A killed ``export --format oci-dir`` or ``rebuild -o NEW`` leaves its temp beside the output.
The re-run writes the output (the temp still fresh, so kept); every later run is refused
because the output exists, and the temp, as large as the node for a rebuild, stayed for good
(a red-team run). A refused run removes it now, once it is abandoned."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ctrconv import tempfiles

IMAGE = "docker.io/library/busybox:small"


def _abandoned(path: Path) -> Path:
    """A directory as a killed run leaves it: nobody holds it, untouched for longer than the rule."""
    path.mkdir()
    (path / "blobs").mkdir()
    (path / "blobs" / "partial").write_bytes(b"x" * 1000)
    old = time.time() - tempfiles.ABANDONED_AFTER_SECONDS - 5
    for p in (path / "blobs" / "partial", path / "blobs", path):
        os.utime(p, (old, old))
    return path


def test_a_refused_oci_dir_export_removes_the_temp_a_killed_run_left(tmp_path: Path, small_root: Path, cli) -> None:
    out = tmp_path / "out"
    first = cli("export", "--root", str(small_root), "--image", IMAGE, "--format", "oci-dir", "-o", str(out), "-q")
    assert first.code == 0, first.stderr
    left = _abandoned(tmp_path / ".out.abcd1234.ctrconv-tmp")
    fresh = tmp_path / ".out.efgh5678.ctrconv-tmp"
    fresh.mkdir()  # (a run of this moment's: kept)
    again = cli("export", "--root", str(small_root), "--image", IMAGE, "--format", "oci-dir", "-o", str(out), "-q")
    assert again.code == 2 and "exists and is not empty" in again.stderr
    assert not left.exists() and fresh.exists()


def test_a_refused_rebuild_into_an_existing_output_removes_a_killed_runs_staging_root(tmp_path: Path,
                                                                                     small_root: Path, cli) -> None:
    new = tmp_path / "new"
    new.mkdir()
    (new / "something").write_text("x")
    left = _abandoned(tmp_path / ".new.ctrconv-abcd1234")
    other = _abandoned(tmp_path / ".newer.ctrconv-abcd1234")  # another output's: not this run's to judge
    refused = cli("rebuild", "--root", str(small_root), "-o", str(new), "-q")
    assert refused.code == 2 and "exists and is not empty" in refused.stderr
    assert not left.exists() and other.exists()
