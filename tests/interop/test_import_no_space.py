"""A full disk at the commit of an import: every new bolt file (and backup) is written before
any is renamed into place, so the import that fails there takes back all it wrote. Before, a
pull that ran out of room at meta.db left its snapshotter db replaced, its snapshot installed
and its blobs in the store: twice the image's size that nothing freed (a red-team run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.archives import busybox_oci_archive

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]

#: ``ctrconv import`` whose write of the named bolt file's new copy fails for lack of room
_FULL_AT = """
import errno, sys
from ctrconv.sinks.containerd_root import transaction
real, name = transaction.prepare_bolt, sys.argv[1]
def full(path, *args, **kwargs):
    if path.name == name:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(path, *args, **kwargs)
transaction.prepare_bolt = full
copy = transaction.shutil.copy2
def full_backup(source, target):
    if name.endswith(".bak"):  # the disk fills while the backup is copied: half of it written
        with open(source, "rb") as src, open(target, "wb") as dst:
            dst.write(src.read(4096))
        raise OSError(errno.ENOSPC, "No space left on device", str(target))
    return copy(source, target)
transaction.shutil.copy2 = full_backup
from ctrconv.entry import main
sys.argv = ["ctrconv", *sys.argv[2:]]
main()
"""


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path of the root, with the size and modification time of each file (a directory's
    changes with every temp made and removed in it)."""
    found = {}
    for path in root.rglob("*"):
        st = path.lstat()
        found[str(path.relative_to(root))] = (0, 0) if path.is_dir() else (st.st_size, st.st_mtime_ns)
    return found


@pytest.mark.parametrize("full_at", ["meta.db", "metadata.db", "any.bak"])
def test_a_full_disk_at_the_commit_leaves_the_root_as_it_was(full_at, tmp_root_copy, tmp_path, private_containerd):
    archive = busybox_oci_archive(tmp_path, "docker.io/test/nospace:v1", extra={"etc/nospace": b"a layer of its own\n"})
    before = _tree(tmp_root_copy)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", _FULL_AT, full_at, "import", "--root", str(tmp_root_copy),
                          "-i", str(archive), "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.startswith("ctrconv: error: ") and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "No space left on device" in run.stderr
    assert _tree(tmp_root_copy) == before  # no blob, snapshot, bolt file, backup or temp left
    daemon = private_containerd(root=tmp_root_copy)
    assert "docker.io/test/nospace:v1" not in {r.ref for r in daemon.images_check("default")}


#: ``ctrconv import`` that gets SIGTERM right after the snapshotter db is renamed into place
_TERM_AFTER_FIRST_RENAME = """
import os, signal, sys
from ctrconv.sinks.containerd_root import transaction
real = transaction.RootTransaction._publish
def publish(self, state, new):
    real(self, state, new)
    if state.path.name == "metadata.db":
        os.kill(os.getpid(), signal.SIGTERM)
transaction.RootTransaction._publish = publish
from ctrconv.entry import main
sys.argv = ["ctrconv", *sys.argv[1:]]
main()
"""


def test_a_signal_between_the_renames_of_the_commit_is_taken_after_them(tmp_root_copy, tmp_path, private_containerd):
    """SIGTERM after the snapshotter db's rename and before meta.db's left the first replaced,
    naming a snapshot the failed import then removed (a red-team run). The renames run with
    the signal deferred: the import is whole, and the command says it was signalled after."""
    archive = busybox_oci_archive(tmp_path, "docker.io/test/termed:v1", extra={"etc/termed": b"a layer of its own\n"})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", _TERM_AFTER_FIRST_RENAME, "import", "--root", str(tmp_root_copy),
                          "-i", str(archive), "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and "terminated after writing" in run.stderr, run.stdout + run.stderr
    daemon = private_containerd(root=tmp_root_copy)
    [row] = [r for r in daemon.images_check("default") if r.ref == "docker.io/test/termed:v1"]
    assert row.complete and row.unpacked, row
