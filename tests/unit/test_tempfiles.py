"""Temp outputs are recorded before a signal can interrupt their creator, and removed after."""

from __future__ import annotations

import os
import signal

import pytest

from ctrconv import tempfiles
from support.small_root import small_root  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _clean_registry():
    tempfiles.remove_leftovers()
    yield
    tempfiles.remove_leftovers()


def test_leftovers_are_removed_and_forgotten_ones_kept(tmp_path):
    fd, kept = tempfiles.temp_file(tmp_path, ".x.", ".tmp")
    os.close(fd)
    final = tmp_path / "x"
    os.replace(kept, final)
    tempfiles.forget(kept)
    fd, lost_file = tempfiles.temp_file(tmp_path, ".y.", ".tmp")
    os.close(fd)
    lost_dir = tempfiles.temp_dir(tmp_path, ".z-")
    (lost_dir / "inner").write_text("x")
    removed = tempfiles.remove_leftovers()
    assert sorted(removed) == sorted([str(lost_file), str(lost_dir)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert tempfiles.remove_leftovers() == []


def test_a_signal_during_creation_is_delivered_after_it_is_recorded(tmp_path):
    """SIGINT raised while the temp file is being created arrives only once it is recorded."""
    seen = []

    def handler(signum, frame):
        seen.append(list(tempfiles._tracked))
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    real_mkstemp = tempfiles.tempfile.mkstemp

    def mkstemp_then_signal(*args, **kwargs):
        result = real_mkstemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # lands inside the deferred section
        return result

    try:
        tempfiles.tempfile.mkstemp = mkstemp_then_signal
        with pytest.raises(KeyboardInterrupt):
            tempfiles.temp_file(tmp_path, ".s.", ".tmp")
    finally:
        tempfiles.tempfile.mkstemp = real_mkstemp
        signal.signal(signal.SIGINT, previous)
    assert len(seen) == 1 and len(seen[0]) == 1, seen
    assert tempfiles.remove_leftovers() == seen[0]
    assert list(tmp_path.iterdir()) == []


def _age(path, seconds: float = 3600) -> None:
    then = os.stat(path).st_mtime - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_temp_whose_process_is_gone_is_removed_by_the_next_one_of_its_name(tmp_path):
    """A process killed outright (SIGKILL, the OOM killer) leaves its temp output: the next temp
    of the same name pattern in that directory removes it, unless someone holds it or it is
    fresh. Another output's temps, and names that only look alike, stay."""
    import subprocess
    import sys

    def made_by_a_dead_process(*how: str) -> str:
        code = ("import sys; from ctrconv import tempfiles as t; d, p, s, kind = sys.argv[1:]\n"
                "print(t.temp_dir(d, p, s) if kind == 'dir' else t.temp_file(d, p, s)[1], flush=True)\n"
                "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
        run = subprocess.run([sys.executable, "-c", code, str(tmp_path), *how], capture_output=True, text=True)
        assert run.returncode == -signal.SIGKILL
        return run.stdout.strip()

    abandoned_file = made_by_a_dead_process(".out.tar.", ".ctrconv-tmp", "file")
    abandoned_dir = made_by_a_dead_process(".out.tar.", ".ctrconv-tmp", "dir")
    os.makedirs(os.path.join(abandoned_dir, "blobs", "sha256"))
    fresh = made_by_a_dead_process(".out.tar.", ".ctrconv-tmp", "file")
    other_output = made_by_a_dead_process(".other.tar.", ".ctrconv-tmp", "file")
    look_alike = tmp_path / ".out.tar.not-a-temp-name.ctrconv-tmp"
    look_alike.write_text("x")
    for path in (abandoned_file, abandoned_dir, other_output, look_alike):
        _age(path)

    held = subprocess.Popen([sys.executable, "-c", (
        "import sys; from ctrconv import tempfiles as t\n"
        "print(t.temp_file(sys.argv[1], '.out.tar.', '.ctrconv-tmp')[1], flush=True); sys.stdin.read()"), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        in_use = held.stdout.readline().strip()
        _age(in_use)
        fd, mine = tempfiles.temp_file(tmp_path, ".out.tar.", ".ctrconv-tmp", sweep=True)
        os.close(fd)
        left = {str(p) for p in tmp_path.iterdir()}
        assert abandoned_file not in left and abandoned_dir not in left
        assert {fresh, other_output, str(look_alike), in_use, str(mine)} <= left
    finally:
        held.stdin.close()
        held.wait()


def test_killed_runs_temp_outputs_go_with_the_next_run_to_that_output(tmp_path, cli, small_root):  # noqa: F811
    """``rebuild -o NEW`` killed outright left ``.NEW.ctrconv-*`` (a whole root) beside NEW, an
    export its whole temp archive ``.OUT.*.ctrconv-tmp`` or staged layout."""
    staging = tmp_path / ".new.ctrconv-k1ll3d00"
    (staging / "io.containerd.content.v1.content").mkdir(parents=True)
    _age(staging)
    result = cli("rebuild", "--root", str(small_root), "-o", str(tmp_path / "new"), "-q")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
    for name in (".out.tar.k1ll3d00.ctrconv-tmp", ".out.tar.k1ll3d01.ctrconv-tmp"):
        (tmp_path / name).mkdir() if name.endswith("1.ctrconv-tmp") else (tmp_path / name).write_bytes(b"x" * 4096)
        _age(tmp_path / name)
    result = cli("export", "--root", str(tmp_path / "new"), "--all", "-q", "-o", str(tmp_path / "out.tar"))
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out.tar"]


def test_a_killed_commit_s_layer_spool_goes_with_the_next_one(tmp_path, cli, realnode_set_for):
    """``commit`` (and an export that makes layers from snapshots) spools the layers it makes
    in ``.ctrconv-layers.*.ctrconv-tmp`` beside the output: one a SIGKILL left (a container's
    writable layer, 0600) stayed for good, each killed run adding one (a red-team run)."""
    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    out = tmp_path / "out"
    out.mkdir()
    abandoned = out / ".ctrconv-layers.k1ll3d00.ctrconv-tmp"
    abandoned.mkdir()
    (abandoned / "layer-1").write_bytes(b"x" * 4096)
    _age(abandoned)
    result = cli("commit", "--root", str(root), "-c", "rn-stopped", "-o", str(out / "c.tar"), "-q")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["c.tar"]
