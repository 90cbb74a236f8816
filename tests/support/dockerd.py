"""A throwaway Docker engine for interop tests: does ``docker load`` accept what ctrconv wrote?

Debian's ``docker.io`` (20.10) runs with its own data root, exec root, pid file, socket and an
empty config file, with no iptables, no bridge and its own managed containerd, so it never touches
a system Docker or containerd. The exec root holds the managed containerd's sockets, so it lives in
a short directory (:func:`support.daemon.short_socket_dir`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.daemon import DaemonError, StartedService, short_socket_dir, terminate


def docker_client() -> str | None:
    """The docker CLI that belongs to Debian's dockerd when present, else any on PATH."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker")


def skip_reason() -> str | None:
    """Why a private dockerd cannot run here, or None."""
    if shutil.which("dockerd") is None or docker_client() is None:
        return "dockerd/docker are not installed (Debian package docker.io)"
    if os.geteuid() != 0:
        return "dockerd needs root"
    return None


class PrivateDockerd(StartedService):
    """Context manager running one dockerd with private state; ``docker(...)`` talks to it."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, start_timeout: float = 60.0, *,
                 dockerd: str | os.PathLike[str] = "dockerd", client: str | os.PathLike[str] | None = None,
                 config: dict[str, object] | None = None, extra_args: tuple[str, ...] = (),
                 path_prefix: tuple[str | os.PathLike[str], ...] = (),
                 storage_driver: str | None = "overlay2") -> None:
        """``dockerd``/``client``: other engine builds (:mod:`support.moby`); ``config``: the
        daemon.json; ``extra_args``: more dockerd flags; ``path_prefix``: dirs put first on the
        engine's PATH (the shim of an external containerd); ``storage_driver`` None for the
        containerd image store (its snapshotter is the default)."""
        self.storage_driver = storage_driver
        self.dockerd_bin = str(dockerd)
        self.client = str(client) if client is not None else None
        self.config = dict(config or {})
        self.extra_args = extra_args
        self._path = os.pathsep.join([*map(str, path_prefix), os.environ.get("PATH", "")])
        self._tmp = Path(tempfile.mkdtemp(prefix="dockerd-", dir=workdir))
        self._short = short_socket_dir()
        self.host = f"unix://{self._short / 'd.sock'}"
        self.log_path = self._tmp / "dockerd.log"
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "PrivateDockerd":
        config = self._tmp / "daemon.json"
        config.write_text(json.dumps(self.config) + "\n")
        cmd = [
            self.dockerd_bin, "--config-file", str(config),
            "--data-root", str(self._tmp / "data"), "--exec-root", str(self._short / "x"),
            "--pidfile", str(self._tmp / "dockerd.pid"), "-H", self.host,
            "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
            *([f"--storage-driver={self.storage_driver}"] if self.storage_driver else []), *self.extra_args,
        ]
        env = {**os.environ, "PATH": self._path}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise DaemonError(f"dockerd exited with {code}:\n{self.log_tail()}")
            if self.docker("version", check=False).returncode == 0:
                return self
            if time.monotonic() > deadline:
                self.close()
                raise DaemonError(f"dockerd did not answer in {self.start_timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; on ``check`` failure raise with its stderr."""
        client = self.client or docker_client()
        assert client is not None
        env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self._tmp / "client")}
        result = subprocess.run([client, *args], capture_output=True, text=True, env=env,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise DaemonError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def stop(self, timeout: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        terminate(proc, timeout)

    def close(self) -> None:
        """Stop, unmount anything the engine left mounted, and remove its directories."""
        self.stop()
        for base in (self._tmp, self._short):
            # mountinfo names resolved paths: a base under a symlinked directory must match too
            prefix = str(Path(base).resolve()) + "/"
            mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                      if line.split()[4].startswith(prefix)]
            for mount in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount], capture_output=True)
            shutil.rmtree(base, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""



@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDockerd]:
    """One private engine per test module that imports this fixture (skipped where none can run)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with PrivateDockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
        yield daemon
