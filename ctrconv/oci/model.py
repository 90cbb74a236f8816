"""Immutable models of descriptors, manifests, indexes and image configs.

Parsed documents always keep their ``raw`` bytes and digest: content is addressed by those exact
bytes, so ctrconv never re-serialises a manifest it did not create. For documents it does
create (index.json, docker manifests), :func:`marshal_go` writes bytes identical to Go's
``json.Marshal`` of the matching image-spec struct.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from ctrconv.digest import Digest
from ctrconv.errors import DigestMismatchError, FormatError, InvalidDigestError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.platform import Platform
from ctrconv.oci.validate import MAX_SIZE, validate_json

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value)) if value else _EMPTY


def _string_map(obj: Any, what: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise FormatError(f"{what} is not a map of strings")
    return obj


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor. ``annotations`` is read-only; use :meth:`annotated` to add."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""
    data: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "annotations", _frozen_map(self.annotations))
        object.__setattr__(self, "urls", tuple(self.urls))
        if type(self.size) is not int or not 0 <= self.size <= MAX_SIZE:
            raise FormatError(f"descriptor {self.digest}: size {self.size!r} out of range")

    @classmethod
    def from_json(cls, obj: Any) -> "Descriptor":
        """Build from a parsed descriptor object, checking every field's type."""
        if not isinstance(obj, dict):
            raise FormatError("descriptor is not a JSON object")
        try:
            digest = Digest.parse(obj.get("digest"))
        except InvalidDigestError as exc:
            raise FormatError(f"descriptor: {exc}") from None
        media_type = obj.get("mediaType", "")
        artifact_type = obj.get("artifactType", "")
        if not isinstance(media_type, str) or not isinstance(artifact_type, str):
            raise FormatError(f"descriptor {digest}: mediaType/artifactType is not a string")
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise FormatError(f"descriptor {digest}: urls is not an array of strings")
        data = obj.get("data")
        if data is not None:
            try:
                data = base64.b64decode(data, validate=True) if isinstance(data, str) else None
            except (binascii.Error, ValueError):
                data = None
            if data is None:
                raise FormatError(f"descriptor {digest}: data is not base64")
        platform = obj.get("platform")
        return cls(
            media_type=media_type,
            digest=digest,
            size=obj.get("size"),  # type: ignore[arg-type]  # checked in __post_init__
            annotations=_string_map(obj.get("annotations"), f"descriptor {digest} annotations"),
            platform=Platform.from_json(platform) if platform is not None else None,
            urls=tuple(urls),
            artifact_type=artifact_type,
            data=data,
        )

    def to_json(self) -> dict[str, Any]:
        """Go ``ocispec.Descriptor`` field order: mediaType, digest, size, urls, annotations,
        data, platform, artifactType; empty optional fields omitted, annotation keys sorted."""
        out: dict[str, Any] = {}
        if self.media_type:
            out["mediaType"] = self.media_type
        out["digest"] = str(self.digest)
        out["size"] = self.size
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = {k: self.annotations[k] for k in sorted(self.annotations)}
        if self.data:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def annotated(self, extra: Mapping[str, str]) -> "Descriptor":
        """A copy with ``extra`` merged over the existing annotations."""
        return replace(self, annotations={**self.annotations, **extra})


def _descriptor_list(items: list[Any]) -> tuple[Descriptor, ...]:
    return tuple(Descriptor.from_json(d) for d in items)


def _optional_descriptor(obj: Any) -> Descriptor | None:
    return Descriptor.from_json(obj) if obj is not None else None


def _check_digest(data: bytes, digest: str | Digest | None) -> Digest:
    """Digest of ``data``; when an expected digest is given it must match."""
    if digest is None:
        return Digest.from_bytes(data)
    expected = Digest.parse(digest)
    actual = Digest.from_bytes(data, expected.algorithm)
    if actual != expected:
        raise DigestMismatchError(f"content {expected}: bytes hash to {actual}")
    return actual


@dataclass(frozen=True)
class Manifest:
    """An OCI image manifest or Docker schema2 manifest, with its exact bytes."""

    media_type: str
    digest: Digest
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    subject: Descriptor | None = None
    artifact_type: str = ""

    @classmethod
    def from_bytes(
        cls, data: bytes, media_type: str, *, digest: str | Digest | None = None
    ) -> "Manifest":
        """Validate and parse; ``digest``, when given, is checked against the bytes."""
        if not mt.is_manifest(media_type):
            raise FormatError(f"{media_type!r} is not a manifest media type")
        actual = _check_digest(data, digest)
        doc = validate_json(media_type, data, digest=str(actual))
        return cls(
            media_type=media_type,
            digest=actual,
            config=Descriptor.from_json(doc["config"]),
            layers=_descriptor_list(doc["layers"]),
            raw=bytes(data),
            annotations=_frozen_map(doc.get("annotations")),
            subject=_optional_descriptor(doc.get("subject")),
            artifact_type=doc.get("artifactType", ""),
        )

    def children(self) -> list[Descriptor]:
        """containerd ``ChildrenHandler`` order: config first, then layers."""
        return [self.config, *self.layers]

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))


