"""Test peers for the registry tests: a bearer token server and a fault-injecting HTTP proxy.

Both are small ``http.server`` servers on 127.0.0.1 in a thread, stopped by the test.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TokenServer(_Server):
    """distribution's token auth: ``GET /token?service=S&scope=...`` -> a JWT signed RS256 with a
    key whose self-signed certificate (made by openssl) is the registry's ``rootcertbundle``.
    Users (basic auth) are checked when given; every scope asked for is granted."""

    service = "ctrconv-test-registry"
    issuer = "ctrconv-test-issuer"

    def __init__(self, workdir: Path, users: dict[str, str] | None = None) -> None:
        self.users = dict(users or {})
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=ctrconv token"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict[str, list[str]]] = []
        super().__init__(_TokenHandler)

    def registry_config(self) -> dict[str, str]:
        return {"realm": f"http://{self.host}/token", "service": self.service, "issuer": self.issuer,
                "rootcertbundle": str(self.cert)}

    def token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 600, "nbf": now - 60,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"


class _TokenHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        server: TokenServer = self.server.owner  # type: ignore[attr-defined]
        query = parse_qs(urlsplit(self.path).query)
        server.requests.append(query)
        user = "anonymous"
        if server.users:
            auth = self.headers.get("Authorization", "")
            try:
                user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
            except Exception:
                user, password = "", ""
            if not auth.startswith("Basic ") or server.users.get(user) != password:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = json.dumps({"token": server.token(user, query.get("scope", [])), "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


#: a proxy policy: (method, path, nth time this method+path is seen) -> action or None
Policy = Callable[[str, str, int], "str | tuple[str, int, str, bytes] | None"]


class FaultProxy(_Server):
    """Forwards every request to ``upstream`` (Host kept, so upload Locations point back here),
    unless ``policy`` says otherwise: ``"503"`` answers 503; ``"drop"`` closes the connection
    without an answer; ``"drop-mid"`` sends the headers and half the body, then closes;
    ``"block"`` sets :attr:`reached` and holds the request until :attr:`release` is set, then
    drops it; ``"hold-mid"`` sends the headers and half the body, sets :attr:`reached` and
    :attr:`holding`, and sends the rest once :attr:`release` is set (at most 120 s later);
    ``"overstated"`` forwards the whole body under a ``Content-Length`` 1000 bytes longer,
    then closes; ``"endless"`` answers 200 with a body that never ends (sent until the client hangs up,
    counted in :attr:`endless_sent`); ``"relative-location"`` forwards and gives the answer's
    ``Location`` as a relative reference (its last path segment and query); ``"padded"``
    forwards the answer with 5 MiB of spaces after its body (a 5 MiB manifest); a tuple
    ``("serve", status, content type, body)`` is answered by the proxy itself.
    :attr:`seen` records ``(method, path)`` of every request."""

    def __init__(self, upstream: str, policy: Policy | None = None, *, ranges: bool = True) -> None:
        self.upstream = upstream
        #: False: requests are forwarded without ``Range`` (a server that always sends it all)
        self.ranges = ranges
        self.policy = policy or (lambda method, path, n: None)
        self.seen: list[tuple[str, str]] = []
        self.counts: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        self.reached = threading.Event()
        self.release = threading.Event()
        #: set while a ``hold-mid`` answer is held half sent
        self.holding = threading.Event()
        #: bytes of ``endless`` answers sent before the client hung up
        self.endless_sent = 0
        super().__init__(_ProxyHandler)

    def close(self) -> None:
        self.release.set()
        super().close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _handle(self) -> None:
        proxy: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        path = urlsplit(self.path).path
        with proxy.lock:
            proxy.seen.append((self.command, path))
            key = (self.command, path)
            proxy.counts[key] = proxy.counts.get(key, 0) + 1
            action = proxy.policy(self.command, path, proxy.counts[key])
        if isinstance(action, tuple):  # ("serve", status, content type, body): answered here
            _, status, content_type, data = action
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        if action == "503":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if action == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if action == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Connection", "close")
            self.end_headers()
            chunk = b" " * (1 << 20)
            try:
                while proxy.endless_sent < (1 << 34):
                    self.wfile.write(chunk)
                    with proxy.lock:
                        proxy.endless_sent += len(chunk)
            except OSError:
                pass
            self.close_connection = True
            return
        if action == "block":
            proxy.reached.set()
            proxy.release.wait(300)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
        dropped = ("connection",) if proxy.ranges else ("connection", "range")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() == "location" and action == "relative-location":
                parts = urlsplit(v)
                v = parts.path.rsplit("/", 1)[-1] + (f"?{parts.query}" if parts.query else "")
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            self.end_headers()
            return
        if action == "padded":
            data += b" " * (5 << 20)  # (JSON whitespace: still the same document)
        # "overstated": the whole body under a Content-Length 1000 bytes longer, then closed
        self.send_header("Content-Length", str(len(data) + (1000 if action == "overstated" else 0)))
        self.end_headers()
        if action == "overstated":
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if action == "hold-mid" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            proxy.holding.set()
            proxy.reached.set()
            proxy.release.wait(120)
            proxy.holding.clear()
            self.wfile.write(data[len(data) // 2:])
            return
        if action == "drop-mid" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815
