"""One progress protocol (``ctrconv.progress``, issue 14 item 6): every operation reports named
stages with totals known before the work starts, one stage at a time, each reaching its total
and closed; the CLI draws them as bars on a terminal and draws nothing on a pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import struct
import subprocess
import sys
import tarfile
import termios
import fcntl
from pathlib import Path

import pytest

from support.progress import RecordingProgress

from ctrconv import api
from ctrconv.progress import SILENT, stage

REPO = Path(__file__).resolve().parents[2]
IMAGE = "docker.io/library/busybox:small"



@pytest.fixture(scope="module")
def archive(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("progress-archive") / "busybox.tar"
    api.export_images(small_root, out, image=[IMAGE])
    return out


def _blob_bytes(root: Path) -> int:
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    return sum(p.stat().st_size for p in blobs.iterdir())


def _layer_entries(root: Path) -> int:
    """The tar entries of the root's (uncompressed) layer blobs: what an unpack writes."""
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    layers = [p for p in blobs.iterdir() if tarfile.is_tarfile(p)]
    assert layers
    count = 0
    for layer in layers:
        with tarfile.open(layer) as tar:
            count += len(tar.getmembers())
    return count


def _finished(progress: RecordingProgress) -> None:
    """Every stage ran to its total exactly and was closed."""
    for s in progress.stages:
        assert s.closed and not s.overran and s.done == s.total, s


def test_a_stage_is_closed_when_the_work_fails() -> None:
    progress = RecordingProgress()
    with pytest.raises(RuntimeError):
        with stage(progress, "content", 10) as step:
            step.advance(3)
            raise RuntimeError("disk full")
    assert progress.stages[0].closed and progress.stages[0].done == 3
    with stage(None, "nobody watching", 5) as step:  # None is SILENT
        step.advance(5, files=2)
    assert SILENT.stage("x", 1) is SILENT.stage("y", 2)


def test_verify_sums_the_blob_bytes_before_hashing(small_root: Path) -> None:
    progress = RecordingProgress()
    report = api.verify_root(small_root, progress=progress)
    assert report.ok
    assert progress.names() == ["verify"]
    assert progress.stages[0].total == _blob_bytes(small_root) > 0
    _finished(progress)


def test_verify_of_a_layout_sums_its_blobs_first(archive: Path) -> None:
    progress = RecordingProgress()
    report = api.verify_layout(str(archive), progress=progress)
    assert report.ok and progress.names() == ["verify"] and progress.stages[0].total > 0
    _finished(progress)


def test_import_reports_content_unpack_and_records(archive: Path, tmp_path: Path) -> None:
    """No bar per blob: three stages; the unpack counts the layers' bytes and the files written."""
    progress = RecordingProgress()
    report = api.import_images(str(archive), tmp_path / "root", progress=progress, snapshotter="native")
    assert report.images[0].unpacked
    assert progress.names() == ["content", "unpack", "records"]
    content, unpack, records = progress.stages
    assert content.total == report.bytes_written == _blob_bytes(tmp_path / "root")
    assert 0 < unpack.total < content.total and unpack.files == _layer_entries(tmp_path / "root") > 0
    assert records.unit == "records" and records.total >= 1 + 3  # the image, its manifest, config, layer
    _finished(progress)


def test_import_of_present_content_still_reaches_its_totals(archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    api.import_images(str(archive), root, snapshotter="native")
    progress = RecordingProgress()
    report = api.import_images(str(archive), root, progress=progress, snapshotter="native")
    assert report.bytes_written == 0 and report.images[0].status == "present"
    assert progress.names() == ["content", "unpack", "records"]  # the existing snapshot counts as done
    _finished(progress)


def test_import_without_unpack_opens_no_unpack_stage(archive: Path, tmp_path: Path) -> None:
    progress = RecordingProgress()
    api.import_images(str(archive), tmp_path / "root", progress=progress, unpack=False)
    assert progress.names() == ["content", "records"]
    _finished(progress)


def test_rebuild_reports_the_bytes_it_hashes(small_root: Path, tmp_path: Path) -> None:
    """Into a new root: the content check (copy and hash), then the re-import's own stages; in
    place: the verify that finds the root healthy. The hashing stages' totals are the store's
    blob bytes, summed before reading; every stage reaches its total."""
    import shutil

    into_new = RecordingProgress()
    api.rebuild_root(small_root, tmp_path / "new", progress=into_new)
    assert into_new.names()[0] == "checking content" and into_new.names()[1:] in (
        ["content", "unpack", "records"], ["content", "records"])  # unpack: when snapshots are rebuilt
    in_place = RecordingProgress()
    copy = tmp_path / "copy"
    shutil.copytree(small_root, copy, symlinks=True)
    api.rebuild_root(copy, progress=in_place)
    assert in_place.names()[0] == "verify"
    for progress in (into_new, in_place):
        assert progress.stages[0].total == _blob_bytes(small_root) > 0
        _finished(progress)


# -- the CLI's bars ---------------------------------------------------------------------------


def _run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ctrconv with stderr on a pseudo-terminal (120 columns); what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "ctrconv", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env=env, cwd=REPO)
    os.close(slave)
    drawn = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                proc.kill()
                raise AssertionError("no output from ctrconv for 120 s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            drawn += data
    finally:
        os.close(master)
    return proc.wait(timeout=120), drawn.decode(errors="replace")


def _total_text(total: int) -> str:
    from tqdm import tqdm

    return "/" + tqdm.format_sizeof(total, divisor=1024)


def test_bars_with_totals_on_a_terminal(small_root: Path) -> None:
    code, drawn = _run_on_a_terminal(["verify", "--root", str(small_root)])
    assert code == 0, drawn
    assert "verify:" in drawn and _total_text(_blob_bytes(small_root)) in drawn, drawn


def test_import_draws_its_stages_on_a_terminal(archive: Path, tmp_path: Path) -> None:
    code, drawn = _run_on_a_terminal(["import", "-i", str(archive), "--root", str(tmp_path / "root"),
                                      "--snapshotter", "native", "--json"])
    assert code == 0, drawn
    positions = [drawn.find(f"{name}:") for name in ("content", "unpack", "records")]
    assert -1 not in positions and positions == sorted(positions), drawn
    # no bar per blob (they were labelled with digest prefixes): these three bars only
    assert set(re.findall(r"([\w ]+): +\d+%\|", drawn)) == {"content", "unpack", "records"}, drawn


def test_nothing_is_drawn_on_a_pipe_or_with_quiet(small_root: Path, archive: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    piped = subprocess.run([sys.executable, "-m", "ctrconv", "verify", "--root", str(small_root)],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""
    imported = subprocess.run([sys.executable, "-m", "ctrconv", "import", "-i", str(archive), "--root",
                               str(tmp_path / "root"), "--snapshotter", "native"],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert imported.returncode == 0 and imported.stderr == "", imported.stderr
    code, drawn = _run_on_a_terminal(["verify", "--root", str(small_root), "-q"])
    assert code == 0 and "verify:" not in drawn, drawn
