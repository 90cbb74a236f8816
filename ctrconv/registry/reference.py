"""``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``: what a registry transport names.

The text after ``docker://`` is an image reference as docker and skopeo read it
(``ParseNormalizedNamed``): ``busybox`` is ``docker.io/library/busybox``; a first component
with a dot or a colon, or ``localhost``, is a registry host. The image name containerd stores
for a pull of it is the normalised reference (``ctr images pull`` stores exactly that).
"""

from __future__ import annotations

from dataclasses import dataclass

from ctrconv.digest import Digest
from ctrconv.errors import UsageError
from ctrconv.oci.reference import DEFAULT_DOMAIN, parse_normalized_named

SCHEME = "docker://"
#: where docker.io's registry API answers (``docker.io`` itself only redirects)
DOCKER_IO_API = "registry-1.docker.io"


def is_registry_ref(text: str) -> bool:
    """Whether ``text`` names a registry image (``docker://...``)."""
    return str(text).startswith(SCHEME)


@dataclass(frozen=True)
class RegistryRef:
    """One image in a registry."""

    #: ``host[:port]`` as written (``docker.io`` for Docker Hub)
    domain: str
    #: repository path (``library/busybox``)
    repository: str
    tag: str = ""
    digest: Digest | None = None

    @property
    def api_host(self) -> str:
        """The ``host[:port]`` the HTTP requests go to."""
        return DOCKER_IO_API if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def hostname(self) -> str:
        """The host without its port (what ``containerd.io/distribution.source.<host>`` names)."""
        host = self.domain
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def reference(self) -> str:
        """Tag or digest: what ``/v2/<repo>/manifests/<reference>`` takes (a digest wins)."""
        return str(self.digest) if self.digest is not None else (self.tag or "latest")

    @property
    def name(self) -> str:
        """The image name a pull records (``ctr images pull`` stores the normalised reference;
        a reference with both keeps both, as ctr does)."""
        text = f"{self.domain}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def with_tag(self, tag: str) -> "RegistryRef":
        return RegistryRef(self.domain, self.repository, tag, None)

    def __str__(self) -> str:
        return SCHEME + self.name


def parse_registry_ref(text: str, *, default_tag: bool = True) -> RegistryRef:
    """Parse ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` (the scheme may be left out).

    ``default_tag``: no tag and no digest means ``latest`` (a pull); off, the tag stays
    empty (a push destination whose tags come from the images pushed).
    """
    body = text[len(SCHEME):] if text.startswith(SCHEME) else text
    if not body or body.startswith("/") or "//" in body:
        raise UsageError(f"invalid registry reference {text[:300]!r} (docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST])")
    if "@" in body.split("/", 1)[0]:
        # never echoed: it would carry a password into a message
        raise UsageError("a registry reference cannot carry credentials (USER:PASS@HOST); use --creds or --authfile")
    ref = parse_normalized_named(body)
    tag = ref.tag or ("latest" if default_tag and ref.digest is None else "")
    return RegistryRef(ref.domain, ref.path, tag, ref.digest)
