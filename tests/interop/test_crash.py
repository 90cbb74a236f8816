"""``kill -9`` in the middle of ``ctrconv import``: the root is the old one or the new one.

Seeded random kill points over the measured duration of a full import. After each kill: the
input is unchanged, ``ls`` shows exactly the images before or exactly the images after, nothing
sits in ``ingest/`` or among ``snapshots/<id>`` that containerd would trip over, and (interop) a
real containerd starts on the root and lists the same images.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile.images import image, member, tar
from support.ctrconv_runs import import_args, listed_images, run_ctrconv

REPO = Path(__file__).resolve().parents[2]
SEED = 20231114
KILLS = 4


def _big_image(name: str, rng: random.Random) -> bytes:
    layers = [tar([member(f"data/{i}/{j}", data=rng.randbytes(1 << 20)) for j in range(3)]) for i in range(3)]
    return image(layers, name=name)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = random.Random(SEED)
    base = tmp_path_factory.mktemp("crash-inputs")
    paths = {"old": base / "old.tar", "new": base / "new.tar"}
    paths["old"].write_bytes(image([tar([member("old", data=b"old")])], name="docker.io/library/old:1"))
    paths["new"].write_bytes(_big_image("docker.io/library/new:1", rng))
    return paths


def _check_root(root: Path, old: set, new: set) -> None:
    now = listed_images(root)
    assert now in (old, new), f"root is neither old nor new: {now}"
    ingest = root / "io.containerd.content.v1.content" / "ingest"
    assert not ingest.exists() or not any(ingest.iterdir()), "leftovers in ingest/"
    for name in ("native", "overlayfs"):
        snaps = root / f"io.containerd.snapshotter.v1.{name}" / "snapshots"
        if snaps.is_dir():
            bad = [p.name for p in snaps.iterdir() if not p.name.isdigit()]
            assert not bad, f"non-id entries in {snaps}: {bad}"


def _crash_runs(tmp_path: Path, inputs: dict[str, Path]) -> list[Path]:
    """Import old, then kill an import of new at seeded random points; return the roots."""
    digest = hashlib.sha256(inputs["new"].read_bytes()).hexdigest()
    template = tmp_path / "template"
    run_ctrconv(*import_args(template, inputs["old"]))
    old = listed_images(template)
    full = tmp_path / "full"
    subprocess.run(["cp", "-a", str(template), str(full)], check=True)
    started = time.monotonic()
    run_ctrconv(*import_args(full, inputs["new"]))
    duration = time.monotonic() - started
    new = listed_images(full)
    assert old != new
    rng = random.Random(SEED)
    roots = []
    for i in range(KILLS):
        root = tmp_path / f"kill{i}"
        subprocess.run(["cp", "-a", str(template), str(root)], check=True)
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", *import_args(root, inputs["new"])], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert hashlib.sha256(inputs["new"].read_bytes()).hexdigest() == digest, "input changed"
        _check_root(root, old, new)
        roots.append(root)
    return roots


def test_kill_9_during_import_leaves_old_or_new(tmp_path: Path, inputs: dict[str, Path]) -> None:
    _crash_runs(tmp_path, inputs)


def test_containerd_starts_on_killed_imports(tmp_path: Path, inputs: dict[str, Path], private_containerd) -> None:
    for root in _crash_runs(tmp_path, inputs):
        expected = {name for name, _ in listed_images(root)}
        daemon = private_containerd(root=root)
        try:
            assert set(daemon.image_names("default")) == expected
        finally:
            daemon.stop()


def test_kill_9_during_export_leaves_no_or_complete_output(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """The source root is untouched; the output tar is absent or complete (``verify -i`` passes)."""
    root = tmp_path / "root"
    run_ctrconv(*import_args(root, inputs["new"]))
    before = listed_images(root)
    args = ["export", "--root", str(root), "-q", "docker.io/library/new:1", "--format", "oci-tar"]
    started = time.monotonic()
    run_ctrconv(*args, "-o", str(tmp_path / "full.tar"))
    duration = time.monotonic() - started
    rng = random.Random(SEED + 1)
    for i in range(KILLS):
        out_dir = tmp_path / f"out{i}"
        out_dir.mkdir()
        out = out_dir / "image.tar"
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", *args, "-o", str(out)], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert listed_images(root) == before
        if out.exists():
            run_ctrconv("verify", "-i", str(out))
        leftovers = [p.name for p in out_dir.iterdir() if p != out]
        assert all(name.startswith(".") for name in leftovers), f"visible partial files: {leftovers}"


def test_kill_9_during_rebuild_then_rebuild_again(tmp_path: Path, fixture_set, private_containerd) -> None:
    """An interrupted in-place rebuild never leaves a half-written bolt file: meta.db is the
    damaged original or a whole, valid new file with the original kept as a backup; running
    rebuild again completes, and containerd accepts the result."""
    from ctrconv.bolt.check import check_bolt
    from support.damage import META, meta_leaf_zeroed, snapshot_dir_deleted

    template = tmp_path / "template"
    subprocess.run(["cp", "-a", str(fixture_set.root), str(template)], check=True)
    meta_leaf_zeroed(template, fixture_set)
    snapshot_dir_deleted(template, fixture_set)
    full = tmp_path / "full"
    subprocess.run(["cp", "-a", str(template), str(full)], check=True)
    started = time.monotonic()
    run_ctrconv("rebuild", "--root", str(full), "-q")
    duration = time.monotonic() - started
    expected = listed_images(full)
    rng = random.Random(SEED + 2)
    for i in range(3):
        root = tmp_path / f"rebuild{i}"
        subprocess.run(["cp", "-a", str(template), str(root)], check=True)
        proc = subprocess.Popen([sys.executable, "-m", "ctrconv", "rebuild", "--root", str(root), "-q"], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        meta = root.joinpath(*META)
        original = template.joinpath(*META).read_bytes()
        if meta.read_bytes() != original:
            assert check_bolt(str(meta)) == [], "meta.db replaced by a broken file"
            backups = list(meta.parent.glob("meta.db.bak-*"))
            assert backups and backups[0].read_bytes() == original
        run_ctrconv("rebuild", "--root", str(root), "-q")
        assert run_ctrconv("verify", "--root", str(root), "-A", "-q").returncode == 0
        assert listed_images(root) == expected
    daemon = private_containerd(root=root)
    rows = daemon.images_check("default")
    assert all(r.complete and r.unpacked for r in rows), rows


def _default_signals() -> None:
    """The child starts with the dispositions a terminal gives a command: a suite run as a
    background job (SIGINT ignored) or under nohup (SIGHUP ignored) would pass those on, and
    ctrconv keeps a signal its parent ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _stop_midway(args: list[str], signum: int, ready: "callable") -> subprocess.CompletedProcess[str]:
    """Start ctrconv, wait until ``ready()`` says it is mid-work, send ``signum``."""
    proc = subprocess.Popen([sys.executable, "-m", "ctrconv", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_signals,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail("the command finished before it could be stopped")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_import_cleans_up_and_says_so(signum, inputs, tmp_path):
    """Ctrl-C, SIGTERM or SIGHUP (the terminal went away) mid-import: exit 128+signum, one
    line, the old root, no temp dirs."""
    root = tmp_path / "root"
    run_ctrconv(*import_args(root, inputs["old"]))
    old = listed_images(root)
    content = root / "io.containerd.content.v1.content"
    result = _stop_midway(import_args(root, inputs["new"]), signum,
                          lambda: any(p.name.startswith(".ctrconv-tmp") for p in content.iterdir()))
    assert result.returncode == 128 + signum, result.stderr
    assert result.stderr.strip() in ("ctrconv: error: interrupted", "ctrconv: error: terminated",
                                     "ctrconv: error: hung up"), result.stderr
    assert listed_images(root) == old
    leftovers = [p for p in root.rglob("*") if ".ctrconv-tmp" in p.name]
    assert not leftovers, leftovers


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_export_leaves_no_file(signum, inputs, tmp_path):
    root = tmp_path / "root"
    run_ctrconv(*import_args(root, inputs["new"]))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _stop_midway(["export", "--root", str(root), "--all", "-o", str(out_dir / "x.tar"), "-q"], signum,
                          lambda: any(out_dir.iterdir()))
    assert result.returncode == 128 + signum, result.stderr
    assert "ctrconv: error:" in result.stderr and "Traceback" not in result.stderr
    assert list(out_dir.iterdir()) == []