@dataclass(frozen=True)
class Index:
    """An OCI image index or Docker manifest list, with its exact bytes."""

    media_type: str
    digest: Digest
    manifests: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    subject: Descriptor | None = None
    artifact_type: str = ""

    @classmethod
    def from_bytes(
        cls, data: bytes, media_type: str, *, digest: str | Digest | None = None
    ) -> "Index":
        """Validate and parse; ``digest``, when given, is checked against the bytes."""
        if not mt.is_index(media_type):
            raise FormatError(f"{media_type!r} is not an index media type")
        actual = _check_digest(data, digest)
        doc = validate_json(media_type, data, digest=str(actual))
        return cls(
            media_type=media_type,
            digest=actual,
            manifests=_descriptor_list(doc["manifests"]),
            raw=bytes(data),
            annotations=_frozen_map(doc.get("annotations")),
            subject=_optional_descriptor(doc.get("subject")),
            artifact_type=doc.get("artifactType", ""),
        )

    def children(self) -> list[Descriptor]:
        return list(self.manifests)

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))


@dataclass(frozen=True)
class ImageConfig:
    """The fields of an image config ctrconv needs; everything else stays in ``raw``."""

    media_type: str
    digest: Digest
    os: str
    architecture: str
    diff_ids: tuple[Digest, ...]
    raw: bytes = field(repr=False)
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def from_bytes(
        cls, data: bytes, media_type: str = mt.OCI_CONFIG, *, digest: str | Digest | None = None
    ) -> "ImageConfig":
        """Validate and parse an OCI or Docker config; ``digest`` is checked when given."""
        if media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
            raise FormatError(f"{media_type!r} is not an image config media type")
        actual = _check_digest(data, digest)
        doc = validate_json(media_type, data, digest=str(actual))
        rootfs = doc["rootfs"]
        return cls(
            media_type=media_type,
            digest=actual,
            os=doc["os"],
            architecture=doc["architecture"],
            diff_ids=tuple(Digest.parse(d) for d in rootfs.get("diff_ids") or []),
            raw=bytes(data),
            variant=doc.get("variant", ""),
            os_version=doc.get("os.version", ""),
            os_features=tuple(doc.get("os.features") or ()),
        )

    @property
    def platform(self) -> Platform:
        """The platform containerd derives from a config (``images.Platforms`` for manifests)."""
        return Platform(
            self.os, self.architecture, self.variant, self.os_version, self.os_features
        )


def parse_blob(
    media_type: str, data: bytes, *, digest: str | Digest | None = None
) -> Manifest | Index | ImageConfig:
    """Parse a manifest, index or config blob by media type (FormatError for anything else)."""
    if mt.is_index(media_type):
        return Index.from_bytes(data, media_type, digest=digest)
    if mt.is_manifest(media_type):
        return Manifest.from_bytes(data, media_type, digest=digest)
    if media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        return ImageConfig.from_bytes(data, media_type, digest=digest)
    raise FormatError(f"no parser for media type {media_type!r}")


# --- Go encoding/json compatible output -----------------------------------------------------

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_NEEDS_ESCAPE = re.compile("[\x00-\x1f\"\\\\<>&\u2028\u2029\ud800-\udfff]")


def _go_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _GO_ESCAPES:
        return _GO_ESCAPES[ch]
    if "\ud800" <= ch <= "\udfff":
        return "\ufffd"  # Go writes invalid UTF-8 as U+FFFD
    return f"\\u{ord(ch):04x}"


def _go_string(text: str) -> str:
    return '"' + _GO_NEEDS_ESCAPE.sub(_go_escape, text) + '"'


def _go_encode(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, str):
        out.append(_go_string(obj))
    elif isinstance(obj, Mapping):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(_go_string(key))
            out.append(":")
            _go_encode(value, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _go_encode(value, out)
        out.append("]")
    else:
        raise TypeError(f"cannot marshal {type(obj).__name__} like Go's encoding/json")


def marshal_go(obj: Any) -> bytes:
    """Bytes equal to Go's ``json.Marshal`` (pre-1.22 escaping: ``<>&`` as ``\\u003c``…,
    control characters other than ``\\n\\r\\t`` as ``\\u00XX``) for a value built from dicts
    in struct field order, lists, strings, ints, bools and None. Floats are refused."""
    out: list[str] = []
    _go_encode(obj, out)
    return "".join(out).encode("utf-8")
