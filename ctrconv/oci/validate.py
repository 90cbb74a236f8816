"""Safe JSON parsing and schema validation of OCI / Docker image documents.

Every manifest, index and config that ctrconv reads from an archive or a store passes through
:func:`validate_json` before any field is trusted: the bytes are size-capped, strictly UTF-8,
depth-limited (checked before parsing, so hostile nesting never reaches the recursive parser),
free of duplicate keys and non-finite numbers, and then checked against the JSON Schemas in the
top-level ``schemas/`` directory plus the rules a schema cannot express (strict digest
parsing, sizes below 2**53, the document's own ``mediaType`` agreeing with its descriptor).
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctrconv.digest import Digest, is_canonical
from ctrconv.errors import FormatError, InvalidDigestError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.fastschema import compiled_check

if TYPE_CHECKING:  # imported where used: a document the compiled check proves valid needs none of it
    import jsonschema
    from jsonschema.exceptions import ValidationError
    from referencing import Registry

# ``ctrconv/schemas`` is a symlink to the top-level ``schemas/`` in a checkout and a real
# directory in an installed wheel (setuptools copies the files as package data).
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

#: Largest JSON document accepted (manifests and configs are kilobytes in practice).
MAX_DOCUMENT_SIZE = 16 * 1024 * 1024
#: Deepest array/object nesting accepted; real documents stay below 10.
MAX_DEPTH = 200
#: Sizes must round-trip through JavaScript/JSON tooling exactly.
MAX_SIZE = 2**53 - 1

#: media type -> schema file in :data:`SCHEMA_DIR`.
SCHEMA_FILES: dict[str, str] = {
    mt.OCI_INDEX: "image-index.json",
    mt.OCI_MANIFEST: "image-manifest.json",
    mt.OCI_CONFIG: "config.json",
    mt.OCI_DESCRIPTOR: "content-descriptor.json",
    mt.OCI_LAYOUT_HEADER: "image-layout.json",
    mt.DOCKER_MANIFEST_LIST: "docker-manifest-list.json",
    mt.DOCKER_MANIFEST: "docker-manifest-v2.json",
    mt.DOCKER_CONFIG: "docker-config.json",
}

_SCHEMA_BASE = "https://ctrconv.invalid/schemas/"
_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN_CLOSE = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[{]}")
_ENV_RE = re.compile(r"[^=]+=", re.DOTALL)


def schema_for(media_type: str) -> str | None:
    """The schema file name used for ``media_type``, or None when ctrconv has none."""
    return SCHEMA_FILES.get(media_type)


@lru_cache(maxsize=1)
def _registry() -> Registry:
    """All schema files, keyed by ``$id``; references never leave this registry."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents, DRAFT202012)))
    return Registry().with_resources(resources)


@lru_cache(maxsize=None)
def _validator(schema_file: str) -> jsonschema.protocols.Validator:
    import jsonschema

    registry = _registry()
    schema = registry.contents(_SCHEMA_BASE + schema_file)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


def _where(media_type: str, digest: str | None) -> str:
    return f"{media_type} {digest}" if digest else media_type


def _max_depth(data: bytes) -> int:
    """Deepest ``[``/``{`` nesting outside strings, computed without recursion."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return 0
    brackets = _STRING_RE.sub(b"", data).translate(_OPEN_CLOSE, _NOT_BRACKET)
    return max(accumulate(memoryview(brackets).cast("b")), default=0)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # built in C; a key seen twice leaves the dict shorter than the pairs
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:80]!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} out of range")
    return value


#: ctrconv's parsing rules, as ``json.loads`` keywords and as one decoder made once (its
#: scanner keeps no state between documents)
_DECODING: dict[str, Any] = {
    "object_pairs_hook": _reject_duplicates, "parse_constant": _reject_constant, "parse_float": _finite_float,
}
_DECODER = json.JSONDecoder(**_DECODING)
_SCAN = _DECODER.scan_once
_JSON_WHITESPACE = " \t\n\r"


def parse_json_bytes(data: bytes, *, what: str = "JSON document") -> Any:
    """Parse untrusted JSON with ctrconv's limits; every failure is a :class:`FormatError`."""
    return _parse_json(data, what, None)


