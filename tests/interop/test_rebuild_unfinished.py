"""An in-place rebuild that fails between its commits (a full disk) says how to finish it, and a
re-run does. It said "after the commit point: what the command wrote is in place" with the root
half rebuilt and its record of the damage still there (a red-team run, a small tmpfs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctrconv.recovery.rebuild import UNFINISHED

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path("io.containerd.snapshotter.v1.overlayfs") / "snapshots"

#: ``ctrconv rebuild`` whose last stage (after the new bolt files are in place) finds the disk full
_FULL_LATE = """
import errno, sys
from ctrconv.recovery import rebuild
def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "io.containerd.content.v1.content")
rebuild.settle_rebuilt_root = full
from ctrconv.entry import main
sys.argv = ["ctrconv", *sys.argv[1:]]
main()
"""


def test_a_full_disk_between_the_commits_of_an_in_place_rebuild_says_to_run_it_again(tmp_root_copy, cli):
    victim = sorted((tmp_root_copy / SNAPSHOTS).iterdir(), key=lambda p: int(p.name))[-1]
    shutil.rmtree(victim)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", _FULL_LATE, "rebuild", "--root", str(tmp_root_copy), "-q"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1, run.stderr
    assert run.stderr.count("\n") == 1 and UNFINISHED in run.stderr and "is in place" not in run.stderr, run.stderr
    assert cli("verify", "--root", str(tmp_root_copy), "-A", "-q").code == 1  # (the record of the damage stays)
    again = cli("rebuild", "--root", str(tmp_root_copy), "-q")
    assert again.code == 0, again.stderr
    assert cli("verify", "--root", str(tmp_root_copy), "-A", "-q").code == 0
