"""Ctrl-C and SIGTERM at any moment: never a traceback (from ctrconv or its unpack workers),
and the exit code tells the truth about what was written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile.images import image, member, tar

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SEED = 20261206
TRIALS = int(os.environ.get("CTRCONV_SIGNAL_TRIALS", "8"))


def _ctrconv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctrconv", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=ENV)


def _names(root: Path) -> set[str]:
    if not root.exists():
        return set()
    return set(_ctrconv("ls", "--root", str(root), "-q").stdout.split())


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four layers of many small files: an unpack long enough to be interrupted."""
    rng = random.Random(SEED)
    layers = [tar([member(f"l{i}/d{j // 50}/f{j}", data=rng.randbytes(2048)) for j in range(400)]) for i in range(4)]
    path = tmp_path_factory.mktemp("signals") / "layered.tar"
    path.write_bytes(image(layers, name="docker.io/library/layered:1"))
    return path


def _handlers_installed(pid: int) -> bool:
    """ctrconv's first lines catch SIGTERM (Python alone does not): the point from which a
    signal is ctrconv's to handle."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        return False
    return False


def test_a_signal_during_start_up_gives_one_line_not_a_traceback(layered: Path, tmp_path: Path) -> None:
    """From ctrconv's first line on (before typer, jsonschema and the commands are imported)."""
    rng = random.Random(SEED)
    for trial in range(TRIALS):
        root = tmp_path / f"r{trial}"
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "-i", str(layered),
                                 "-q"], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not _handlers_installed(proc.pid) and proc.poll() is None:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.4))
        signum = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        if proc.returncode == 0:  # it finished first: the import is whole
            assert "imported" in out and _names(root) == {"docker.io/library/layered:1"}
        else:
            assert proc.returncode == 128 + signum, (proc.returncode, err)
            assert err in ("ctrconv: error: interrupted\n", "ctrconv: error: terminated\n",
                           "ctrconv: error: hung up\n"), err
            assert _names(root) == set()


def test_a_signal_after_the_commit_point_finishes_with_the_report(layered: Path, tmp_path: Path) -> None:
    """Delivered right after meta.db is renamed into place (sent from inside the commit step,
    where it is deferred): the import completed, so exit 0 with its report, and one warning."""
    root = tmp_path / "root"
    code = (
        "import os, signal, sys\n"
        "from contextlib import contextmanager\n"
        "from ctrconv import commitpoint\n"
        "real = commitpoint.committing\n"
        "@contextmanager\n"
        "def late():\n"
        "    with real():\n"
        "        yield\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "commitpoint.committing = late\n"
        "import ctrconv.sinks.containerd_root.transaction as t; t.committing = late\n"
        "from ctrconv.entry import main\n"
        "main(sys.argv[1:])\n"
    )
    result = subprocess.run([sys.executable, "-c", code, "import", "--root", str(root), "-i", str(layered), "-q"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "docker.io/library/layered:1: imported" in result.stdout
    assert result.stderr == "ctrconv: warning: interrupted after writing; the command had completed\n"
    assert _names(root) == {"docker.io/library/layered:1"}


def test_parallel_unpack_and_a_process_group_sigint(layered: Path, tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches ctrconv, the forkserver and every worker at once: one line,
    no traceback from any of them, exit 130 and the root as before (or 0 and the image whole
    when the import had finished)."""
    rng = random.Random(SEED + 1)
    for trial in range(TRIALS):
        root = tmp_path / f"r{trial}"
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "-i", str(layered),
                                 "-j", "2", "-q"], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        while not _handlers_installed(proc.pid) and proc.poll() is None:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.2, 1.5))
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        out, err = proc.communicate(timeout=120)
        assert "Traceback" not in err and "internal error" not in err, err
        if proc.returncode == 0:
            assert "imported" in out and _names(root) == {"docker.io/library/layered:1"}
        else:
            assert (proc.returncode, err) == (130, "ctrconv: error: interrupted\n")
            assert _names(root) == set()
        leftovers = [p for p in tmp_path.rglob("*") if ".ctrconv-tmp" in p.name]
        assert not leftovers, leftovers


def test_commits_into_a_scratch_output_are_no_commit_point():
    """``rebuild -o`` imports into its new root under a temporary name: those commits are no
    commit point of the command (an error in the carry-over after them said "what the command
    wrote is in place" while nothing was); the final rename is."""
    from ctrconv import commitpoint

    commitpoint.reset()
    try:
        with commitpoint.into_scratch():
            with commitpoint.committing():
                pass
            assert not commitpoint.passed()
        with commitpoint.committing():
            pass
        assert commitpoint.passed()
    finally:
        commitpoint.reset()


def test_an_error_between_the_commits_of_an_in_place_rebuild_says_to_run_it_again(capsys):
    """A full disk after an in-place rebuild's first commit said "after the commit point: what
    the command wrote is in place", with the root half rebuilt (a red-team run); it says how to
    finish now, for an OSError and a ctrconv error alike."""
    import errno

    from ctrconv import commitpoint
    from ctrconv.errors import FormatError
    from ctrconv.recovery.rebuild import UNFINISHED
    from ctrconv.run.outcome import guarded

    def fails(exc: Exception):
        def invoke() -> int:
            with commitpoint.unfinished(UNFINISHED):
                with commitpoint.committing():
                    pass
                raise exc
        return invoke

    try:
        for exc in (OSError(errno.ENOSPC, "No space left on device", "meta.db"), FormatError("bad page")):
            commitpoint.reset()
            assert guarded(fails(exc), debug=False) == 1
            line = capsys.readouterr().err
            assert line.count("\n") == 1 and UNFINISHED in line and "is in place" not in line, line
        commitpoint.reset()
        assert commitpoint.unfinished_note() is None  # (a next in-process command starts clean)
    finally:
        commitpoint.reset()
