"""Stress: several writers at once, writers beside readers, kill -9 and SIGINT at seeded
random moments; every result judged by ``verify --deep`` and by a real containerd.

What must hold after every trial:

* every writer that exited 0 has its images listed, complete, unpacked and runnable;
* a writer that did not exit 0 was refused in one line naming the holder, or was stopped
  (exit 128+signal, or killed);
* the root exists whenever any writer reported success (never removed by a failing writer);
* ``verify --deep`` finds no problem, and no ``.ctrconv-tmp`` / ``.ctrconv-`` leftovers remain.

Small counts by default (CI, about a minute); ``CTRCONV_STRESS_TRIALS=100`` runs the long mode.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SEED = 20261206
TRIALS = int(os.environ.get("CTRCONV_STRESS_TRIALS", "2"))
INPUTS = ("bbx-oci", "bbx-zstd", "bbx-docker", "bbx-uncompressed")


@dataclass
class Run:
    """One ctrconv process of a trial and how it ended."""

    key: str
    names: list[str]
    proc: subprocess.Popen
    code: int | None = None
    out: str = ""
    err: str = ""

    def finish(self) -> "Run":
        self.out, self.err = self.proc.communicate(timeout=300)
        self.code = self.proc.returncode
        return self


def _start(*args: str, key: str = "", names: list[str] | None = None) -> Run:
    proc = subprocess.Popen([sys.executable, "-m", "ctrconv", *args], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Run(key, names or [], proc)


def _ctrconv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctrconv", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=ENV)


def _writer(fixture_set, root: Path, key: str, *extra: str) -> Run:
    rec = fixture_set.input(key)
    return _start("import", "--root", str(root), "-i", str(fixture_set.file(rec["path"])), "-q", *extra,
                  key=key, names=list(rec["names"]))


def _leftovers(root: Path) -> list[str]:
    found = [str(p) for p in root.rglob("*") if ".ctrconv-tmp" in p.name or p.name.startswith(".ctrconv-")]
    found += [str(p) for p in root.parent.glob(f".{root.name}.ctrconv*")]
    return found


def _judge_writers(root: Path, runs: list[Run]) -> set[str]:
    """Per-writer verdicts (see the module docstring); returns the names that must be there."""
    expected: set[str] = set()
    for run in runs:
        assert "Traceback" not in run.err and "internal error" not in run.err, run.err
        if run.code == 0:
            expected.update(run.names)
            for name in run.names:
                assert name in run.out, (name, run.out)
        elif run.code == 1:
            assert run.err.count("\n") == 1 and "is locked by ctrconv pid " in run.err, run.err
            assert " (ctrconv import --root " in run.err or " (ctrconv ls " in run.err or " (ctrconv verify " in run.err \
                or " (ctrconv export " in run.err, run.err
        else:
            assert run.code in (-signal.SIGKILL, 128 + signal.SIGINT), (run.code, run.err)
    if expected:
        assert root.is_dir(), "a root holding reported images was removed"
    return expected


def _judge_root(root: Path, expected: set[str], *, exact: bool = False) -> None:
    assert not _leftovers(root), _leftovers(root)
    if not root.exists():
        assert not expected
        return
    listed = json.loads(_ctrconv("ls", "--root", str(root), "--json").stdout)["images"]
    names = {i["name"] for i in listed}
    assert expected <= names, f"lost: {expected - names}"
    if exact:
        assert names == expected
    assert all(i["complete"] for i in listed), listed
    deep = _ctrconv("verify", "--root", str(root), "-A", "--deep", "-q")
    assert deep.returncode == 0, deep.stdout + deep.stderr


def _judge_with_containerd(daemon_factory, roots: list[tuple[Path, set[str]]]) -> None:
    """A real containerd on each root: ``ctr images check`` all complete and unpacked, and
    every reported image runs."""
    for root, expected in roots:
        if not expected:
            continue
        daemon = daemon_factory(root=root)
        try:
            rows = {r.ref: r for r in daemon.images_check("default")}
            for name in expected:
                assert rows[name].complete and rows[name].unpacked, rows[name]
            for n, name in enumerate(sorted(expected)):
                run = daemon.ctr("run", "--rm", "--runc-root", str(daemon.runc_root), name, f"stress{n}",
                                 "/bin/busybox", "true", check=False)
                assert run.returncode == 0, (name, run.stderr)
        finally:
            daemon.stop()


def test_three_writers_without_wait(fixture_set, tmp_path: Path, private_containerd) -> None:
    """Without --wait, into a new root (even trials) and an existing one (odd): one wins at a
    time, the others are refused naming it; nothing lost, root kept."""
    template = tmp_path / "template"
    assert _ctrconv("import", "--root", str(template), "-i",
                    str(fixture_set.file(fixture_set.input(INPUTS[3])["path"])), "-q").returncode == 0
    judged = []
    for trial in range(max(2, TRIALS)):
        root = tmp_path / f"t{trial}" / "root"
        before: set[str] = set()
        if trial % 2:
            root.parent.mkdir()
            subprocess.run(["cp", "-a", str(template), str(root)], check=True)
            before = set(fixture_set.input(INPUTS[3])["names"])
        runs = [_writer(fixture_set, root, key) for key in INPUTS[:3]]
        runs = [r.finish() for r in runs]
        assert any(r.code == 0 for r in runs), [r.err for r in runs]
        expected = _judge_writers(root, runs) | before
        _judge_root(root, expected, exact=True)
        judged.append((root, expected))
    _judge_with_containerd(private_containerd, judged[:1])


def test_three_waiting_writers_all_land(fixture_set, tmp_path: Path, private_containerd) -> None:
    """With --wait, on a new root and on an existing one: every writer lands, in some order."""
    template = tmp_path / "template"
    assert _ctrconv("import", "--root", str(template), "-i",
                    str(fixture_set.file(fixture_set.input(INPUTS[3])["path"])), "-q").returncode == 0
    judged = []
    for trial in range(max(2, TRIALS)):
        for kind in [("new", "existing")[trial % 2]]:
            root = tmp_path / f"{kind}{trial}"
            if kind == "existing":
                subprocess.run(["cp", "-a", str(template), str(root)], check=True)  # devices, whiteouts
            runs = [_writer(fixture_set, root, key, "--wait") for key in INPUTS[:3]]
            runs = [r.finish() for r in runs]
            assert [r.code for r in runs] == [0, 0, 0], [r.err for r in runs]
            expected = _judge_writers(root, runs)
            if kind == "existing":
                expected |= set(fixture_set.input(INPUTS[3])["names"])
            _judge_root(root, expected, exact=True)
            judged.append((root, expected))
    _judge_with_containerd(private_containerd, judged[-1:])


def test_writers_beside_readers(fixture_set, tmp_path: Path) -> None:
    """Readers (ls, verify, export) while writers write: each reader either sees a consistent
    root or is refused naming the writer; writers with --wait always land."""
    root = tmp_path / "root"
    assert _ctrconv("import", "--root", str(root), "-i",
                    str(fixture_set.file(fixture_set.input(INPUTS[3])["path"])), "-q").returncode == 0
    base = set(fixture_set.input(INPUTS[3])["names"])
    rng = random.Random(SEED)
    for trial in range(max(1, TRIALS // 2)):
        writers = [_writer(fixture_set, root, key, "--wait", "--name", f"w{trial}-{key}:1") for key in INPUTS[1:3]]
        for w in writers:
            w.names = [f"w{trial}-{w.key}:1"]
        readers: list[Run] = []
        while any(w.proc.poll() is None for w in writers):
            kind = rng.choice(["ls", "verify", "export"])
            if kind == "ls":
                readers.append(_start("ls", "--root", str(root), "--json", key="ls"))
            elif kind == "verify":
                readers.append(_start("verify", "--root", str(root), "-q", key="verify"))
            else:
                out = tmp_path / f"e{trial}-{len(readers)}.tar"
                readers.append(_start("export", "--root", str(root), "--all", "-o", str(out), "-q", key="export"))
            readers[-1].finish()
        runs = [w.finish() for w in writers]
        assert [r.code for r in runs] == [0, 0], [r.err for r in runs]
        base |= _judge_writers(root, runs)
        for reader in readers:
            assert "Traceback" not in reader.err, reader.err
            if reader.code == 0:
                if reader.key == "ls":
                    listed = json.loads(reader.out)["images"]
                    assert all(i["complete"] for i in listed), listed
            else:
                refused = 2 if reader.key == "verify" else 1  # (verify's exit 1 says "problems found")
                assert reader.code == refused and "is locked by ctrconv pid " in reader.err, (reader.key, reader.err)
        _judge_root(root, base, exact=True)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_writers_stopped_at_random_moments(fixture_set, tmp_path: Path, private_containerd, signum: int) -> None:
    """Two waiting writers into a new root, one stopped at a seeded random moment: the other's
    images are whole, the stopped one's are whole or absent, nothing half-visible."""
    rng = random.Random(SEED + signum)
    judged = []
    for trial in range(max(1, TRIALS - 1)):
        root = tmp_path / f"r{trial}" / "root"
        runs = [_writer(fixture_set, root, key, "--wait") for key in INPUTS[:2]]
        victim = rng.choice(runs)
        time.sleep(rng.uniform(0.05, 2.0))
        if victim.proc.poll() is None:
            victim.proc.send_signal(signum)
        runs = [r.finish() for r in runs]
        expected = _judge_writers(root, runs)
        if victim.code != 0:
            assert not set(victim.names) & expected
            assert victim.code == (-signal.SIGKILL if signum == signal.SIGKILL else 128 + signal.SIGINT)
        # a killed writer's leftovers are removed by the next writer (under the lock)
        if signum == signal.SIGKILL and root.exists() and _leftovers(root):
            assert _ctrconv("import", "--root", str(root), "-i",
                            str(fixture_set.file(fixture_set.input(INPUTS[0])["path"])), "-q").returncode == 0
            expected |= set(fixture_set.input(INPUTS[0])["names"])
        _judge_root(root, expected)
        judged.append((root, expected))
    _judge_with_containerd(private_containerd, [j for j in judged if j[1]][:1])
