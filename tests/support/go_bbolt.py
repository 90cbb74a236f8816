"""Build and run the Go oracles of tests/go/ (boltcheck: bbolt; tarheader: archive/tar) for interop tests.

The binary is built once per source hash into ``.cache/go/`` of the repository (GOPATH mode
against Debian's golang-github-coreos-bbolt-dev, bbolt 1.3.6), so reruns cost nothing. Tests
are skipped only when ``go`` itself is missing; a build failure is a test failure.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GO_SOURCES = REPO / "tests" / "go"
CACHE_DIR = REPO / ".cache" / "go"
GOPATH = "/usr/share/gocode"
TIMEOUT = 300


class GoToolError(AssertionError):
    """The Go oracle failed to run, or found problems where none were expected."""


def _source_hash(go: str, source_dir: Path) -> str:
    digest = hashlib.sha256()
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest.update(version.encode())
    for path in sorted(source_dir.rglob("*.go")):
        digest.update(path.relative_to(source_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _build(program: str = "boltcheck") -> Path:
    """``tests/go/<program>`` built once per source hash (a build failure raises GoToolError)."""
    source_dir = GO_SOURCES / program
    go = shutil.which("go")
    if go is None:
        raise _GoMissing
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    binary = CACHE_DIR / f"{program}-{_source_hash(go, source_dir)}"
    if binary.exists():
        return binary
    env = dict(
        os.environ,
        GO111MODULE="off",
        GOPATH=GOPATH,
        GOCACHE=str(CACHE_DIR / "gocache"),
        GOFLAGS="",
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{program}-", dir=CACHE_DIR)
    os.close(fd)
    try:
        result = subprocess.run(
            [go, "build", "-o", tmp, "."],
            cwd=source_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        if result.returncode != 0:
            raise GoToolError(f"building {program} failed:\n{result.stdout}{result.stderr}")
        os.replace(tmp, binary)  # atomic: concurrent test runs never see a half-written binary
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for stale in CACHE_DIR.glob(f"{program}-*"):
        if stale != binary:
            stale.unlink(missing_ok=True)
    return binary


class _GoMissing(Exception):
    pass


def go_tool(program: str = "boltcheck") -> Path:
    """Path of the built oracle ``tests/go/<program>``; ``pytest.skip`` if Go is not installed."""
    try:
        return _build(program)
    except _GoMissing:
        pytest.skip("go is not installed")


def _run(
    *args: str | os.PathLike[str] | int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(go_tool()), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=dict(os.environ, **env) if env else None,
    )


def go_dump(path: str | os.PathLike[str]) -> dict:
    """The whole tree as Go sees it, in ``BucketTree.to_plain()`` form."""
    result = _run("dump", path)
    if result.returncode != 0:
        raise GoToolError(f"boltcheck dump {path}: exit {result.returncode}\n{result.stderr}")
    return json.loads(result.stdout)


def go_check(path: str | os.PathLike[str]) -> list[str]:
    """Problems reported by Go's ``tx.Check`` (panics included); empty when clean."""
    result = _run("check", path)
    if result.returncode == 0:
        return []
    if result.returncode == 1:
        lines = result.stdout.splitlines()
        return lines or [result.stderr.strip()]
    raise GoToolError(f"boltcheck check {path}: exit {result.returncode}\n{result.stderr}")


def go_mutate(
    path: str | os.PathLike[str], seed: int, n: int, *, no_freelist_sync: bool = False
) -> None:
    """Run ``n`` random Go read-write transactions, then Check and compare with a model.

    ``no_freelist_sync`` opens the file the way containerd 1.7+ opens meta.db.

    Raises:
        GoToolError: with Go's output, if anything went wrong.
    """
    env = {"BOLTCHECK_NO_FREELIST_SYNC": "1" if no_freelist_sync else "0"}
    result = _run("mutate", path, seed, n, env=env)
    if result.returncode != 0:
        raise GoToolError(
            f"boltcheck mutate {path} {seed} {n}: exit {result.returncode}\n"
            f"{result.stdout}{result.stderr}"
        )


def go_init(path: str | os.PathLike[str], page_size: int) -> None:
    """Let Go create a fresh empty database (bbolt's ``db.init``)."""
    result = _run("init", path, page_size)
    if result.returncode != 0:
        raise GoToolError(f"boltcheck init {path}: exit {result.returncode}\n{result.stderr}")


def go_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], page_size: int) -> None:
    """Replay ``src`` into a new ``dst`` through ordinary Go transactions (a Go-made twin)."""
    result = _run("copy", src, dst, page_size)
    if result.returncode != 0:
        raise GoToolError(f"boltcheck copy {src}: exit {result.returncode}\n{result.stderr}")
