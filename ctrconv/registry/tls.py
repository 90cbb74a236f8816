"""TLS settings for one registry host, as docker, podman/skopeo and containerd keep them.

System CAs plus a private CA: ``--ca-file``, or a certs directory (``<dir>/<host:port>/`` with
``*.crt`` CAs, ``*.cert``/``*.key`` client pairs, and containerd's ``ca.crt`` / ``hosts.toml``
``ca``, ``client``, ``skip_verify``); default dirs ``/etc/containers/certs.d``,
``/etc/docker/certs.d``, ``/etc/containerd/certs.d``. The result is one :class:`ssl.SSLContext`
that the transport hands to its connection pool for that host.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ctrconv.errors import UsageError

if TYPE_CHECKING:
    from ctrconv.registry.options import RegistryOptions

#: certs dirs searched for ``<host:port>/`` when ``--cert-dir`` is not given
DEFAULT_CERT_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d", "/etc/containerd/certs.d")


def is_loopback(host: str) -> bool:
    name = host[1:host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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


def ssl_context(host: str, options: "RegistryOptions") -> ssl.SSLContext:
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
