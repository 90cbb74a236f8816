"""The distribution protocol's transport: every request to a registry goes through here, over
`requests <https://requests.readthedocs.io>`_ (urllib3 connection pools); see docs/registry.md
for why requests and not httpx.

What it adds to requests, for every request:

* **TLS** per host from :mod:`.tls` (system CAs, ``--ca-file``, certs directories,
  containerd's ``hosts.toml``), handed to the host's connection pool as one ``SSLContext``.
  ``tls_verify=False`` skips verification and, as containers/image does for an insecure
  registry, falls back to plain HTTP when the server does not speak TLS; ``plain_http`` talks
  HTTP from the start. Proxy variables and ``~/.netrc`` are ignored (``trust_env`` off): no
  header is added that this module did not choose.
* **Auth** from the server's ``WWW-Authenticate`` challenge: ``Basic`` sends the credentials;
  ``Bearer`` gets a token from the realm for the request's scopes
  (``repository:<repo>:pull[,push]``, plus ``repository:<source>:pull`` for a cross-repository
  mount), with the credentials as basic auth when there are any, anonymously otherwise.
  Tokens are cached per scope set until they expire. Nothing secret is ever put in a message.
* **Retries** with exponential back-off (``Retry-After`` honoured, capped) on 429, 5xx and
  on connections dropped or timed out mid-request; a refused connection or an unknown host
  fails at once (the registry is down, not flaky). A body in memory (bytes) is resent; a
  streamed body (an iterator of chunks) is sent once and a failure is :class:`StreamInterrupted`
  for the caller to start that transfer over. urllib3's own retries are off: one policy, here.
* **Streaming** both ways: a ``stream=True`` GET hands back the open response to read in
  chunks (:meth:`Response.read`); a streamed request body goes out chunk by chunk with its
  ``Content-Length`` (never chunked transfer encoding, which distribution does not take for
  blob uploads). ``Accept-Encoding: identity``: blob bytes arrive as stored, to be hashed.
* **Redirects** (blob downloads served from storage elsewhere) are followed here for GET and
  HEAD, without the registry's ``Authorization`` when they leave its host.
* **Abort**: :meth:`RegistryClient.abort` shuts down every socket of the client from any
  thread (a signal during ``--jobs`` transfers stops them all at once).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ctrconv.errors import CtrconvError
from ctrconv.oci.validate import MAX_DOCUMENT_SIZE
from ctrconv.registry.credentials import Credentials, find_credentials
from ctrconv.registry.options import RegistryOptions
from ctrconv.registry.tls import is_loopback, ssl_context

#: urllib3 1.26 (Debian bookworm's) has no ``read1``: a streamed read asks for at most this much
_OLD_URLLIB3_READ = 64 << 10
#: urllib3 1.26 checks host names itself (its ``CertificateError`` is no ``ssl`` error) and
#: needs the context's own check off; urllib3 2 leaves the check to the context
_URLLIB3_1 = urllib3.__version__.startswith("1.")
_HOSTNAME_ERRORS: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(getattr(urllib3.util, "ssl_match_hostname", None), "CertificateError", None),) if t)
#: a request body: bytes (resent on a retry) or an iterator of chunks (sent once)
Body = "bytes | Iterable[bytes] | None"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: the most a non-streamed answer (a manifest, an index, a token) may hold: read no further, so a
#: huge or endless answer costs no memory (the documents' own limit)
MAX_ANSWER_SIZE = MAX_DOCUMENT_SIZE
#: of an error answer, only this much is read (for the registry's message)
MAX_ERROR_BODY = 64 * 1024
MAX_BACKOFF = 10.0
USER_AGENT = "ctrconv"

# --tls-verify=false is the user's explicit choice: no urllib3 warning on stderr for it
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)


class RegistryError(CtrconvError):
    """The registry refused or failed a request, or could not be reached (exit 1)."""


class RegistryAuthError(RegistryError):
    """Credentials missing, wrong, or not allowed to do this."""


class StreamInterrupted(RegistryError):
    """A request whose body was streamed (it cannot be sent again) failed in a way that a new
    attempt may fix: a dropped connection, a 5xx or 429 answer, an expired token. The caller
    starts that transfer over."""


@dataclass
class Response:
    """A finished response (body read) or, with ``stream=True`` and a 200/206, one still open."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    url: str = ""
    _open: requests.Response | None = field(default=None, repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of a streamed body, as sent (no content decoding); b"" at its end.
        Whatever has arrived is returned at once (``read1``), not held back until ``n`` bytes
        are there: a layer unpacked while it downloads sees every byte as it comes."""
        assert self._open is not None, "not a streamed response"
        raw = self._open.raw
        read1 = getattr(raw, "read1", None)  # urllib3 >= 2
        if read1 is not None:
            return read1(n, decode_content=False)
        return raw.read(min(n, _OLD_URLLIB3_READ))  # urllib3 1.26 waits for all n bytes: ask for fewer

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None


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
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    text = "; ".join(p for p in parts if p)
    return f"HTTP {status} {reason}".strip() + (f" ({text[:300]})" if text else "")


class _Sockets:
    """The connections one client opened, so :meth:`RegistryClient.abort` can shut them down
    from another thread while requests are blocked on them."""

    def __init__(self) -> None:
        self._conns: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, conn: Any) -> None:
        with self._lock:
            self._conns.add(conn)

    def shutdown(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _pool_classes(sockets: _Sockets) -> dict[str, type]:
    """urllib3 pool classes whose connections register with ``sockets`` as they connect."""

    class Plain(HTTPConnection):
        def connect(self) -> None:
            sockets.add(self)
            super().connect()

    class Tls(HTTPSConnection):
        def connect(self) -> None:
            sockets.add(self)
            super().connect()

    return {"http": type("PlainPool", (HTTPConnectionPool,), {"ConnectionCls": Plain}),
            "https": type("TlsPool", (HTTPSConnectionPool,), {"ConnectionCls": Tls})}


class _Adapter(HTTPAdapter):
    """requests' adapter with this host's ``SSLContext``, tracked sockets and no retries of its own."""

    def __init__(self, ctx: ssl.SSLContext | None, sockets: _Sockets, maxsize: int) -> None:
        self._ctx = ctx
        self._sockets = sockets
        super().__init__(pool_connections=1, pool_maxsize=maxsize, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        if self._ctx is not None:
            if _URLLIB3_1 and self._ctx.verify_mode != ssl.CERT_NONE:
                self._ctx.check_hostname = False  # urllib3 1.26 matches the name itself
            pool_kwargs["ssl_context"] = self._ctx
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._sockets)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if self._ctx is not None:
            pool_kwargs["ssl_context"] = self._ctx  # never a per-request default context instead
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Trust is the ``SSLContext``'s (:mod:`.tls`): requests' CA bundle is not added to it."""
        conn.cert_reqs = "CERT_REQUIRED" if verify else "CERT_NONE"
        conn.ca_certs = conn.ca_cert_dir = None


class _SizedBody:
    """Chunks of a streamed request body of known length: requests sends it with that
    ``Content-Length`` (it sends an iterator without a length chunked)."""

    def __init__(self, chunks: Iterable[bytes], length: int, aborted: threading.Event) -> None:
        self._chunks = chunks
        self._length = length
        self._aborted = aborted

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if self._aborted.is_set():
                raise ConnectionAbortedError("transfer stopped")
            yield chunk


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (requests -> urllib3 -> ssl/socket), outermost first."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen or len(seen) > 16:
            continue
        seen.add(id(e))
        yield e
        nested = [getattr(e, "reason", None), e.__cause__, e.__context__, *(e.args[:1] if e.args else ())]
        todo.extend(n for n in nested if isinstance(n, BaseException))


_DROPPED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected,
            http.client.IncompleteRead, http.client.BadStatusLine, socket.timeout, TimeoutError, ssl.SSLEOFError,
            urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError, requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError)


