"""A compiled, one-sided JSON Schema check: "certainly valid" in microseconds, or "ask jsonschema".

``jsonschema`` spends about a millisecond per manifest or config, most of it resolving ``$ref``s
through ``referencing`` on every document; a root with 10,000 images has 20,000 of them. This
module compiles ctrconv's own schemas (``schemas/*.json``) once into generated Python functions
(one per schema node, leaf checks inlined: about half the time of a tree of closures) for
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

from ctrconv import codecache
from ctrconv.digest import is_canonical

Check = Callable[[Any], bool]

#: keywords that never affect validity (annotations and containers of definitions)
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "definitions", "title", "description", "$comment",
                          "examples", "default", "deprecated", "readOnly", "writeOnly"})
_SCALARS = (str, int, bool, type(None))


#: draft 2020-12 type names as Python expressions over ``{v}`` (jsonschema's type checker)
_TYPE_EXPRESSIONS = {
    "string": "isinstance({v}, str)",
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "null": "{v} is None",
    "boolean": "isinstance({v}, bool)",
    # exact types: a parsed JSON number is an int or a float (True is no integer); an int
    # subclass is not proven here, only sent to jsonschema (one type() where isinstance took
    # three calls: 0.04 instead of 0.12 us for each of a document's sizes)
    "integer": "(type({v}) is int or type({v}) is float and {v}.is_integer())",
    "number": "(type({v}) is int or type({v}) is float)",
}
#: keywords whose check is one expression over the value (no sub-schema): inlined where used
_LEAF_KEYWORDS = frozenset({"type", "pattern", "enum", "const", "minimum", "maximum"})


def _same(value: Any, allowed: Any) -> bool:
    """A conservative ``equal``: scalars of exactly one type only (True vs 1 never match)."""
    return type(value) is type(allowed) and isinstance(value, _SCALARS) and value == allowed


def _enum(value: Any, allowed: frozenset[tuple[type, Any]]) -> bool:
    """``value`` is :func:`_same` as one of the values whose (type, value) pairs are ``allowed``."""
    return isinstance(value, _SCALARS) and (type(value), value) in allowed


#: ``pattern``s whose language holds every text :func:`~ctrconv.digest.is_canonical` accepts:
#: the OCI digest grammar (``algorithm:encoded``; a canonical digest is a lower-case algorithm
#: name of letters and digits, ``:``, and lower-case hex, all within its character classes).
#: A canonical digest passes them without a search, and its check is remembered where the
#: descriptor check and the content lookup ask again. Any other pattern is searched.
DIGEST_PATTERNS = frozenset({"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"})


class _Matches:
    """A ``pattern`` keyword's regular expression with the strings it matched remembered: the
    same media types, digests of shared layers and annotation keys recur in every document of a
    large root, and a set lookup costs a tenth of a search. Only matches are kept (a mismatch
    sends the document to jsonschema anyway), at most :attr:`LIMIT` of them. For a digest
    pattern (:data:`DIGEST_PATTERNS`) a canonical digest matches without a search: a large
    root's digests are mostly each seen once, after the remembered ones fill the set."""

    LIMIT = 4096
    __slots__ = ("pattern", "found", "holds_canonical_digests")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.found: set[str] = set()
        self.holds_canonical_digests = pattern.pattern in DIGEST_PATTERNS

    def search(self, text: str) -> bool:
        if self.holds_canonical_digests and is_canonical(text):
            return True
        if self.pattern.search(text) is None:
            return False
        if len(self.found) < self.LIMIT:
            self.found.add(text)
        return True


#: an expression of a schema node over a variable name
Expression = Callable[[str], str]


