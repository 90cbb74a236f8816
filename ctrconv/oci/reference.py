"""Image reference normalisation exactly as containerd and ctr do it.

Three different parsers meet in an image name, and each is reproduced here:

* ``github.com/distribution/reference`` (``Parse``, ``ParseNormalizedNamed``, ``ParseDockerRef``,
  ``TagNameOnly``, ``FamiliarString``): what ``ctr`` stores as an image name
  (``busybox`` -> ``docker.io/library/busybox:latest``) and what goes into ``RepoTags``;
* containerd's own ``reference.Parse`` (a ``net/url`` parse of ``dummy://<name>``): its ``Object``
  is the ``org.opencontainers.image.ref.name`` that ``ctr images export`` writes;
* the ``ctr images import`` name translator (``refTranslator``, ``imageName``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Mapping
from urllib.parse import unquote

from ctrconv.digest import Digest
from ctrconv.errors import InvalidDigestError, UsageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

# distribution/reference grammar (regexp.go)
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_DOMAIN_AND_PORT = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN_AND_PORT}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_ANCHORED_NAME_RE = re.compile(
    rf"(?:({_DOMAIN_AND_PORT})/)?({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)", re.ASCII
)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
#: name (255) + ``:`` tag (128) + ``@`` digest; anything longer cannot be valid, and the cap
#: keeps the backtracking regex engine linear on hostile input.
_MAX_REFERENCE_LENGTH = 1024


@dataclass(frozen=True)
class Reference:
    """A parsed reference: ``[domain/]path[:tag][@digest]`` (distribution/reference)."""

    domain: str
    path: str
    tag: str = ""
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """The repository name, ``domain/path`` (or ``path`` without a domain)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + str(self.digest)
        return text


def _invalid(text: str, why: str) -> UsageError:
    return UsageError(f"invalid reference {text[:300]!r}: {why}")


def parse_reference(text: str) -> Reference:
    """distribution/reference ``Parse``: grammar check only, no normalisation."""
    if len(text) > _MAX_REFERENCE_LENGTH:
        raise _invalid(text, "reference too long")
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        if not text:
            raise _invalid(text, "repository name must have at least one component")
        if _REFERENCE_RE.fullmatch(text.lower()):
            raise _invalid(text, "repository name must be lowercase")
        raise _invalid(text, "invalid reference format")
    name, tag, digest_text = match.group(1), match.group(2) or "", match.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(text, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    name_match = _ANCHORED_NAME_RE.fullmatch(name)
    assert name_match is not None  # the full reference grammar already matched
    digest = None
    if digest_text is not None:
        try:
            digest = Digest.parse(digest_text)
        except InvalidDigestError as exc:
            raise _invalid(text, str(exc)) from None
    return Reference(name_match.group(1) or "", name_match.group(2), tag, digest)


def _split_docker_domain(name: str) -> tuple[str, str]:
    """distribution/reference ``splitDockerDomain``."""
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if first == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized_named(text: str) -> Reference:
    """distribution/reference ``ParseNormalizedNamed``: adds ``docker.io`` and ``library/``."""
    if _IDENTIFIER_RE.fullmatch(text):
        raise _invalid(text, "cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise _invalid(text, f"repository name ({remote[:300]}) must be lowercase")
    return parse_reference(f"{domain}/{remainder}")


def tag_name_only(ref: Reference) -> Reference:
    """distribution/reference ``TagNameOnly``: ``:latest`` when there is neither tag nor digest."""
    if not ref.tag and ref.digest is None:
        return replace(ref, tag=DEFAULT_TAG)
    return ref


def parse_docker_ref(text: str) -> Reference:
    """distribution/reference ``ParseDockerRef``: normalised; a digest drops the tag."""
    ref = parse_normalized_named(text)
    if ref.tag and ref.digest is not None:
        return replace(ref, tag="")
    return tag_name_only(ref)


def normalize(text: str) -> str:
    """The image name containerd stores for ``text`` (``busybox`` -> ``docker.io/library/busybox:latest``)."""
    return str(parse_docker_ref(text))


def familiar_string(ref: Reference) -> str:
    """distribution/reference ``FamiliarString``: strip ``docker.io/`` and ``library/``."""
    domain, path = ref.domain, ref.path
    if domain == DEFAULT_DOMAIN:
        domain = ""
        if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX):]:
            path = path[len(OFFICIAL_REPO_PREFIX):]
    return str(Reference(domain, path, ref.tag, ref.digest))