#: urllib3 2's wrapper of a failed name look-up (1.26 wraps the ``gaierror`` in NewConnectionError)
_NAME_RESOLUTION: type[BaseException] = getattr(urllib3.exceptions, "NameResolutionError", socket.gaierror)


def failure_kind(exc: BaseException) -> tuple[str, BaseException]:
    """Why a request failed: ``untrusted`` (certificate), ``refused`` (nothing listening, unknown
    host), ``tls`` (another TLS failure), ``dropped`` (broke mid-request: worth a retry) or
    ``other``; with the innermost exception that says so."""
    chain = list(_chain(exc))
    for kind, types in (("untrusted", (ssl.SSLCertVerificationError, *_HOSTNAME_ERRORS)),
                        ("refused", (ConnectionRefusedError, socket.gaierror, _NAME_RESOLUTION)),
                        ("tls", (ssl.SSLError,)), ("dropped", _DROPPED)):
        found = [e for e in chain if isinstance(e, types)]
        if found:
            return kind, found[-1]
    return "other", chain[-1]


def is_dropped(exc: BaseException) -> bool:
    """A connection that broke mid-request (worth a retry), as opposed to one never made."""
    kind, inner = failure_kind(exc)
    return kind == "dropped" or (kind == "tls" and isinstance(inner, ssl.SSLEOFError))


