"""``-o`` onto things that are not plain files: a device, a FIFO, a socket, a symlink,
``/dev/stdout``. The node keeps its type; a stream gets the whole tar or a one-line refusal."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hostile.images import image, member, tar

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
NAME = "docker.io/library/small:1"


def _ctrconv(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctrconv", *args], cwd=REPO, capture_output=True, timeout=120,
                          env=ENV, **kw)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("outputs")
    archive = base / "small.tar"
    archive.write_bytes(image([tar([member("hello", data=b"hello" * 100)])], name=NAME))
    root = base / "root"
    assert _ctrconv("import", "--root", str(root), "-i", str(archive), "-q").returncode == 0
    return root


def _reference_tar(root: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "ref.tar"
    assert _ctrconv("export", "--root", str(root), NAME, "-o", str(out), "-q").returncode == 0
    return out.read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
@pytest.mark.parametrize("fmt", ["oci-tar", "docker-archive", None])
def test_a_device_node_is_written_through_and_stays_a_device(root: Path, tmp_path: Path, fmt: str | None) -> None:
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    args = ["export", "--root", str(root), NAME, "-o", str(null), "-q"] + (["--format", fmt] if fmt else [])
    result = _ctrconv(*args)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_full_device_fails_in_one_line_and_stays_a_device(root: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # a private /dev/full
    result = _ctrconv("export", "--root", str(root), NAME, "-o", str(full))
    assert result.returncode == 1 and result.stderr.decode().count("\n") == 1
    assert b"Traceback" not in result.stderr
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_a_fifo_reader_gets_the_whole_tar(root: Path, tmp_path: Path) -> None:
    expected = _reference_tar(root, tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = _ctrconv("export", "--root", str(root), NAME, "-o", str(fifo), "-q")
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert got == [expected]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("fmt", ["oci-dir", "containerd-root"])
def test_a_directory_format_onto_a_fifo_is_refused(root: Path, tmp_path: Path, fmt: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = _ctrconv("export", "--root", str(root), NAME, "-o", str(fifo), "--format", fmt)
    assert result.returncode == 2 and b"is a FIFO" in result.stderr and result.stderr.count(b"\n") == 1
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_socket_is_refused(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        result = _ctrconv("export", "--root", str(root), NAME, "-o", str(path))
        assert result.returncode == 2 and b"is a socket" in result.stderr
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_symlink_is_resolved_and_its_target_written(root: Path, tmp_path: Path) -> None:
    expected = _reference_tar(root, tmp_path)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "image.tar"
    target.write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(target)
    result = _ctrconv("export", "--root", str(root), NAME, "-o", str(link), "-q")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == expected
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "real" / "new.tar")
    assert _ctrconv("export", "--root", str(root), NAME, "-o", str(dangling), "-q").returncode == 0
    assert dangling.is_symlink() and (tmp_path / "real" / "new.tar").read_bytes() == expected


def test_a_symlinked_root_is_written_where_it_points(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "rootlink"
    link.symlink_to(tmp_path / "newroot")
    result = _ctrconv("export", "--root", str(root), NAME, "-o", str(link), "--format", "containerd-root", "-q")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and (tmp_path / "newroot" / "io.containerd.metadata.v1.bolt" / "meta.db").is_file()


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_dev_stdout_is_like_dash(root: Path, tmp_path: Path, name: str) -> None:
    expected = _reference_tar(root, tmp_path)
    with open(tmp_path / "out", "wb") as out:
        result = subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(root), NAME, "-o", name],
                                cwd=REPO, stdout=out, stderr=subprocess.PIPE, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == expected
    assert _ctrconv("export", "--root", str(root), NAME, "-o", name, "--json").returncode == 2
