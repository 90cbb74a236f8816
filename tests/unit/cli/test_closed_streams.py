"""Standard streams the caller closed (``>&-``, ``<&-``), or that a shell left holding a file of
its own (bash through a script shim hands on the script it read as descriptor 2): the next
file opened would take the descriptor, and the first report line failed with an internal
``AttributeError``, or an export that had written its output exited 1 (found by a red-team run).
Reports for a closed stream are dropped; ``-i -`` and ``-o -`` refuse it in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from support.small_root import small_root  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[3]


def _run(args: list[str], prepare: Callable[[], None], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ctrconv", *args], cwd=REPO, preexec_fn=prepare,
                          capture_output=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def _close(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


def _read_only_file_on(fd: int) -> Callable[[], None]:
    def prepare() -> None:
        f = os.open("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd", os.O_RDONLY)
        os.dup2(f, fd)
        os.close(f)
    return prepare


def test_a_closed_or_read_only_stderr_does_not_fail_a_written_export(small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    for i, prepare in enumerate((_close(2), _read_only_file_on(2))):
        out = tmp_path / f"x{i}.tar"
        result = subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(small_root), "--all",
                                 "-o", str(out)], cwd=REPO, preexec_fn=prepare, stdout=subprocess.PIPE, timeout=120)
        assert result.returncode == 0
        assert out.stat().st_size > 0


def test_stdin_and_stdout_as_data_refuse_a_closed_stream(small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    exported = _run(["export", "--root", str(small_root), "--all", "-o", "-"], _close(1))
    assert (exported.returncode, exported.stderr) == (2, b"ctrconv: error: -o -: standard output is closed\n")
    imported = _run(["import", "--root", str(tmp_path / "r"), "-i", "-"], _close(0))
    assert (imported.returncode, imported.stderr) == (2, b"ctrconv: error: -i -: standard input is closed\n")
    assert not (tmp_path / "r").exists()


def test_a_listing_to_a_closed_stdout_is_dropped_not_an_internal_error(small_root: Path) -> None:  # noqa: F811
    listed = _run(["ls", "--root", str(small_root)], _close(1))
    assert listed.returncode == 0 and listed.stderr == b""
    listed = _run(["verify", "--root", str(small_root), "-q"], _close(1))
    assert listed.returncode == 0 and b"internal error" not in listed.stderr


def test_a_reader_that_went_away_gives_141_not_verify_s_1(small_root: Path) -> None:  # noqa: F811
    """stdout a pipe whose reader is gone (``| head``): the command stopped with exit 1, which
    ``verify`` means as "problems found", on a clean root by timing alone (found by a red-team
    run). It ends as a shell writer SIGPIPE ends: silently, 141."""
    for args in (["verify", "--root", str(small_root), "-A"], ["export", "--root", str(small_root), "--all", "-o", "-"]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # (gone before the first byte)
        run = subprocess.run([sys.executable, "-m", "ctrconv", *args], stdout=write_end, stderr=subprocess.PIPE,
                             text=True, timeout=300)
        os.close(write_end)
        assert run.returncode == 141 and run.stderr == "", (args, run.returncode, run.stderr)


def test_a_report_lost_after_the_commit_point_still_exits_0(small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    """``import --json | true``: the import was committed, only its report found no reader; it
    exited 141 (a second red-team run), though exit 0 is what says the write is durable."""
    archive = tmp_path / "x.tar"
    subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(small_root), "--all", "-q", "-o",
                    str(archive)], cwd=REPO, check=True, timeout=300)
    read_end, write_end = os.pipe()
    os.close(read_end)
    run = subprocess.run([sys.executable, "-m", "ctrconv", "import", "--root", str(tmp_path / "root"), "-i", str(archive),
                          "--json", "-q"], cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    os.close(write_end)
    assert run.returncode == 0, (run.returncode, run.stderr)
    listed = subprocess.run([sys.executable, "-m", "ctrconv", "ls", "--root", str(tmp_path / "root"), "-q"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert listed.stdout.split()