#: what a failed request may raise (requests wraps most, a streamed body's read does not)
_TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _dropped(netloc: str, url: str, inner: BaseException, timeout: float) -> RegistryError:
    """A connection that broke, said as what it was: no answer in time (a stalled registry),
    or reset (plain HTTP to a port that speaks TLS resets it: said as a hint)."""
    if isinstance(inner, (socket.timeout, TimeoutError)) or "Timeout" in type(inner).__name__:
        return RegistryError(f"{netloc}: no answer within {timeout:g} s (timed out)")
    hint = ("the registry may speak HTTPS there: try without --plain-http"
            if urlsplit(url).scheme == "http" and isinstance(inner, ConnectionResetError) else None)
    return RegistryError(f"{netloc}: connection dropped: {type(inner).__name__}", hint=hint)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc or type(exc).__name__)


def _bounded_body(resp: requests.Response, method: str, url: str) -> bytes:
    """A non-streamed answer's body, read no further than :data:`MAX_ANSWER_SIZE` (more is an
    error: no document is that large) or, for an error answer, :data:`MAX_ERROR_BODY` (the
    rest is not needed for its message)."""
    failed = resp.status_code >= 400
    limit = MAX_ERROR_BODY if failed else MAX_ANSWER_SIZE
    where = f"{urlsplit(url).netloc}: {method} {urlsplit(url).path}"
    length = resp.headers.get("Content-Length") or ""
    if not failed and length.isdigit() and int(length) > limit:
        raise RegistryError(f"{where}: the registry answers with {int(length)} bytes, more than the {limit} "
                            "a manifest or token may have")
    chunks, total = [], 0
    for chunk in resp.iter_content(64 << 10):
        total += len(chunk)
        if total > limit:
            if failed:
                chunks.append(chunk[:limit - (total - len(chunk))])
                break
            raise RegistryError(f"{where}: the registry's answer runs past {limit} bytes, more than a "
                                "manifest or token may have")
        chunks.append(chunk)
    return b"".join(chunks)


