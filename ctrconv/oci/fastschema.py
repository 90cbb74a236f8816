"""A compiled, one-sided JSON Schema check: "certainly valid" in microseconds, or "ask jsonschema".

``jsonschema`` spends about a millisecond per manifest or config, most of it resolving ``$ref``s
through ``referencing`` on every document; a root with 10,000 images has 20,000 of them. This
module compiles ctrconv's own schemas (``schemas/*.json``) once into plain Python closures for
the keywords they use (``type``, ``properties``, ``required``, ``additionalProperties``,
``items``, ``pattern``, ``enum``, ``const``, ``minimum``, ``maximum``, ``allOf``, ``anyOf``,
``$ref``). The check is **one-sided**: :func:`certainly_valid` returning True means jsonschema
would find no error; False means only "not proven here" and the caller runs jsonschema, which
stays the one source of verdicts and error messages. Every keyword it does not know (and every
case it does not mirror exactly, such as an ``enum`` match between ``1`` and ``1.0``) compiles
to "not proven", so a schema change can make validation slower, never laxer.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urldefrag, urljoin

Check = Callable[[Any], bool]

#: keywords that never affect validity (annotations and containers of definitions)
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "definitions", "title", "description", "$comment",
                          "examples", "default", "deprecated", "readOnly", "writeOnly"})
_SCALARS = (str, int, bool, type(None))


def _never(_: Any) -> bool:
    return False


def _always(_: Any) -> bool:
    return True


def _is_type(name: str) -> Check | None:
    """jsonschema's draft 2020-12 type checker, per type name (None: unknown name)."""
    return {
        "string": lambda v: isinstance(v, str),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer()),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }.get(name)


def _same(value: Any, allowed: Any) -> bool:
    """A conservative ``equal``: scalars of exactly one type only (True vs 1 never match)."""
    return type(value) is type(allowed) and isinstance(value, _SCALARS) and value == allowed


def _all_of(checks: list[Check]) -> Check:
    def check(v: Any) -> bool:
        for c in checks:
            if not c(v):
                return False
        return True
    return check


def _any_of(checks: list[Check]) -> Check:
    def check(v: Any) -> bool:
        for c in checks:
            if c(v):
                return True
        return False
    return check


def _properties(props: list[tuple[str, Check]]) -> Check:
    def check(v: Any) -> bool:
        if isinstance(v, dict):
            for name, c in props:
                if name in v and not c(v[name]):
                    return False
        return True
    return check


def _items(item: Check) -> Check:
    def check(v: Any) -> bool:
        if isinstance(v, list):
            for x in v:
                if not item(x):
                    return False
        return True
    return check


class _Compiler:
    """Compiles schema nodes of a set of schema documents keyed by ``$id``."""

    def __init__(self, documents: dict[str, Any]) -> None:
        self.documents = documents
        self.compiled: dict[str, Check] = {}

    def ref(self, url: str) -> Check:
        """The check of the node at ``url`` (``document#json-pointer``), compiled once; a cell
        stands in while it compiles so recursive references terminate."""
        if url in self.compiled:
            return self.compiled[url]
        cell: list[Check] = [_never]
        self.compiled[url] = lambda v: cell[0](v)
        base, fragment = urldefrag(url)
        node = self.documents.get(base)
        for part in (fragment.split("/")[1:] if fragment else []):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) else None
        cell[0] = self.node(node, base) if node is not None else _never
        self.compiled[url] = cell[0]
        return cell[0]

    def node(self, schema: Any, base: str) -> Check:
        if schema is True:
            return _always
        if not isinstance(schema, dict) or ("$id" in schema and schema["$id"] != base):
            return _never  # boolean false, or a nested base URI change: leave it to jsonschema
        checks: list[Check] = []
        for key, value in schema.items():
            if key in _ANNOTATIONS:
                continue
            check = self.keyword(key, value, schema, base)
            if check is None:
                return _never
            checks.append(check)
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        return _all_of(checks)

    def keyword(self, key: str, value: Any, schema: dict[str, Any], base: str) -> Check | None:
        """One keyword's check, or None when it is not one this module mirrors exactly."""
        if key == "$ref" and isinstance(value, str):
            target = urljoin(base, value)
            resolved: list[Check] = []

            def follow(v: Any) -> bool:
                if not resolved:
                    resolved.append(self.ref(target))
                return resolved[0](v)
            return follow
        if key == "type":
            names = value if isinstance(value, list) else [value]
            types = [_is_type(n) for n in names if isinstance(n, str)]
            if not types or len(types) != len(names) or any(t is None for t in types):
                return None
            return types[0] if len(types) == 1 else _any_of(types)  # type: ignore[arg-type]
        if key == "properties" and isinstance(value, dict):
            return _properties([(name, self.node(sub, base)) for name, sub in value.items()])
        if key == "required" and isinstance(value, list):
            return lambda v: not isinstance(v, dict) or all(k in v for k in value)
        if key == "additionalProperties":
            if "patternProperties" in schema:
                return None
            known = set(schema.get("properties") or ())
            extra = self.node(value, base)
            return lambda v: not isinstance(v, dict) or all(extra(v[k]) for k in v if k not in known)
        if key == "items" and (isinstance(value, dict) or isinstance(value, bool)) and "prefixItems" not in schema:
            return _items(self.node(value, base))
        if key == "pattern" and isinstance(value, str):
            rx = re.compile(value)
            return lambda v: not isinstance(v, str) or rx.search(v) is not None
        if key == "enum" and isinstance(value, list):
            return lambda v: any(_same(v, e) for e in value)
        if key == "const":
            return lambda v: _same(v, value)
        if key in ("minimum", "maximum") and type(value) is int:
            number = _is_type("number")
            assert number is not None
            if key == "minimum":
                return lambda v: not number(v) or v >= value
            return lambda v: not number(v) or v <= value
        if key in ("allOf", "anyOf") and isinstance(value, list) and value:
            subs = [self.node(s, base) for s in value]
            return _all_of(subs) if key == "allOf" else _any_of(subs)
        return None


@lru_cache(maxsize=None)
def _compiler(schema_dir: str) -> _Compiler:
    documents: dict[str, Any] = {}
    for path in sorted(Path(schema_dir).glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(contents, dict) and isinstance(contents.get("$id"), str):
            documents[contents["$id"]] = contents
    return _Compiler(documents)


def certainly_valid(schema_dir: Path, schema_id: str, doc: Any) -> bool:
    """True only when the schema ``schema_id`` (a ``$id`` under ``schema_dir``) accepts ``doc``
    for certain; False means "run the full validator"."""
    try:
        return _compiler(str(schema_dir)).ref(schema_id)(doc)
    except RecursionError:
        return False