def _parse_json(data: bytes, what: str, digest: str | None) -> Any:
    """:func:`parse_json_bytes`, its messages naming ``_where(what, digest)`` (made only when one
    is raised: a large root's listing parses 20,000 documents)."""
    if len(data) > MAX_DOCUMENT_SIZE:
        raise FormatError(f"{_where(what, digest)}: document of {len(data)} bytes exceeds {MAX_DOCUMENT_SIZE}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{_where(what, digest)}: not valid UTF-8 at byte {exc.start}") from None
    if _max_depth(bytes(data)) > MAX_DEPTH:
        raise FormatError(f"{_where(what, digest)}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        doc, end = _SCAN(text, 0)  # the decoder's C scanner itself: most documents are one value
        if end != len(text) and text[end:].strip(_JSON_WHITESPACE):
            raise StopIteration(end)
    except (StopIteration, ValueError, RecursionError):
        try:  # anything else (leading space, a BOM, an error to word) as the decoder takes it
            # json.loads builds a decoder per call; a text with a BOM goes through it for its message
            doc = _DECODER.decode(text) if not text.startswith("\ufeff") else json.loads(text, **_DECODING)
        except (ValueError, RecursionError) as exc:
            raise FormatError(f"{_where(what, digest)}: invalid JSON: {str(exc)[:200]}") from None
    if "\\u" in text and _LONE_SURROGATE.search(text.lower()) is not None:
        doc = _replace_lone_surrogates(doc)
    return doc


#: a ``\uD800``-``\uDFFF`` escape in the JSON text; decoded alone it is not a character
_LONE_SURROGATE = re.compile(r"\\ud[89a-f][0-9a-f]{2}")


def _replace_lone_surrogates(value: Any) -> Any:
    """Go's decoder turns an unpaired surrogate escape into U+FFFD; so do we, so every name
    stays encodable (Python would keep the lone surrogate and fail later when writing it)."""
    if isinstance(value, str):
        return re.sub("[\ud800-\udfff]", "\ufffd", value)
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    return value


def _pointer(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return "/" + "/".join(parts) if parts else "document root"


def _schema_error(where: str, error: ValidationError) -> FormatError:
    from jsonschema.exceptions import best_match

    if error.context:
        error = best_match(error.context) or error
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    return FormatError(f"invalid {where}: at {_pointer(error)}: {message}")


def _check_descriptor(where: str, path: str, desc: dict[str, Any]) -> None:
    try:
        Digest.parse(desc.get("digest"))
    except InvalidDigestError as exc:
        raise FormatError(f"invalid {where}: at {path}/digest: {exc}") from None
    size = desc.get("size")
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise FormatError(f"invalid {where}: at {path}/size: {str(size)[:40]} is not in 0..2^53-1")


def _descriptor_lists(rules: _Rules, doc: dict[str, Any]) -> list[tuple[str, list[Any], bool]]:
    """(JSON pointer, descriptors, whether the pointer takes each one's index) for every
    descriptor a document holds, in document order."""
    found: list[tuple[str, list[Any], bool]] = []
    if rules.manifest:
        found.append(("/config", [doc["config"]], False))
        found.append(("/layers/", doc["layers"], True))
    elif rules.index:
        found.append(("/manifests/", doc["manifests"], True))
    elif rules.media_type == mt.OCI_DESCRIPTOR:
        found.append(("", [doc], False))
    if isinstance(doc.get("subject"), dict):
        found.append(("/subject", [doc["subject"]], False))
    return found


def _check_descriptors(rules: _Rules, digest: str | None, doc: dict[str, Any]) -> None:
    """:func:`_check_descriptor` of every descriptor, in document order; a descriptor whose
    digest was already found good and whose size is in range is passed without making its
    JSON pointer (a 10,000-image ``ls`` checks 42,000 descriptors, most of them shared)."""
    for prefix, descriptors, numbered in _descriptor_lists(rules, doc):
        for i, desc in enumerate(descriptors):
            digest_text, size = desc.get("digest"), desc.get("size")
            if type(digest_text) is str and type(size) is int and 0 <= size <= MAX_SIZE and _good_digest(digest_text):
                continue
            _check_descriptor(_where(rules.media_type, digest), f"{prefix}{i}" if numbered else prefix, desc)


#: whether :meth:`Digest.parse` accepts a digest text (a regular expression, not a Digest made)
_good_digest = is_canonical


def _check_kind(rules: _Rules, digest: str | None, doc: dict[str, Any]) -> None:
    """containerd's ``validateMediaType`` rule: a manifest must not be an index, nor an index
    a manifest, by its shape or by the ``mediaType`` it declares. A declared type of the same
    kind that differs (an OCI manifest listed as a docker one) containerd takes, parsing by the
    descriptor's type, and so does this: refusing it refused images containerd runs."""
    own = doc.get("mediaType")
    if isinstance(own, str) and ((rules.manifest and own in mt.INDEX_TYPES) or (rules.index and own in mt.MANIFEST_TYPES)):
        raise FormatError(f"invalid {_where(rules.media_type, digest)}: document declares mediaType {own!r}")
    if rules.manifest and "manifests" in doc:
        raise FormatError(f"invalid {_where(rules.media_type, digest)}: expected a manifest but found an index")
    if rules.index and ("config" in doc or "layers" in doc):
        raise FormatError(f"invalid {_where(rules.media_type, digest)}: expected an index but found a manifest")


def _check_config(rules: _Rules, digest: str | None, doc: dict[str, Any]) -> None:
    diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
    for i, value in enumerate(diff_ids):
        if type(value) is str and _good_digest(value):
            continue
        try:
            Digest.parse(value)
        except InvalidDigestError as exc:
            raise FormatError(f"invalid {_where(rules.media_type, digest)}: at /rootfs/diff_ids/{i}: {exc}") from None
    env = (doc.get("config") or {}).get("Env") or []
    for i, value in enumerate(env):
        if not _ENV_RE.match(value):
            raise FormatError(
                f"invalid {_where(rules.media_type, digest)}: at /config/Env/{i}: {value[:80]!r} is not NAME=value")


class _Rules:
    """What validating a document of one media type takes, worked out once per media type (a
    large root's listing validates 20,000 documents of three or four types): its schema file
    and compiled check, and which of the kind rules apply."""

    __slots__ = ("media_type", "schema_file", "check", "manifest", "index", "config")

    def __init__(self, media_type: str, schema_file: str) -> None:
        self.media_type = media_type
        self.schema_file = schema_file
        self.check = compiled_check(SCHEMA_DIR, _SCHEMA_BASE + schema_file)
        self.manifest = mt.is_manifest(media_type)
        self.index = mt.is_index(media_type)
        self.config = mt.is_config(media_type)


#: :class:`_Rules` by media type, for the media types that have a schema
_RULES: dict[str, _Rules] = {}


def validate_object(media_type: str, doc: Any, *, digest: str | None = None) -> dict[str, Any]:
    """Validate an already-parsed document; returns it unchanged. See :func:`validate_json`.
    (The document's name for messages is made only when one is raised.)

    A document that declares another type of the same kind (an OCI manifest a descriptor
    lists as a docker one) is judged by the type it declares, as containerd parses it by the
    descriptor's and checks only the kind (:func:`_check_kind`)."""
    own = doc.get("mediaType") if isinstance(doc, dict) else None
    if own != media_type and isinstance(own, str) and (
            (media_type in mt.MANIFEST_TYPES and own in mt.MANIFEST_TYPES)
            or (media_type in mt.INDEX_TYPES and own in mt.INDEX_TYPES)):
        media_type = own
    rules = _RULES.get(media_type)
    if rules is None:
        if media_type == mt.DOCKER_MANIFEST_SCHEMA1:
            raise FormatError(f"invalid {_where(media_type, digest)}: Docker schema 1 manifests are not supported")
        schema_file = schema_for(media_type)
        if schema_file is None:
            raise FormatError(f"invalid {_where(media_type, digest)}: no schema for media type {media_type!r}")
        rules = _RULES[media_type] = _Rules(media_type, schema_file)
    if isinstance(doc, dict):
        _check_kind(rules, digest, doc)
    # the compiled check proves most documents valid cheaply; jsonschema judges the rest
    try:
        proven = rules.check(doc)
    except RecursionError:
        proven = False
    if not proven:
        error = next(iter(_validator(rules.schema_file).iter_errors(doc)), None)
        if error is not None:
            raise _schema_error(_where(media_type, digest), error)
    _check_descriptors(rules, digest, doc)
    if rules.config:
        _check_config(rules, digest, doc)
    return doc


def validate_json(media_type: str, data: bytes, *, digest: str | None = None) -> dict[str, Any]:
    """Parse ``data`` safely and validate it as a ``media_type`` document.

    Raises :class:`FormatError` naming the digest (when given), the media type and the first
    problem (JSON pointer + message). Returns the parsed document.
    """
    doc = _parse_json(data, media_type, digest)
    return validate_object(media_type, doc, digest=digest)


def parse_config_diff_ids(data: bytes, *, digest: str | None = None) -> list[str]:
    """``rootfs.diff_ids`` of an image config, each strictly parsed; [] when absent or null."""
    where = _where("image config", digest)
    doc = parse_json_bytes(data, what=where)
    if not isinstance(doc, dict):
        raise FormatError(f"invalid {where}: not a JSON object")
    rootfs = doc.get("rootfs")
    if rootfs is None:
        return []
    if not isinstance(rootfs, dict):
        raise FormatError(f"invalid {where}: at /rootfs: not an object")
    diff_ids = rootfs.get("diff_ids")
    if diff_ids is None:
        return []
    if not isinstance(diff_ids, list):
        raise FormatError(f"invalid {where}: at /rootfs/diff_ids: not an array")
    result = []
    for i, value in enumerate(diff_ids):
        try:
            result.append(str(Digest.parse(value)))
        except InvalidDigestError as exc:
            raise FormatError(f"invalid {where}: at /rootfs/diff_ids/{i}: {exc}") from None
    return result