class RegistryClient:
    """Requests to one registry host (thread-safe: one pool of kept-alive connections per host)."""

    def __init__(self, domain: str, api_host: str, repository: str, options: RegistryOptions) -> None:
        self.domain = domain
        self.host = api_host
        self.options = options
        self.scheme = "http" if options.plain_http else "https"
        self._scheme_settled = options.plain_http
        self._fell_back_to_http = False
        self._lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self.credentials: Credentials | None = find_credentials(
            domain, repository, creds=options.creds, authfile=options.authfile)
        #: what was sent, for reports and tests: (method, path) of every request made
        self.log: list[tuple[str, str]] = []
        self._sockets = _Sockets()
        self._aborted = threading.Event()
        #: (scheme, netloc) -> (session, verify): the registry's own, and any a redirect or a
        #: token realm leads to
        self._sessions: dict[tuple[str, str], tuple[requests.Session, bool]] = {}
        if self.scheme == "https":
            self._session_for("https", self.host)  # a bad certs dir is a usage error up front

    # -- connections ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _session_for(self, scheme: str, netloc: str) -> tuple[requests.Session, bool]:
        with self._lock:
            found = self._sessions.get((scheme, netloc))
            if found is not None:
                return found
            ctx = ssl_context(netloc, self.options) if scheme == "https" else None
            session = requests.Session()
            session.trust_env = False  # no proxies, no ~/.netrc credentials
            session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            adapter = _Adapter(ctx, self._sockets, max(self.options.jobs, self.options.pull_jobs, 1) + 2)
            session.mount(f"{scheme}://", adapter)
            found = (session, ctx is None or ctx.verify_mode != ssl.CERT_NONE)
            self._sessions[(scheme, netloc)] = found
            return found

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session, _ in sessions:
            session.close()

    def abort(self) -> None:
        """Stop every request in flight, in any thread, and refuse new ones (a push that is
        interrupted does not wait for its other transfers)."""
        self._aborted.set()
        self._sockets.shutdown()

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

    def _settle_scheme(self, url: str, exc: BaseException) -> bool:
        """HTTPS to the registry failed at the handshake: an insecure or loopback registry may
        be plain HTTP. True when ``url`` is to be sent again over HTTP: the first such failure
        falls back, and so do the requests other threads sent over HTTPS before it did (a
        ``--jobs`` push starts its transfers at once: they failed alike and must follow)."""
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.netloc != self.host or not isinstance(exc, ssl.SSLError):
            return False
        with self._lock:
            if self._fell_back_to_http:
                return True
            if self._scheme_settled or self.scheme != "https":
                return False
            if not self.options.tls_verify or is_loopback(self.host):
                self.scheme = "http"
                self._scheme_settled = self._fell_back_to_http = True
                return True
        return False

    def _once(self, method: str, url: str, headers: Mapping[str, str], body: "Body", stream: bool) -> Response:
        """One request; a streamed 200/206 comes back open, anything else read whole (an error
        document, a manifest, a token: small)."""
        self._check_aborted()
        parts = urlsplit(url)
        session, verify = self._session_for(parts.scheme, parts.netloc)
        data: Any = body
        if body is not None and not isinstance(body, bytes):
            data = _SizedBody(body, int(headers.get("Content-Length") or 0), self._aborted)
        try:
            resp = session.request(method, url, headers=dict(headers), data=data, stream=True, allow_redirects=False,
                                   timeout=self.options.timeout, verify=verify)
            if parts.netloc == self.host and parts.scheme == "https":
                self._scheme_settled = True  # TLS answered: never fall back to HTTP later
            if stream and resp.status_code in (200, 206):
                return Response(resp.status_code, resp.headers, url=url, _open=resp)
            with resp:
                content = b"" if method == "HEAD" else _bounded_body(resp, method, url)
        except BaseException:
            self._check_aborted()
            raise
        return Response(resp.status_code, resp.headers, content, url=url)

    def _failure(self, exc: BaseException, url: str, kind: str, inner: BaseException) -> RegistryError:
        netloc = urlsplit(url).netloc
        if kind == "untrusted":
            detail = getattr(inner, "verify_message", None) or getattr(inner, "reason", None) or inner
            return RegistryError(f"{netloc}: TLS certificate not trusted: {detail}")
        if kind == "refused":
            return RegistryError(f"cannot reach {netloc}: {_reason(inner)}")
        if kind == "tls":
            return RegistryError(f"{netloc}: TLS error: {_reason(inner)}")
        if kind == "dropped":
            return _dropped(netloc, url, inner, self.options.timeout)
        return RegistryError(f"{netloc}: connection failed: {_reason(inner)}")

    def _send_retrying(self, method: str, url: str, headers: Mapping[str, str], body: "Body", *,
                       auth: bool = True, stream: bool = False) -> Response:
        if not isinstance(body, (bytes, type(None))):
            return self._send_streamed(method, url, headers, body)
        attempt = 0
        while True:
            try:
                resp = self._once(method, url, headers, body, stream)
            except _TRANSPORT_ERRORS as exc:
                kind, inner = failure_kind(exc)
                if kind == "tls" and auth and self._settle_scheme(url, inner):
                    url = self.base_url + url.split(urlsplit(url).netloc, 1)[1]
                    continue
                if attempt < self.options.retries and is_dropped(exc):
                    self._backoff(attempt, None)
                    attempt += 1
                    continue
                raise self._failure(exc, url, kind, inner) from None
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
        except _TRANSPORT_ERRORS as exc:
            kind, inner = failure_kind(exc)
            if is_dropped(exc):
                dropped = _dropped(netloc, url, inner, self.options.timeout)
                raise StreamInterrupted(f"{dropped} (during {method})", hint=dropped.hint) from None
            raise self._failure(exc, url, kind, inner) from None
        if resp.status in RETRY_STATUS:
            raise StreamInterrupted(f"{netloc}: {method}: {registry_message(resp.status, resp.body)}")
        return resp

    def url(self, path: str) -> str:
        """``path`` on this registry, or an absolute URL it gave. A relative reference (an
        upload ``Location`` without a leading ``/``) is resolved against the upload endpoint, as
        RFC 3986 says and containers/image does, by the caller (:meth:`resolve_location`)."""
        if "://" in path:
            return path
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def resolve_location(self, location: str, request_path: str) -> str:
        """An upload ``Location`` answered to a request for ``request_path``, made absolute."""
        return urljoin(self.url(request_path), location)

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
                if urlsplit(location).scheme not in ("http", "https") or not urlsplit(location).netloc:
                    raise RegistryError(f"{self.domain}: {method} {urlsplit(path).path} redirected to "
                                        f"{location[:200]!r}, which is no http(s) URL")
                url = location
                continue
            if resp.status == 403:
                resp.close()
                raise RegistryAuthError(
                    f"{self.domain}: access denied{self._who()} ({registry_message(resp.status, resp.body)})")
            return resp
        raise RegistryError(f"{self.domain}: too many redirects for {method} {urlsplit(path).path}")
