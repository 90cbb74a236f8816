"""A throwaway OCI distribution registry (Debian ``docker-registry``, CNCF distribution 2.8).

Real nodes get their images by pulling from a registry; the real-node fixture corpus
(``fixtures/build_realnode.py``) pushes offline-built images here with skopeo and lets
containerd pull them over plain HTTP. Each instance has its own ``config.yml`` and storage under
a fresh temp dir (never ``/var/lib/docker-registry``) and listens on ``127.0.0.1`` only, on a
free port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

REGISTRY_BINARY = "docker-registry"


class RegistryError(RuntimeError):
    """The registry binary is missing, did not start, or did not answer in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRegistry:
    """Context manager running ``docker-registry serve CONFIG`` on 127.0.0.1:<free port>.

    Attributes:
        host: ``"127.0.0.1:PORT"`` (what goes in front of a repository name).
        url: ``"http://127.0.0.1:PORT"``.
        storage: the registry's filesystem storage root (inside the temp dir).
    """

    def __init__(self, *, workdir: str | os.PathLike[str] | None = None,
                 start_timeout: float = 20.0) -> None:
        found = shutil.which(REGISTRY_BINARY)
        if found is None:
            raise RegistryError(f"{REGISTRY_BINARY} not found (apt-get install docker-registry)")
        self.binary = Path(found)
        self._tmp = Path(tempfile.mkdtemp(prefix="registry-", dir=workdir))
        self.storage = self._tmp / "storage"
        self.config_path = self._tmp / "config.yml"
        self.log_path = self._tmp / "registry.log"
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _write_config(self) -> None:
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: warn\n"
            "  accesslog:\n"
            "    disabled: true\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {self.storage}\n"
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f"  addr: {self.host}\n"
        )

    def _answers(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        try:
            with opener.open(f"{self.url}/v2/", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> "PrivateRegistry":
        """Start on a free port and wait until ``GET /v2/`` answers 200."""
        if self._proc is not None:
            raise RegistryError("registry already running")
        self.storage.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            self._write_config()
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [str(self.binary), "serve", str(self.config_path)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            deadline = time.monotonic() + self.start_timeout
            while self._proc.poll() is None and time.monotonic() < deadline:
                if self._answers():
                    return self
                time.sleep(0.05)
            if self._proc.poll() is None:
                self.stop()
                raise RegistryError(f"registry did not answer in {self.start_timeout}s:\n"
                                    f"{self.log_tail()}")
            self._proc = None
        raise RegistryError(f"registry exited at start:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL the process group after ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        """Stop and remove config, log and storage."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "PrivateRegistry":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
