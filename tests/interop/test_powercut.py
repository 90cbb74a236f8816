"""A power cut right after a writing command returns 0: what it reported must be on the disk.

How the cut is simulated, and what that proves: the root lives on an ext4 filesystem in a
loop-mounted image file, mounted with ``commit=600`` (no periodic journal commit during the
test; page-cache writeback only touches data older than ``dirty_expire``, 30 s). The loop
device turns every block the filesystem submits into a write of the image file, so the image
file holds exactly what the "disk" received, and nothing still dirty in ext4's own caches.
The moment the command exits, the image file is copied (``cp --sparse=always``): that copy is
the disk as a power cut at that instant leaves it. Mounting the copy replays the journal like
a reboot would; the images must then be listed, complete, and ``verify --deep`` clean (every
snapshot file's contents equal to its layer). A control file written without ``fsync`` just
before the copy is shown to be missing from it, so the copy really does drop what was not
made durable (the test would catch an import that skipped its syncs: then snapshot files of
the copy are empty, as the issue reported).

It cannot prove durability on a disk that lies about flushes, nor the order of writes inside
the device (a loop device completes them in submission order).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _ctrconv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctrconv", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=ENV)


class LoopDisk:
    """An ext4 image file, loop-mounted; :meth:`cut` copies the image as a power cut leaves it."""

    def __init__(self, base: Path, size: str = "768M") -> None:
        self.base = base
        self.image = base / "disk.img"
        self.mnt = base / "mnt"
        self.mnt.mkdir()
        subprocess.run(["truncate", "-s", size, str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.image)],
                       check=True, capture_output=True)
        self.device = subprocess.run(["losetup", "--find", "--show", str(self.image)], check=True,
                                     capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", "-t", "ext4", "-o", "commit=600", self.device, str(self.mnt)], check=True)
        self.copies: list[Path] = []

    def cut(self, name: str) -> Path:
        """The disk as a power cut now leaves it, mounted (journal replayed) at the returned path."""
        copy = self.base / f"{name}.img"
        subprocess.run(["cp", "--sparse=always", str(self.image), str(copy)], check=True)
        mnt = self.base / f"{name}.mnt"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "ext4", "-o", "loop", str(copy), str(mnt)], check=True)
        self.copies.append(mnt)
        return mnt

    def close(self) -> None:
        for mnt in [*self.copies, self.mnt]:
            subprocess.run(["umount", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", self.device], check=False)


@pytest.fixture
def disk(tmp_path: Path):
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root, losetup and mkfs.ext4")
    try:
        d = LoopDisk(tmp_path)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"no loop device here: {exc}")
    yield d
    d.close()


def _judge_root(root: Path, names: set[str]) -> None:
    ls = _ctrconv("ls", "--root", str(root), "--json")
    assert ls.returncode == 0, ls.stderr
    listed = json.loads(ls.stdout)["images"]
    assert {i["name"] for i in listed} == names
    assert all(i["complete"] for i in listed), listed
    deep = _ctrconv("verify", "--root", str(root), "-A", "--deep", "-q")
    assert deep.returncode == 0, deep.stdout


def test_the_copy_drops_what_was_not_synced(disk: LoopDisk) -> None:
    """The simulation's control: written, not fsynced, then cut: gone."""
    (disk.mnt / "synced").write_bytes(b"s" * 65536)
    subprocess.run(["sync", "-f", str(disk.mnt / "synced")], check=True)
    (disk.mnt / "unsynced").write_bytes(b"u" * 65536)
    after = disk.cut("control")
    assert (after / "synced").read_bytes() == b"s" * 65536
    unsynced = after / "unsynced"
    assert not unsynced.exists() or unsynced.read_bytes() != b"u" * 65536


def test_every_writing_command_is_durable_when_it_returns(disk: LoopDisk, fixture_set) -> None:
    oci = fixture_set.input("bbx-oci")
    zstd = fixture_set.input("bbx-zstd")
    root = disk.mnt / "root"

    assert _ctrconv("import", "--root", str(root), "-i", str(fixture_set.file(oci["path"])), "-q").returncode == 0
    _judge_root(disk.cut("import-new") / "root", set(oci["names"]))

    assert _ctrconv("import", "--root", str(root), "-i", str(fixture_set.file(zstd["path"])), "-q",
                    "--no-backup").returncode == 0
    _judge_root(disk.cut("import-existing") / "root", set(oci["names"]) | set(zstd["names"]))

    other = disk.mnt / "other"
    assert _ctrconv("export", "--root", str(root), zstd["names"][0], "-o", str(other), "--format",
                    "containerd-root", "-q").returncode == 0
    _judge_root(disk.cut("export-root") / "other", set(zstd["names"][:1]))

    assert _ctrconv("export", "--root", str(root), zstd["names"][0], "-o", str(disk.mnt / "x.tar"), "-q").returncode == 0
    assert _ctrconv("export", "--root", str(root), zstd["names"][0], "-o", str(disk.mnt / "x.dir"), "-q").returncode == 0
    after = disk.cut("export-files")
    for name in ("x.tar", "x.dir"):
        checked = _ctrconv("verify", "-i", str(after / name))
        assert checked.returncode == 0, checked.stdout + checked.stderr

    rebuilt = disk.mnt / "rebuilt"
    assert _ctrconv("rebuild", "--root", str(root), "-o", str(rebuilt), "-q").returncode == 0
    _judge_root(disk.cut("rebuild") / "rebuilt", set(oci["names"]) | set(zstd["names"]))


#: runs ctrconv with its first ``syncfs`` killing the process, as a power cut while that sync
#: runs (the files it would have written back never reach the disk)
_KILLED_AT_FIRST_SYNC = """
import os, signal, sys
import ctrconv.durability as durability
durability.syncfs = lambda path: os.kill(os.getpid(), signal.SIGKILL)
from ctrconv.entry import main
sys.argv = ["ctrconv", *sys.argv[1:]]
main()
"""


def test_a_rebuilt_root_appears_only_once_its_files_are_on_the_disk(disk: LoopDisk, fixture_set) -> None:
    """``rebuild -o NEW`` with nothing to import again copied the reused snapshot trees with
    plain writes and renamed the new root into place before its first ``syncfs``: cut during
    that sync, NEW existed, its images listed complete and every snapshot file empty (containerd
    said complete and unpacked, then ``exec format error``; a red-team run). The new root is
    now synced before it appears: cut at that sync, there is no NEW (or a whole one)."""
    oci = fixture_set.input("bbx-oci")
    root = disk.mnt / "root"
    assert _ctrconv("import", "--root", str(root), "-i", str(fixture_set.file(oci["path"])), "-q").returncode == 0
    rebuilt = disk.mnt / "rebuilt"
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_FIRST_SYNC, "rebuild", "--root", str(root), "-o",
                             str(rebuilt), "-q"], cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
    assert killed.returncode == -9, killed.stderr
    # another program's fsync commits the journal, the rename with it (as ext4's periodic
    # commit does every 5 s on a node; this disk is mounted with commit=600)
    with open(disk.mnt / "other-app.log", "wb") as other:
        other.write(b"x")
        os.fsync(other.fileno())
    after = disk.cut("rebuild-killed") / "rebuilt"
    if after.exists() and any(after.iterdir()):
        _judge_root(after, set(oci["names"]))
