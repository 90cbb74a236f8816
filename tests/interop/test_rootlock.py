"""The writers' lock of a root: taken before the root exists, named in refusals, waited for
with ``--wait``, and a failed writer removes only a root it made; ``dump`` of a locked file;
a containerd that starts during a write and waits on the old meta.db inode."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctrconv.containerd import rootlock
from hostile.images import image, member, tar

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
META = ("io.containerd.metadata.v1.bolt", "meta.db")


def _ctrconv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctrconv", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=ENV)


def _holder(path: Path, *, shared: bool = False) -> subprocess.Popen[str]:
    """Another process holding ``path``'s flock until its stdin closes (ready once it prints)."""
    code = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY);"
        f"fcntl.flock(fd, fcntl.{'LOCK_SH' if shared else 'LOCK_EX'}); print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(scope="module")
def small_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lock-input") / "small.tar"
    path.write_bytes(image([tar([member("hello", data=b"hello")])], name="docker.io/library/small:1"))
    return path


def test_a_new_root_is_made_and_locked_by_one_writer(tmp_path: Path) -> None:
    root = tmp_path / "a" / "root"
    with rootlock.write_lock(root) as lock:
        assert lock.created and root.is_dir() and oct(root.stat().st_mode & 0o777) == oct(0o711)
        assert rootlock.holds_write_lock(root)
        fd = os.open(root, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not rootlock.holds_write_lock(root)


def test_a_root_someone_else_wrote_first_is_not_ours_to_remove(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "theirs").write_text("x")
    with rootlock.write_lock(root) as lock:
        assert not lock.created and not lock.was_empty


def test_the_refusal_names_the_ctrconv_holder_and_wait_waits(tmp_path: Path, small_tar: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    holder = _holder(root)
    try:
        refused = _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q")
        assert refused.returncode == 1
        assert f"is locked by pid {holder.pid}" in refused.stderr and "--wait" in refused.stderr
        assert refused.stderr.count("\n") == 1 and not any(root.iterdir())
        timed = _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q", "--wait=0.3")
        assert timed.returncode == 1 and "waited 0.3 s" in timed.stderr
        waiter = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "-i", str(small_tar),
                                   "-q", "--wait"], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        time.sleep(1.0)
        assert waiter.poll() is None, "the writer did not wait (it cannot finish while the lock is held)"
    finally:
        holder.communicate("")
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert "docker.io/library/small:1: imported" in out


def test_holders_are_described_by_what_they_are(tmp_path: Path, small_tar: Path) -> None:
    assert rootlock.Holder(5, "/usr/bin/containerd --config c.toml").describe() == "a running containerd (pid 5)"
    assert rootlock.Holder(7, "ctrconv import --root R").describe() == "ctrconv pid 7 (ctrconv import --root R)"
    root = tmp_path / "root"
    root.mkdir()
    holder = _holder(root)
    try:  # a waiting ``python -m ctrconv`` is shown as the ctrconv command it is
        waiter = subprocess.Popen([sys.executable, "-m", "ctrconv", "import", "--root", str(root), "-i", str(small_tar),
                                   "--wait", "-q"], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # past the exec (it waits for the lock meanwhile)
        assert rootlock._command_of(waiter.pid).startswith("ctrconv import --root ")
    finally:
        holder.communicate("")
    assert waiter.wait(timeout=120) == 0


def test_readers_share_the_lock_and_a_writer_waits_for_them(tmp_path: Path, small_tar: Path) -> None:
    root = tmp_path / "root"
    assert _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q").returncode == 0
    reader = _holder(root, shared=True)
    try:
        assert _ctrconv("ls", "--root", str(root), "-q").stdout == "docker.io/library/small:1\n"
        refused = _ctrconv("import", "--root", str(root), "-i", str(small_tar), "--name", "x:1", "-q")
        assert refused.returncode == 1 and f"pid {reader.pid}" in refused.stderr
    finally:
        reader.communicate("")


def test_a_failed_writer_into_a_new_root_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 64)
    root = tmp_path / "new"
    result = _ctrconv("import", "--root", str(root), "-i", str(bad), "-q")
    assert result.returncode != 0
    assert not root.exists()


def test_a_failed_writer_keeps_a_given_empty_directory(tmp_path: Path, small_tar: Path) -> None:
    """An empty directory given as the root (a mount point, say) stays; only what the writer
    put inside goes."""
    from ctrconv.sinks.containerd_root.transaction import RootTransaction

    root = tmp_path / "mnt"
    root.mkdir()
    with pytest.raises(RuntimeError):
        with RootTransaction(root, ("overlayfs",)):
            raise RuntimeError("fails midway")
    assert root.is_dir() and list(root.iterdir()) == []


def test_a_waiter_on_a_root_its_creator_removed_starts_over(tmp_path: Path) -> None:
    """Creator A fails and removes the root while B waits on the old directory's lock: B finds
    the directory gone, makes a new one and holds that (never a lock on a removed root)."""
    root = tmp_path / "root"
    with rootlock.write_lock(root) as first:
        assert first.created
        old = os.stat(root).st_ino
        code = ("import sys; from ctrconv.containerd.rootlock import waiting, write_lock\n"
                "with waiting(60), write_lock(sys.argv[1]) as l:\n"
                " import os; print(l.created, os.stat(sys.argv[1]).st_ino, flush=True)")
        waiter = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=REPO, env=ENV,
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        os.rmdir(root)  # what a failed creator does, still holding the lock
    out, _ = waiter.communicate(timeout=60)
    created, inode = out.split()
    assert created == "True" and root.is_dir()
    assert int(inode) == os.stat(root).st_ino


def test_dump_refuses_a_locked_file_and_reads_a_copy_with_ignore_lock(tmp_path: Path, small_tar: Path) -> None:
    root = tmp_path / "root"
    assert _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q").returncode == 0
    meta = root.joinpath(*META)
    before = meta.read_bytes()
    holder = _holder(meta)
    try:
        refused = _ctrconv("dump", str(meta))
        assert refused.returncode == 1 and f"locked by pid {holder.pid}" in refused.stderr
        # not containerd: no "stop containerd" (a red-team run: said so of a ctrconv writer)
        assert "stop containerd" not in refused.stderr and "let it finish" in refused.stderr, refused.stderr
        copied = _ctrconv("dump", "--root", str(root), "--ignore-lock", "--json", "-n", "default")
        assert copied.returncode == 0, copied.stderr
        assert json.loads(copied.stdout)["file"] == str(meta)
    finally:
        holder.communicate("")
    assert meta.read_bytes() == before


def test_ls_quiet_prints_names_only(tmp_path: Path, small_tar: Path) -> None:
    root = tmp_path / "root"
    assert _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q").returncode == 0
    assert _ctrconv("import", "--root", str(root), "-i", str(small_tar), "--name", "b:2", "-q").returncode == 0
    result = _ctrconv("ls", "--root", str(root), "-q")
    assert result.returncode == 0 and sorted(result.stdout.split("\n")) == ["", "b:2", "docker.io/library/small:1"]


def test_a_containerd_started_during_a_write_does_not_run_on_the_old_meta_db(
    tmp_path: Path, small_tar: Path, private_containerd, request
) -> None:
    """containerd opens meta.db by path and waits for its flock without a limit. Started while
    ctrconv writes, it holds the inode the commit replaces; ctrconv retires that inode before
    releasing it, so containerd's bolt open fails instead of running (and collecting garbage)
    on the old metadata; started again it sees the new images, whole."""
    from support.daemon import PrivateContainerd
    from support.progress import RecordingProgress

    from ctrconv.api import import_images

    root = tmp_path / "root"
    assert _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q").returncode == 0
    late = PrivateContainerd(root=root, start_timeout=5)
    request.addfinalizer(late.close)  # (stopped also when an assertion fails before the end)
    started: list[bool] = []

    def start_late(stage: str) -> None:
        if stage == "content" and not started:  # the blobs' write: locks held, meta.db not replaced yet
            started.append(True)
            _start_waiting_on_bolt_files(late, root)

    other = tmp_path / "other.tar"
    other.write_bytes(image([tar([member("other", data=b"other" * 1000)])], name="docker.io/library/other:1"))
    report = import_images(str(other), root, progress=RecordingProgress(start_late))
    assert started and report.images[0].status == "added"
    _assert_failed_to_open_a_retired_file(late)
    daemon = private_containerd(root=root)
    names = set(daemon.image_names("default"))
    assert names == {"docker.io/library/small:1", "docker.io/library/other:1"}
    assert all(row.complete and row.unpacked for row in daemon.images_check("default"))


def test_a_containerd_started_during_an_in_place_rebuild_never_runs_on_a_state_before_its_end(
    tmp_path: Path, small_tar: Path, private_containerd, request
) -> None:
    """An in-place rebuild commits several times (the repaired databases, then each re-import).
    It kept the replaced meta.db as a hard link and let its locks go after its first commit: a
    containerd started during it ran on the old metadata, and its GC deleted every blob the
    rebuild wrote (found by a red-team run on 1.6, 1.7 and 2.x). Now every inode named meta.db
    or metadata.db stays locked by the rebuild until its end (probed from another process at
    every stage), the replaced ones are retired, and the backup is a copy."""
    from support.daemon import PrivateContainerd
    from support.progress import RecordingProgress

    from ctrconv.api import rebuild_root

    root = tmp_path / "root"
    assert _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q").returncode == 0
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    manifest = next(doc for doc in (_json_or_none(p) for p in blobs.iterdir())
                    if isinstance(doc, dict) and isinstance(doc.get("layers"), list))
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    layer.chmod(0o644)
    layer.write_bytes(layer.read_bytes()[:100])  # damage: regenerated from its snapshot
    bolt_files = [root.joinpath(*META), root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"]
    late = PrivateContainerd(root=root, start_timeout=5)
    request.addfinalizer(late.close)  # (stopped also when an assertion fails before the end)
    unlocked: list[str] = []

    def at_stage(stage: str) -> None:
        if late._proc is None and stage != "checking content":
            return  # (a healthy root is checked first, before the rebuild takes its locks)
        if late._proc is None:  # its repair begins: the rebuild holds the files it will replace
            _start_waiting_on_bolt_files(late, root)
        for path in bolt_files:
            probe = subprocess.run([sys.executable, "-c", "import fcntl, os, sys\n"
                                    "fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_SH | fcntl.LOCK_NB)",
                                    str(path)], capture_output=True)
            if probe.returncode == 0:
                unlocked.append(f"{path.name} at {stage}")

    progress = RecordingProgress(at_stage)
    report = rebuild_root(root, progress=progress, regenerate_layers=True)
    assert late._proc is not None and len(progress.stages) >= 3, [s.name for s in progress.stages]
    assert not unlocked, unlocked
    assert report.backups and all(os.stat(b).st_nlink == 1 for b in report.backups if b.endswith(tuple("0123456789Z")))
    _assert_failed_to_open_a_retired_file(late)
    daemon = private_containerd(root=root)
    assert set(daemon.image_names("default")) == {"docker.io/library/small:1"}
    assert all(row.complete and row.unpacked for row in daemon.images_check("default"))
    daemon.force_gc()
    daemon.stop()
    daemon.start()  # (what GC collected is gone now)
    assert all(row.complete and row.unpacked for row in daemon.images_check("default"))


def _json_or_none(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except ValueError:
        return None


def _assert_failed_to_open_a_retired_file(daemon) -> None:
    """``daemon``, started while ctrconv wrote, got a retired inode's lock and failed to open it
    ("invalid database") instead of running on a state before the write; it is stopped."""
    deadline = time.monotonic() + 30
    while "invalid database" not in daemon.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "invalid database" in daemon.log_path.read_text(), daemon.log_tail()
    daemon.close()


def _start_waiting_on_bolt_files(daemon, root: Path) -> None:
    """Start ``daemon`` (a PrivateContainerd not started yet) without waiting for it to serve:
    it opens the root's bolt files and waits for their locks, as a containerd started while
    ctrconv writes does."""
    daemon._write_config()
    daemon.state.mkdir(parents=True, exist_ok=True)
    daemon._proc = subprocess.Popen([str(daemon.containerd), "--config", str(daemon.config_path)],
                                    stdout=open(daemon.log_path, "ab"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
    _wait_for_bolt_open(daemon._proc.pid, root)


def _wait_for_bolt_open(pid: int, root: Path) -> None:
    """Until process ``pid`` has meta.db or the snapshotter's metadata.db open: bbolt opens the
    file, then polls for its flock (LOCK_NB every 50 ms, without a limit in containerd)."""
    wanted = {str(root.joinpath(*META)), str(root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db")}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            links = set()
        if links & wanted:
            time.sleep(0.2)  # its first flock attempt has been refused
            return
        time.sleep(0.02)
    raise AssertionError("containerd never opened a bolt file of the root")


def test_a_running_containerd_is_named_and_its_live_meta_db_dumped_from_a_copy(
    tmp_path: Path, small_tar: Path, private_containerd
) -> None:
    root = tmp_path / "root"
    assert _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q").returncode == 0
    daemon = private_containerd(root=root)
    meta = root.joinpath(*META)
    refused = _ctrconv("dump", "--root", str(root))
    assert refused.returncode == 1 and f"is locked by a running containerd (pid {daemon.pid})" in refused.stderr
    copied = _ctrconv("dump", "--root", str(root), "--ignore-lock", "-n", "default")
    assert copied.returncode == 0 and "docker.io/library/small:1" in copied.stdout, copied.stderr
    writer = _ctrconv("import", "--root", str(root), "-i", str(small_tar), "--name", "x:1", "-q")
    assert writer.returncode == 1 and f"a running containerd (pid {daemon.pid})" in writer.stderr
    assert "stop containerd first" in writer.stderr
    # --wait waits for another ctrconv, never for containerd (it held the root meanwhile and took
    # meta.db the moment a restart let it go: the restarted containerd came up without metadata)
    started = time.monotonic()
    waiter = _ctrconv("import", "--root", str(root), "-i", str(small_tar), "--name", "x:1", "-q", "--wait")
    assert waiter.returncode == 1 and f"a running containerd (pid {daemon.pid})" in waiter.stderr
    assert time.monotonic() - started < 30
    assert meta.is_file()


def test_two_readers_that_both_upgrade_with_wait_both_finish(tmp_path: Path) -> None:
    """Export into the root it reads, twice at once: each process holds the shared lock and then
    asks for the exclusive one. With --wait neither may wait for the other's shared hold forever;
    each gets the exclusive lock in turn, and never both at once."""
    root = tmp_path / "root"
    root.mkdir()
    log = tmp_path / "log"
    code = (
        "import os, sys, time\n"
        "from ctrconv.containerd.rootlock import read_lock, write_lock, waiting\n"
        "root, log, mine, other = sys.argv[1:5]\n"
        "with waiting(60.0), read_lock(root):\n"
        "    open(mine, 'w').close()\n"
        "    deadline = time.monotonic() + 30\n"
        "    while not os.path.exists(other) and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    assert os.path.exists(other), 'the other reader never took its shared lock'\n"
        "    with write_lock(root, create=False):\n"
        "        with open(log, 'a') as f: f.write('in\\n')\n"
        "        time.sleep(0.3)\n"
        "        with open(log, 'a') as f: f.write('out\\n')\n"
        "print('done', flush=True)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), str(log), str(tmp_path / f"r{i}"),
                               str(tmp_path / f"r{1 - i}")], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    # the exclusive holds did not overlap: strictly in/out/in/out
    assert log.read_text().split() == ["in", "out", "in", "out"]


def test_two_cross_copies_with_wait_do_not_deadlock(tmp_path: Path, small_tar: Path) -> None:
    """``export --format containerd-root --wait`` A->B and B->A at once, while a reader holds B:
    each copy held its source's shared lock and waited for the other's root forever (a red-team
    run). The two locks are now taken in the order of the roots' paths by every copy."""
    roots = [tmp_path / "A", tmp_path / "B"]
    for root in roots:
        assert _ctrconv("import", "--root", str(root), "-i", str(small_tar), "-q").returncode == 0
    code = ("import fcntl, os, sys\n"
            "fcntl.flock(os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY), fcntl.LOCK_SH)\n"
            "print('held', flush=True); sys.stdin.read()")
    reader = subprocess.Popen([sys.executable, "-c", code, str(roots[1])], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "held"

    def copy(source: Path, target: Path) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "ctrconv", "export", "--root", str(source), "--all",
                                 "-o", str(target), "--format", "containerd-root", "--wait", "-q"],
                                cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = copy(roots[0], roots[1])
    time.sleep(1.5)  # holds A's shared lock, waits for B
    second = copy(roots[1], roots[0])
    time.sleep(1.5)
    reader.communicate("")  # B let go: before the fix, each copy now held what the other waited for
    try:
        outcomes = [p.communicate(timeout=60) for p in (first, second)]
    finally:
        for p in (first, second):
            p.kill()
    assert (first.returncode, second.returncode) == (0, 0), outcomes
