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

from support.daemon import StartedService

REGISTRY_BINARY = "docker-registry"


class RegistryError(RuntimeError):
    """The registry binary is missing, did not start, or did not answer in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRegistry(StartedService):
    """Context manager running ``docker-registry serve CONFIG`` on 127.0.0.1:<free port>.

    Attributes:
        host: ``"127.0.0.1:PORT"`` (what goes in front of a repository name).
        url: ``"http://127.0.0.1:PORT"``.
        storage: the registry's filesystem storage root (inside the temp dir).
    """

    def __init__(self, *, workdir: str | os.PathLike[str] | None = None,
                 start_timeout: float = 20.0, users: dict[str, str] | None = None, tls: bool = False,
                 token: dict[str, str] | None = None, access_log: bool = False,
                 tls_names: tuple[str, ...] = ("127.0.0.1",)) -> None:
        """Plain HTTP and anonymous unless asked otherwise:

        * ``users``: htpasswd basic auth (bcrypt hashes, pip ``bcrypt``) for these users;
        * ``tls``: HTTPS with a server certificate for ``tls_names`` (IP addresses or DNS
          names) signed by a CA made with ``openssl`` in the temp dir (:attr:`ca_cert`;
          :attr:`cert_dir` is a ``certs.d`` dir holding ``<host:port>/ca.crt``);
        * ``token``: distribution's ``auth: token`` (keys ``realm``, ``service``, ``issuer``,
          ``rootcertbundle``), for a token server the caller runs;
        * ``access_log``: one line per request in :meth:`access_lines`.
        """
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
        self.users = dict(users or {})
        self.tls = tls
        self.tls_names = tls_names
        self.token = dict(token or {})
        self.access_log = access_log
        self.ca_cert = self._tmp / "ca.crt"
        self.cert_dir = self._tmp / "certs.d"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _write_htpasswd(self) -> Path:
        import bcrypt  # test-only dependency (pyproject ``test`` extra)

        path = self._tmp / "htpasswd"
        path.write_text("".join(
            f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
            for user, password in self.users.items()))
        return path

    def _make_certs(self) -> tuple[Path, Path]:
        """A CA and a server certificate for ``tls_names``, made by ``openssl``."""
        ca_key, key, csr, cert = (self._tmp / n for n in ("ca.key", "server.key", "server.csr", "server.crt"))
        ext = self._tmp / "server.ext"
        sans = ",".join(("IP:" if n.replace(".", "").isdigit() or ":" in n else "DNS:") + n for n in self.tls_names)
        ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth\n")

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(self.ca_cert),
                "-days", "2", "-subj", "/CN=ctrconv test CA")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                "-subj", f"/CN={self.tls_names[0]}")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
                "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return cert, key

    def _write_config(self) -> None:
        text = (
            "version: 0.1\n"
            "log:\n"
            "  level: warn\n"
            "  accesslog:\n"
            f"    disabled: {'false' if self.access_log else 'true'}\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {self.storage}\n"
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f"  addr: {self.host}\n"
        )
        if self.tls:
            cert, key = self._make_certs()
            text += f"  tls:\n    certificate: {cert}\n    key: {key}\n"
            host_dir = self.cert_dir / self.host
            host_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.ca_cert, host_dir / "ca.crt")
        if self.users:
            text += f"auth:\n  htpasswd:\n    realm: ctrconv-test\n    path: {self._write_htpasswd()}\n"
        elif self.token:
            text += "auth:\n  token:\n" + "".join(f"    {k}: {v}\n" for k, v in self.token.items())
        self.config_path.write_text(text)

    def _answers(self) -> bool:
        import ssl

        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never a proxy
        if self.tls:
            ctx = ssl.create_default_context(cafile=str(self.ca_cert))
            ctx.check_hostname = False  # the probe asks "is it up"; a certificate for another name is a test case
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(f"{self.url}/v2/", timeout=2) as resp:
                return resp.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for credentials
        except (urllib.error.URLError, OSError):
            return False

    def access_lines(self) -> list[str]:
        """Request lines (``"METHOD /path HTTP/1.1"``) of the access log so far."""
        import re

        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return re.findall(r'"((?:GET|HEAD|POST|PUT|PATCH|DELETE) [^ "]+) HTTP/[0-9.]+"', text)

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

