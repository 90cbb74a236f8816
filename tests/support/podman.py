"""A private podman for interop tests: do ctrconv's exports load into podman and run there?

Podman is daemonless, so "private" means every path it would use is in a temp directory:
``--root``/``--runroot`` (a short dir: podman allows 50 characters)/``--tmpdir``, the vfs storage driver (no overlay mounts to clean up),
cgroupfs, a file events backend, and ``CONTAINERS_CONF``/``CONTAINERS_REGISTRIES_CONF`` naming
empty files there, so nothing touches /var/lib/containers, /run/containers or the network
(containers run with ``--network none``; images come only from local archives and layouts).

``run`` lowers RLIMIT_NOFILE/NPROC: rootful podman 4.3 raises them to 1048576/4194304 in the
container spec, which fails ("error setting rlimit type 7") where the sandbox lacks
CAP_SYS_RESOURCE; lowering is always allowed and changes nothing the tests check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.daemon import short_socket_dir


class PodmanError(RuntimeError):
    """A podman command failed (the message holds its stderr)."""


def skip_reason() -> str | None:
    """Why podman cannot be used here, or None (only a missing binary or root is a skip)."""
    if shutil.which("podman") is None:
        return "podman is not installed (Debian package podman)"
    if os.geteuid() != 0:
        return "rootful podman with a private root needs root"
    return None


class PrivatePodman:
    """One podman storage in a temp dir; ``podman(...)`` runs the CLI against it."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="podman-", dir=workdir))
        for name in ("storage", "tmp"):
            (self.dir / name).mkdir()
        #: podman refuses a runroot longer than 50 characters: a short dir of its own
        self.runroot = short_socket_dir()
        (self.dir / "containers.conf").write_text("[engine]\n")
        (self.dir / "registries.conf").write_text("unqualified-search-registries = []\n")
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.dir / "containers.conf"),
                    "CONTAINERS_REGISTRIES_CONF": str(self.dir / "registries.conf")}

    def podman(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``podman <global flags> args``; on ``check`` failure raise with its stderr."""
        cmd = ["podman", "--root", str(self.dir / "storage"), "--runroot", str(self.runroot),
               "--tmpdir", str(self.dir / "tmp"), "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
               "--events-backend", "file", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def image_id(self, ref: str) -> str:
        """``sha256:<ID>`` of a stored image (podman's ID is the config digest)."""
        inspected: list[dict[str, Any]] = json.loads(self.podman("image", "inspect", ref).stdout)
        return "sha256:" + inspected[0]["Id"].removeprefix("sha256:")

    def run(self, ref: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman run --rm --network none`` (rlimits lowered, see the module docstring)."""
        return self.podman("run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
                           "--ulimit", "nproc=1024:1024", ref, *command, check=check)

    def close(self) -> None:
        """Remove containers, then the whole temp dir (vfs leaves no mounts)."""
        self.podman("rm", "--all", "--force", check=False)
        for path in (self.dir, self.runroot):
            shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> "PrivatePodman":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePodman]:
    """One private podman storage per test module (skipped only where podman cannot exist)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with PrivatePodman(tmp_path_factory.mktemp("podman")) as instance:
        instance.podman("info")  # a podman that cannot start here is a failure, not a skip
        yield instance