class _Compiler:
    """Compiles schema nodes of a set of schema documents keyed by ``$id`` into Python source:
    one function per node with sub-schemas (a ``$ref`` is a call of its target's function, so
    recursive references need nothing more), a leaf node (type, pattern, enum, ...) inlined as
    an expression where it is used. The functions are made by one ``exec`` when first asked for."""

    def __init__(self, documents: dict[str, Any]) -> None:
        self.documents = documents
        self.refs: dict[str, Expression] = {}
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"_same": _same, "_enum": _enum}
        self.checks: dict[str, Check] = {}

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.names)}"
        self.names[name] = value
        return name

    def check(self, url: str) -> Check:
        """The check of the node at ``url`` (``document#json-pointer``), made once."""
        if url not in self.checks:
            expression = self.ref(url)
            name = f"_top{len(self.checks)}"
            self.lines += [f"def {name}(v):", f"    return {expression('v')}", ""]
            # noqa: S102 - source generated above from the schemas; its code kept between runs
            exec(codecache.compiled("\n".join(self.lines)), self.names)  # noqa: S102
            self.lines = []
            self.checks[url] = self.names[name]
        return self.checks[url]

    def ref(self, url: str) -> Expression:
        if url in self.refs:
            return self.refs[url]
        base, fragment = urldefrag(url)
        node = self.documents.get(base)
        for part in (fragment.split("/")[1:] if fragment else []):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            self.refs[url] = _false
            return _false
        alias = self._alias(node, base)
        if alias is not None:
            self.refs[url] = _false  # a cycle of bare references proves nothing
            self.refs[url] = self.ref(alias)
            return self.refs[url]
        if self._is_leaf(node, base):
            self.refs[url] = self.node(node, base)
            return self.refs[url]
        name = f"_f{len(self.names)}"
        self.names[name] = None  # taken; the function is defined below
        self.refs[url] = lambda v: f"{name}({v})"  # a reference back to this node calls it
        self.function(name, node, base)
        return self.refs[url]

    def _alias(self, schema: Any, base: str) -> str | None:
        """The target of a node that is nothing but a ``$ref`` (its check is the target's)."""
        if not isinstance(schema, dict) or ("$id" in schema and schema["$id"] != base):
            return None
        keys = [key for key in schema if key not in _ANNOTATIONS]
        if keys != ["$ref"] or not isinstance(schema["$ref"], str):
            return None
        return urljoin(base, schema["$ref"])

    def _is_leaf(self, schema: Any, base: str) -> bool:
        return not isinstance(schema, dict) or ("$id" in schema and schema["$id"] != base) or all(
            key in _ANNOTATIONS or key in _LEAF_KEYWORDS for key in schema)

    def node(self, schema: Any, base: str) -> Expression:
        """The node's check as an expression (a leaf inline, anything else a function call)."""
        if schema is True:
            return _true
        if not isinstance(schema, dict) or ("$id" in schema and schema["$id"] != base):
            return _false  # boolean false, or a nested base URI change: leave it to jsonschema
        alias = self._alias(schema, base)
        if alias is not None:
            return self.ref(alias)
        if not self._is_leaf(schema, base):
            name = f"_f{len(self.names)}"
            self.names[name] = None
            self.function(name, schema, base)
            return lambda v: f"{name}({v})"
        parts = []
        known = _known_type(schema)
        for key, value in sorted(schema.items(), key=lambda kv: kv[0] != "type"):  # the type first
            if key in _ANNOTATIONS:
                continue
            part = self.leaf(key, value, known)
            if part is None:
                return _false
            parts.append(part)
        if not parts:
            return _true
        return lambda v: " and ".join(f"({p.format(v=v)})" for p in parts)

    def leaf(self, key: str, value: Any, known: str | None = None) -> str | None:
        """A leaf keyword as an expression template over ``{v}``; None when not mirrored exactly.
        ``known``: the node's one ``type``, checked before this keyword (a pattern then needs no
        string test, a bound no number test)."""
        if key == "type":
            names = value if isinstance(value, list) else [value]
            types = [_TYPE_EXPRESSIONS.get(n) if isinstance(n, str) else None for n in names]
            if not types or any(t is None for t in types):
                return None
            return " or ".join(f"({t})" for t in types)  # type: ignore[str-bytes-safe]
        if key == "pattern" and isinstance(value, str):
            matches = self.constant(_Matches(re.compile(value)))
            search = f"{{v}} in {matches}.found or {matches}.search({{v}})"
            return search if known == "string" else f"not isinstance({{v}}, str) or {search}"
        if key == "enum" and isinstance(value, list):
            allowed = frozenset((type(e), e) for e in value if isinstance(e, _SCALARS))
            return f"_enum({{v}}, {self.constant(allowed)})"
        if key == "const":
            return f"_same({{v}}, {self.constant(value)})"
        if key in ("minimum", "maximum") and type(value) is int:
            bound = f"{{v}} {'>=' if key == 'minimum' else '<='} {value}"
            return bound if known in ("integer", "number") else f"not {_TYPE_EXPRESSIONS['number']} or {bound}"
        return None

    def function(self, name: str, schema: dict[str, Any], base: str) -> None:
        """``def name(v)``: False at the first keyword that fails, True after the last. The type
        is checked first; when it is one type, what follows needs no test of it again."""
        body: list[str] = []
        known = _known_type(schema)
        for key, value in sorted(schema.items(), key=lambda kv: kv[0] != "type"):  # the type first
            if key in _ANNOTATIONS:
                continue
            lines = self.keyword(key, value, schema, base, known)
            if lines is None:
                body = ["return False"]
                break
            body += lines
        self.lines += [f"def {name}(v):", *(f"    {line}" for line in body), "    return True", ""]

    def keyword(self, key: str, value: Any, schema: dict[str, Any], base: str,
                known: str | None = None) -> list[str] | None:
        """One keyword's statements (each returns False when it fails); None when not mirrored.
        ``known``: the node's one type, already checked (no guard of it needed)."""
        dicts, lists = known == "object", known == "array"
        if key in _LEAF_KEYWORDS:
            leaf = self.leaf(key, value, known if key != "type" else None)
            return None if leaf is None else [f"if not ({leaf.format(v='v')}): return False"]
        if key == "$ref" and isinstance(value, str):
            return [f"if not ({self.ref(urljoin(base, value))('v')}): return False"]
        if key == "properties" and isinstance(value, dict):
            lines = []
            for name, sub in value.items():
                check = self.node(sub, base)
                lines += [f"if {name!r} in v:", f"    x = v[{name!r}]", f"    if not ({check('x')}): return False"]
            return _guarded("if isinstance(v, dict):", lines, dicts)
        if key == "required" and isinstance(value, list) and all(isinstance(k, str) for k in value):
            guard = "" if dicts else "isinstance(v, dict) and "
            return [f"if {guard}not v.keys() >= {self.constant(frozenset(value))}: return False"]
        if key == "additionalProperties":
            if "patternProperties" in schema:
                return None
            named = self.constant(frozenset(schema.get("properties") or ()))
            check = self.node(value, base)
            lines = ["for k, x in v.items():", f"    if k not in {named} and not ({check('x')}): return False"]
            return _guarded("if isinstance(v, dict):", lines, dicts)
        if key == "items" and (isinstance(value, dict) or isinstance(value, bool)) and "prefixItems" not in schema:
            check = self.node(value, base)
            lines = ["for x in v:", f"    if not ({check('x')}): return False"]
            return _guarded("if isinstance(v, list):", lines, lists)
        if key in ("allOf", "anyOf") and isinstance(value, list) and value:
            subs = [self.node(s, base)("v") for s in value]
            if key == "allOf":
                return [f"if not ({sub}): return False" for sub in subs]
            return [f"if not ({' or '.join(f'({sub})' for sub in subs)}): return False"]
        return None