def familiarize(name: str) -> str:
    """containerd ``familiarizeReference`` for ``manifest.json`` RepoTags
    (``docker.io/library/test:v1`` -> ``test:v1``; no tag -> ``:latest``)."""
    return familiar_string(tag_name_only(parse_normalized_named(name)))


# --- containerd reference.Parse (Go net/url based) ------------------------------------------

_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_USERINFO_RE = re.compile(r"[A-Za-z0-9\-._:~!$&'()*+,;=%@]*\Z")


def _valid_port(colon_port: str) -> bool:
    """Go ``validOptionalPort``: empty, ``:``, or ``:`` followed by digits."""
    return colon_port == "" or (
        colon_port[0] == ":" and all("0" <= c <= "9" for c in colon_port[1:])
    )


def _containerd_object(text: str) -> str | None:
    """``Object`` of containerd ``reference.Parse(text)``; None where that returns an error."""
    if "://" in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return None
    text = text.split("#", 1)[0].split("?", 1)[0]
    authority, slash, rest = text.partition("/")
    path = slash + rest
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        if not _USERINFO_RE.match(userinfo):
            return None
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0 or not _valid_port(authority[end + 1 :]):
            return None
    elif ":" in authority and not _valid_port(authority[authority.rfind(":") :]):
        return None
    if _PERCENT_RE.search(authority) or _PERCENT_RE.search(path):
        return None
    if not unquote(authority):
        return None
    path = unquote(path)
    found = re.search(r"[:@]", path)
    if found is None:
        return ""
    obj = path[found.start() :]
    return obj[1:] if obj.startswith(":") else obj


def oci_ref_name(name: str) -> str:
    """containerd ``ociReferenceName``: the ``org.opencontainers.image.ref.name`` ctr exports.

    ``docker.io/library/test:v1`` -> ``v1``; ``…:v1@sha256:…`` -> ``v1@sha256:…``;
    ``…@sha256:…`` -> ``@sha256:…``; no tag or digest -> ``""``; a name containerd's
    ``reference.Parse`` rejects (``test:v1``: no host) is returned whole.
    """
    obj = _containerd_object(name)
    return name if obj is None else obj


def is_image_prefix(text: str, prefix: str) -> bool:
    """containerd ``isImagePrefix``: ``prefix`` followed by end, ``/``, ``:`` or ``@``."""
    if not text.startswith(prefix):
        return False
    return len(text) == len(prefix) or text[len(prefix)] in "/:@"


def default_import_prefix(today: date | None = None) -> str:
    """``import-YYYY-MM-DD`` (local date), ctr's prefix when ``--base-name`` is not given."""
    return f"import-{(today or date.today()).isoformat()}"


def import_name(
    annotations: Mapping[str, str], prefix: str | None = None, *, today: date | None = None
) -> str | None:
    """The image name ``ctr images import`` (1.6/1.7) gives an index entry, or None for none.

    ``io.containerd.image.name`` wins verbatim. Otherwise ``org.opencontainers.image.ref.name``
    goes through the ref translator: a value containing ``/``, ``:`` or ``@`` is a full name,
    kept as is (with ``prefix`` = ``--base-name`` given, dropped unless under that prefix);
    a bare tag becomes ``<prefix>:<tag>`` with ``prefix`` defaulting to ``import-<date>``.
    """
    name = annotations.get(ANNOTATION_IMAGE_NAME, "")
    if name:
        return name
    ref = annotations.get(ANNOTATION_REF_NAME, "")
    if not ref:
        return None
    check_prefix = prefix is not None
    base = prefix if prefix is not None else default_import_prefix(today)
    if any(c in ref for c in "/:@"):
        if check_prefix and not is_image_prefix(ref, base):
            return None
        return ref
    return f"{base}:{ref}"


def digest_name(prefix: str, digest: Digest | str) -> str:
    """containerd ``DigestTranslator`` (``ctr import --digests``): ``<prefix>@<digest>``."""
    return f"{prefix}@{digest}"
