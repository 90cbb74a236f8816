"""The distribution protocol's transport: one registry host, over ``http.client`` and ``ssl``.

What it does for every request:

* **TLS** with the system CAs plus a private CA: ``--ca-file``, or a certs directory as
  docker, podman/skopeo and containerd keep them (``<dir>/<host:port>/`` with ``*.crt`` CAs,
  ``*.cert``/``*.key`` client pairs, and containerd's ``ca.crt`` / ``hosts.toml`` ``ca``,
  ``client``, ``skip_verify``); default dirs ``/etc/containers/certs.d``,
  ``/etc/docker/certs.d``, ``/etc/containerd/certs.d``. ``tls_verify=False`` skips
  verification and, as containers/image does for an insecure registry, falls back to plain
  HTTP when the server does not speak TLS; ``plain_http`` talks HTTP from the start.
* **Auth** from the server's ``WWW-Authenticate`` challenge: ``Basic`` sends the credentials;
  ``Bearer`` gets a token from the realm for the request's scopes
  (``repository:<repo>:pull[,push]``, plus ``repository:<source>:pull`` for a cross-repository
  mount), with the credentials as basic auth when there are any, anonymously otherwise.
  Tokens are cached per scope set until they expire. Nothing secret is ever put in a message.
* **Retries** with exponential back-off (``Retry-After`` honoured, capped) on 429, 5xx and
  on connections dropped or timed out mid-request; a refused connection or an unknown host
  fails at once (the registry is down, not flaky). Bodies are bytes, so a retry resends them.
* **Redirects** (blob downloads served from storage elsewhere) are followed for GET and HEAD,
  without the registry's ``Authorization`` when they leave its host.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlencode, urljoin, urlsplit

from ctrconv.errors import CtrconvError, UsageError
from ctrconv.registry.credentials import Credentials, find_credentials

#: certs dirs searched for ``<host:port>/`` when ``--cert-dir`` is not given
DEFAULT_CERT_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d", "/etc/containerd/certs.d")
#: a request body: bytes (resent on a retry) or an iterator of chunks (sent once)
Body = "bytes | Iterable[bytes] | None"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 10.0
USER_AGENT = "ctrconv"


class RegistryError(CtrconvError):
    """The registry refused or failed a request, or could not be reached (exit 1)."""


class RegistryAuthError(RegistryError):
    """Credentials missing, wrong, or not allowed to do this."""


class StreamInterrupted(RegistryError):
    """A request whose body was streamed (it cannot be sent again) failed in a way that a new
    attempt may fix: a dropped connection, a 5xx or 429 answer, an expired token. The caller
    starts that transfer over."""


@dataclass
class RegistryOptions:
    """How to reach registries: credentials, TLS and retry settings (skopeo's options)."""

    creds: str | None = field(default=None, repr=False)
    authfile: str | None = None
    ca_file: str | None = None
    cert_dir: str | None = None
    tls_verify: bool = True
    plain_http: bool = False
    #: attempts after the first, for 5xx/429 answers and dropped connections
    retries: int = 5
    #: first back-off in seconds, doubled each retry (capped at 10 s)
    backoff: float = 0.5
    timeout: float = 60.0
    #: blobs up to this size are uploaded in one PUT, larger ones in PATCH chunks
    chunk_threshold: int = 16 << 20
    #: None: a larger blob goes in one streamed PATCH; a size: in PATCH chunks of that size
    chunk_size: int | None = None
    #: blobs transferred side by side (push)
    jobs: int = 1
    #: sleep function (tests replace it; never used to assert on time)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


@dataclass
class Response:
    """A finished response (body read) or, with ``stream=True``, one still open."""

    status: int
    headers: Message
    body: bytes = b""
    url: str = ""
    raw: http.client.HTTPResponse | None = None
    conn: http.client.HTTPConnection | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
        if self.conn is not None:
            self.conn.close()
        self.raw = self.conn = None


def _is_loopback(host: str) -> bool:
    name = host[1:host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            value = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(rest[i])
                i += 1
            i += 1
            params[key] = "".join(value)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return scheme.lower(), params


def registry_message(status: int, body: bytes) -> str:
    """The registry's own words for a failed request (``errors[].code: message``)."""
    try:
        doc = json.loads(body[:65536] or b"{}")
    except ValueError:
        doc = None
    parts = []
    if isinstance(doc, dict):
        for err in doc.get("errors") or []:
            if isinstance(err, dict):
                code, message = err.get("code"), err.get("message")
                parts.append(": ".join(str(x) for x in (code, message) if x))
    reason = http.client.responses.get(status, "")
    text = "; ".join(p for p in parts if p)
    return f"HTTP {status} {reason}".strip() + (f" ({text[:300]})" if text else "")


def cert_directories(host: str, cert_dir: str | None) -> list[Path]:
    """Where this host's CA and client certificates may be (existing dirs only)."""
    if cert_dir:
        base = Path(cert_dir)
        if not base.is_dir():
            raise UsageError(f"--cert-dir {cert_dir}: not a directory")
        per_host = base / host
        return [per_host] if per_host.is_dir() else [base]
    return [Path(d) / host for d in DEFAULT_CERT_DIRS if (Path(d) / host).is_dir()]


def _hosts_toml(directory: Path, host: str) -> dict[str, Any]:
    """containerd's ``hosts.toml``: top-level and ``[host."https://<host>"]`` settings."""
    path = directory / "hosts.toml"
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10: no TOML reader in the standard library
        return {}
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    settings = {k: doc[k] for k in ("ca", "client", "skip_verify") if k in doc}
    for url, entry in (doc.get("host") or {}).items():
        if isinstance(entry, dict) and urlsplit(url).netloc == host:
            settings.update({k: entry[k] for k in ("ca", "client", "skip_verify") if k in entry})
    return settings


def _resolve(directory: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else directory / path


def ssl_context(host: str, options: RegistryOptions) -> ssl.SSLContext:
    """The TLS settings for ``host``: system CAs, ``--ca-file``, its certs directory."""
    ctx = ssl.create_default_context()
    verify = options.tls_verify
    try:
        if options.ca_file:
            ctx.load_verify_locations(cafile=options.ca_file)
        for directory in cert_directories(host, options.cert_dir):
            for ca in sorted(directory.glob("*.crt")):
                ctx.load_verify_locations(cafile=str(ca))
            for cert in sorted(directory.glob("*.cert")):
                key = cert.with_suffix(".key")
                if not key.is_file():
                    raise UsageError(f"{cert}: client certificate without its key {key.name}")
                ctx.load_cert_chain(str(cert), str(key))
            toml = _hosts_toml(directory, host)
            cas = toml.get("ca")
            for ca in [cas] if isinstance(cas, str) else cas or []:
                ctx.load_verify_locations(cafile=str(_resolve(directory, ca)))
            clients = toml.get("client")
            for pair in [clients] if isinstance(clients, str) else clients or []:
                if isinstance(pair, str):
                    ctx.load_cert_chain(str(_resolve(directory, pair)))
                else:
                    ctx.load_cert_chain(str(_resolve(directory, pair[0])), str(_resolve(directory, pair[1])))
            if toml.get("skip_verify") is True:
                verify = False
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS certificates for {host}: {getattr(exc, 'strerror', None) or exc}") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


_DROPPED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected,
            http.client.IncompleteRead, http.client.BadStatusLine, socket.timeout, TimeoutError, ssl.SSLEOFError)


def is_dropped(exc: BaseException) -> bool:
    """A connection that broke mid-request (worth a retry), as opposed to one never made."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, _DROPPED) or (isinstance(exc, http.client.HTTPException) and not isinstance(exc, http.client.InvalidURL))


class RegistryClient:
    """Requests to one registry host (thread-safe: one kept-alive connection per thread)."""

    def __init__(self, domain: str, api_host: str, repository: str, options: RegistryOptions) -> None:
        self.domain = domain
        self.host = api_host
        self.options = options
        self.scheme = "http" if options.plain_http else "https"
        self._scheme_settled = options.plain_http
        self._ctx: ssl.SSLContext | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self.credentials: Credentials | None = find_credentials(
            domain, repository, creds=options.creds, authfile=options.authfile)
        #: what was sent, for reports and tests: (method, path) of every request made
        self.log: list[tuple[str, str]] = []
        self._active: set[http.client.HTTPConnection] = set()
        self._aborted = threading.Event()

    # -- connections ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = ssl_context(self.host, self.options)
        return self._ctx

    def _new_connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        timeout = self.options.timeout
        if scheme == "https":
            ctx = self._context() if netloc == self.host else ssl_context(netloc, self.options)
            return http.client.HTTPSConnection(netloc, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(netloc, timeout=timeout)

    def _pooled(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "scheme", None) != self.scheme:
            conn = self._new_connection(self.scheme, self.host)
            self._local.conn, self._local.scheme = conn, self.scheme
        return conn

    def _drop_pooled(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def close(self) -> None:
        self._drop_pooled()

    def abort(self) -> None:
        """Stop every request in flight, in any thread, and refuse new ones (a push that is
        interrupted does not wait for its other transfers)."""
        self._aborted.set()
        with self._lock:
            active = list(self._active)
        for conn in active:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _check_aborted(self) -> None:
        if self._aborted.is_set():
            raise RegistryError(f"{self.domain}: transfer stopped")

    # -- auth -----------------------------------------------------------------------------

    def _basic(self) -> str:
        assert self.credentials is not None
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _who(self) -> str:
        return f" as {self.credentials.username}" if self.credentials else " (anonymous: no credentials found; use --creds or --authfile)"

    def _authorization(self, scopes: tuple[str, ...], *, refresh: bool = False) -> str | None:
        """The ``Authorization`` value for these scopes under the known challenge, if any."""
        challenge = self._challenge
        if challenge is None:
            return None
        scheme, params = challenge
        if scheme == "basic":
            if self.credentials is None:
                raise RegistryAuthError(f"{self.domain} requires a user name and password (use --creds or --authfile)")
            return self._basic()
        if scheme == "bearer":
            return "Bearer " + self._token(params, scopes, refresh)
        raise RegistryAuthError(f"{self.domain} asks for unsupported authentication {scheme!r}")

    def _token(self, params: Mapping[str, str], scopes: tuple[str, ...], refresh: bool) -> str:
        key = tuple(sorted(scopes))
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and not refresh and cached[1] > time.monotonic():
                return cached[0]
        realm = params.get("realm")
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryAuthError(f"{self.domain}: bearer challenge without a usable realm")
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {"Accept": "application/json"}
        if self.credentials is not None:
            headers["Authorization"] = self._basic()
        resp = self._send_retrying("GET", url, headers, None, auth=False)
        if resp.status in (401, 403):
            raise RegistryAuthError(f"{self.domain}: the token server refused the credentials{self._who()} ({registry_message(resp.status, resp.body)})")
        if resp.status != 200:
            raise RegistryAuthError(f"{self.domain}: token server answered {registry_message(resp.status, resp.body)}")
        try:
            doc = json.loads(resp.body)
            token = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, 0.0
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"{self.domain}: the token server answered without a token")
        with self._lock:
            # renewed a little early: a token must not expire between two requests of one blob
            self._tokens[key] = (token, time.monotonic() + max(lifetime - 10.0, 1.0))
        return token

    # -- requests -------------------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: str | None) -> None:
        self._check_aborted()
        delay = min(self.options.backoff * (2 ** attempt), MAX_BACKOFF)
        if retry_after and retry_after.isdigit():
            delay = min(float(retry_after), MAX_BACKOFF)
        self.options.sleep(delay)

    def _settle_scheme(self, exc: BaseException) -> bool:
        """HTTPS failed at the handshake: an insecure or loopback registry may be plain HTTP."""
        if self._scheme_settled or self.scheme != "https":
            return False
        if isinstance(exc, ssl.SSLCertVerificationError):
            return False
        if isinstance(exc, ssl.SSLError) and (not self.options.tls_verify or _is_loopback(self.host)):
            self.scheme = "http"
            self._scheme_settled = True
            self._drop_pooled()
            return True
        return False

    def _once(self, method: str, url: str, headers: Mapping[str, str], body: "Body",
              stream: bool) -> Response:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        own = parts.netloc == self.host and parts.scheme == self.scheme
        self._check_aborted()
        conn = self._pooled() if own and not stream else self._new_connection(parts.scheme, parts.netloc)
        if not stream:
            with self._lock:
                self._active.add(conn)
        try:
            conn.request(method, path, body=body, headers={"User-Agent": USER_AGENT, **headers})
            raw = conn.getresponse()
            if stream and raw.status in (200, 206):
                return Response(raw.status, raw.msg, url=url, raw=raw, conn=conn)
            data = raw.read()  # b"" for HEAD, and the connection is free again
            if raw.will_close or not own or stream:
                conn.close()
            return Response(raw.status, raw.msg, data, url=url)
        except BaseException:
            conn.close()
            if own and not stream:
                self._local.conn = None
            self._check_aborted()
            raise
        finally:
            with self._lock:
                self._active.discard(conn)

    def _send_retrying(self, method: str, url: str, headers: Mapping[str, str], body: "Body", *,
                       auth: bool = True, stream: bool = False) -> Response:
        if not isinstance(body, (bytes, type(None))):
            return self._send_streamed(method, url, headers, body)
        attempt = 0
        while True:
            try:
                resp = self._once(method, url, headers, body, stream)
            except ssl.SSLCertVerificationError as exc:
                raise RegistryError(f"{urlsplit(url).netloc}: TLS certificate not trusted: {exc.verify_message or exc.reason}"
                                    ) from None
            except ssl.SSLError as exc:
                if auth and self._settle_scheme(exc):
                    url = self.base_url + url.split(urlsplit(url).netloc, 1)[1]
                    continue
                if attempt < self.options.retries and is_dropped(exc):
                    self._backoff(attempt, None)
                    attempt += 1
                    continue
                raise RegistryError(f"{urlsplit(url).netloc}: TLS error: {exc.reason or exc}") from None
            except (ConnectionRefusedError, socket.gaierror) as exc:
                raise RegistryError(f"cannot reach {urlsplit(url).netloc}: {exc.strerror or exc}") from None
            except OSError as exc:
                if attempt < self.options.retries and is_dropped(exc):
                    self._backoff(attempt, None)
                    attempt += 1
                    continue
                raise RegistryError(f"{urlsplit(url).netloc}: connection failed: {exc.strerror or exc}") from None
            except http.client.HTTPException as exc:
                if attempt < self.options.retries:
                    self._backoff(attempt, None)
                    attempt += 1
                    continue
                raise RegistryError(f"{urlsplit(url).netloc}: connection dropped: {type(exc).__name__}") from None
            if resp.status in RETRY_STATUS and attempt < self.options.retries:
                retry_after = resp.header("Retry-After")
                resp.close()
                self._backoff(attempt, retry_after)
                attempt += 1
                continue
            return resp

    def _send_streamed(self, method: str, url: str, headers: Mapping[str, str], body: Iterable[bytes]) -> Response:
        """One attempt of a request whose body is an iterator of chunks: never resent here."""
        netloc = urlsplit(url).netloc
        try:
            resp = self._once(method, url, headers, body, False)
        except ssl.SSLCertVerificationError as exc:
            raise RegistryError(f"{netloc}: TLS certificate not trusted: {exc.verify_message or exc.reason}") from None
        except (ConnectionRefusedError, socket.gaierror) as exc:
            raise RegistryError(f"cannot reach {netloc}: {exc.strerror or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            if is_dropped(exc):
                raise StreamInterrupted(f"{netloc}: connection dropped during {method}: {type(exc).__name__}") from None
            raise RegistryError(f"{netloc}: {method} failed: {exc}") from None
        if resp.status in RETRY_STATUS:
            raise StreamInterrupted(f"{netloc}: {method}: {registry_message(resp.status, resp.body)}")
        return resp

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    def request(
        self, method: str, path: str, *, scopes: Iterable[str], headers: Mapping[str, str] | None = None,
        body: "Body" = None, stream: bool = False,
    ) -> Response:
        """Send one request (retried, authenticated, redirects followed for GET/HEAD).

        ``path`` is ``/v2/...`` on this registry or an absolute URL it gave (an upload
        ``Location``). Returns whatever status the registry ends with; callers judge it.
        ``body`` as bytes is resent as needed; as an iterator of chunks (a streamed upload,
        with its ``Content-Length`` header) it is sent once, and any failure a new attempt
        could fix is :class:`StreamInterrupted`.
        """
        scope_key = tuple(scopes)
        sent_headers = dict(headers or {})
        url = self.url(path)
        auth_retried = False
        for _hop in range(8):
            netloc = urlsplit(url).netloc
            own_host = netloc == self.host
            if own_host:
                authz = self._authorization(scope_key, refresh=auth_retried)
                if authz:
                    sent_headers["Authorization"] = authz
            else:
                sent_headers.pop("Authorization", None)
            with self._lock:
                self.log.append((method, urlsplit(url).path))
            resp = self._send_retrying(method, url, sent_headers, body, stream=stream)
            if own_host:
                url = self.url(url.split(netloc, 1)[1])  # the scheme may have settled on http
            if resp.status == 401 and own_host:
                challenge = resp.header("WWW-Authenticate")
                resp.close()
                if not isinstance(body, (bytes, type(None))) and challenge and not auth_retried:
                    self._challenge = _parse_challenge(challenge)
                    with self._lock:
                        self._tokens.clear()  # expired mid-transfer: the next attempt gets a new one
                    raise StreamInterrupted(f"{self.domain}: the token expired during {method}")
                if auth_retried or not challenge:
                    raise RegistryAuthError(f"{self.domain}: authentication failed{self._who()}")
                # a first challenge, or an expired token: authenticate (afresh) and send again
                self._challenge = _parse_challenge(challenge)
                auth_retried = True
                continue
            if resp.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD") and resp.header("Location"):
                location = urljoin(url, resp.header("Location") or "")
                resp.close()
                url = location
                continue
            if resp.status == 403:
                resp.close()
                raise RegistryAuthError(
                    f"{self.domain}: access denied{self._who()} ({registry_message(resp.status, resp.body)})")
            return resp
        raise RegistryError(f"{self.domain}: too many redirects for {method} {urlsplit(path).path}")