def _known_type(schema: dict[str, Any]) -> str | None:
    """The node's ``type`` when it is one type whose check this module writes (it is checked
    before the node's other keywords), else None."""
    named = schema.get("type")
    return named if isinstance(named, str) and named in _TYPE_EXPRESSIONS else None


def _guarded(guard: str, lines: list[str], known: bool) -> list[str]:
    """``lines`` under ``guard`` (a keyword that applies to one type only), or as they are when
    the node's type is known to be that one; [] for no lines."""
    if not lines:
        return []
    return lines if known else [guard, *(f"    {line}" for line in lines)]


def _true(_: str) -> str:
    return "True"


def _false(_: str) -> str:
    return "False"


@lru_cache(maxsize=None)
def _compiler(schema_dir: str) -> _Compiler:
    documents: dict[str, Any] = {}
    for path in sorted(Path(schema_dir).glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(contents, dict) and isinstance(contents.get("$id"), str):
            documents[contents["$id"]] = contents
    return _Compiler(documents)


def compiled_check(schema_dir: Path, schema_id: str) -> Check:
    """The compiled check of the schema ``schema_id`` (a ``$id`` under ``schema_dir``), for a
    caller that runs it many times: :func:`certainly_valid` without the lookup, and without
    its guard (a document nested past the recursion limit raises ``RecursionError``)."""
    return _compiler(str(schema_dir)).check(schema_id)


def certainly_valid(schema_dir: Path, schema_id: str, doc: Any) -> bool:
    """True only when the schema ``schema_id`` (a ``$id`` under ``schema_dir``) accepts ``doc``
    for certain; False means "run the full validator"."""
    try:
        return compiled_check(schema_dir, schema_id)(doc)
    except RecursionError:
        return False
