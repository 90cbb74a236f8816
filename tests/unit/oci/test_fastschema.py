"""The compiled schema check (``ctrconv/oci/fastschema.py``) is one-sided: it may call a document
"certainly valid" only when jsonschema finds no error in it.

Checked differentially: realistic documents of every media type ctrconv validates, and many
mutations of them (every value replaced by values of other types, every key removed, unknown
keys added), each judged by both. The real documents must be proven valid by the fast check
(otherwise it would never be used and this test would prove nothing), and a good share of the
mutations must be rejected by jsonschema (otherwise the mutations would prove nothing).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterator

import pytest

from ctrconv.errors import FormatError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.fastschema import certainly_valid
from ctrconv.oci.validate import _SCHEMA_BASE, SCHEMA_DIR, _validator, schema_for, validate_object

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
PLATFORM = {"architecture": "arm64", "os": "linux", "variant": "v8", "os.features": ["x"], "os.version": "1"}
DESC = {"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 12, "urls": ["https://x.example/a"],
        "annotations": {"k": "v"}, "data": "aGk=", "artifactType": "application/x.y"}

DOCUMENTS: dict[str, dict[str, Any]] = {
    mt.OCI_MANIFEST: {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                      "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 100},
                      "layers": [DESC], "annotations": {"org.opencontainers.image.created": "now"},
                      "subject": {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 3}},
    mt.OCI_INDEX: {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                   "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 10, "platform": PLATFORM}],
                   "annotations": {"a": "b"}},
    mt.OCI_CONFIG: {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Entrypoint": None,
                               "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "Labels": {"a": "b"},
                               "User": "0", "WorkingDir": "/", "StopSignal": "SIGTERM"},
                    "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
                    "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "x", "empty_layer": True,
                                 "comment": "c", "author": "me"}]},
    mt.OCI_DESCRIPTOR: dict(DESC),
    mt.OCI_LAYOUT_HEADER: {"imageLayoutVersion": "1.0.0"},
    mt.DOCKER_MANIFEST_LIST: {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST,
                              "manifests": [{"mediaType": mt.DOCKER_MANIFEST, "digest": D1, "size": 5,
                                             "platform": {**PLATFORM, "features": ["sse4"]}}]},
    mt.DOCKER_MANIFEST: {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
                         "config": {"mediaType": mt.DOCKER_CONFIG, "digest": D1, "size": 7},
                         "layers": [{"mediaType": mt.DOCKER_LAYER_GZIP, "digest": D2, "size": 9}]},
    mt.DOCKER_CONFIG: {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=b"], "Cmd": None},
                       "container_config": {"Cmd": ["x"]}, "docker_version": "20.10",
                       "rootfs": {"type": "layers", "diff_ids": [D1]}},
}

REPLACEMENTS: list[Any] = [None, True, False, 0, 1, -1, 1.0, 2.5, 2**63, "", "x", "PATH=/bin", D1, "a/b",
                           [], ["x"], [1], {}, {"k": "v"}, {"k": 1}]


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(doc)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _mutations(doc: dict[str, Any]) -> Iterator[Any]:
    for path in _paths(doc):
        for value in REPLACEMENTS:
            yield _set(doc, path, value)
        if path:
            out = copy.deepcopy(doc)
            node = out
            for part in path[:-1]:
                node = node[part]
            del node[path[-1]]
            yield out
    for path in _paths(doc):
        out = copy.deepcopy(doc)
        node = out
        for part in path:
            node = node[part]
        if isinstance(node, dict):
            node["zz-unknown"] = 1
            yield out


@pytest.mark.parametrize("media_type", sorted(DOCUMENTS))
def test_fast_check_never_accepts_what_jsonschema_rejects(media_type: str) -> None:
    schema_file = schema_for(media_type)
    assert schema_file is not None
    schema_id = _SCHEMA_BASE + schema_file
    validator = _validator(schema_file)
    original = DOCUMENTS[media_type]
    assert next(iter(validator.iter_errors(original)), None) is None, "the seed document must be valid"
    assert certainly_valid(SCHEMA_DIR, schema_id, original), "the fast check must prove real documents valid"
    proven = rejected = 0
    for variant in _mutations(original):
        valid = next(iter(validator.iter_errors(variant)), None) is None
        fast = certainly_valid(SCHEMA_DIR, schema_id, variant)
        assert not fast or valid, f"fast check accepted a document jsonschema rejects: {variant!r}"
        proven += fast
        rejected += not valid
    assert proven >= 1 and rejected >= 1, (proven, rejected)


def test_verdicts_and_messages_are_jsonschemas() -> None:
    """A document the fast check cannot prove still gets jsonschema's error message."""
    doc = _set(DOCUMENTS[mt.OCI_MANIFEST], ("layers", 0, "size"), "12")
    with pytest.raises(FormatError, match=r"at /layers/0/size: '12' is not of type 'integer'"):
        validate_object(mt.OCI_MANIFEST, doc, digest=D1)


def test_recursive_and_circular_references_compile() -> None:
    """A schema that refers to itself checks nested documents to any depth; a cycle of bare
    references (which jsonschema cannot judge either) proves nothing instead of hanging."""
    from ctrconv.oci.fastschema import _Compiler

    tree = {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "child": {"$ref": "#"}},
            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}, "c": {"$ref": "#/$defs/a"}}}
    compiler = _Compiler({"t": tree})
    check = compiler.check("t")
    assert check({"name": "x", "child": {"name": "y", "child": {"name": "z"}}})
    assert not check({"name": "x", "child": {"name": "y", "child": {"name": 1}}})
    assert not check({"name": "x", "child": {"child": {"name": "z"}}})
    assert not compiler.check("t#/$defs/c")({})
    assert not compiler.check("t#/$defs/missing")({})


def test_a_pattern_remembers_only_what_it_matched_and_at_most_its_limit(monkeypatch) -> None:
    """A ``pattern``'s matches are remembered (the same media types and digests recur in every
    document); a string it refused is searched again each time and still refused, and the
    memory stops growing at its limit while the verdicts stay the regular expression's."""
    from ctrconv.oci import fastschema
    from ctrconv.oci.fastschema import _Compiler

    monkeypatch.setattr(fastschema._Matches, "LIMIT", 3)
    compiler = _Compiler({"t": {"type": "object", "properties": {"d": {"type": "string", "pattern": "^sha256:[a-f0-9]{4}$"}}}})
    check = compiler.check("t")
    matches = next(v for v in compiler.names.values() if isinstance(v, fastschema._Matches))
    for _ in range(2):
        assert check({"d": "sha256:abcd"}) and not check({"d": "sha256:ABCD"}) and not check({"d": "sha256:abc"})
    assert matches.found == {"sha256:abcd"}
    for text in ("sha256:0001", "sha256:0002", "sha256:0003", "sha256:0004"):
        assert check({"d": text})
    assert len(matches.found) == 3 and check({"d": "sha256:0004"}) and not check({"d": "sha256:zzzz"})


def test_a_digest_pattern_passes_canonical_digests_without_a_search(monkeypatch) -> None:
    """The schemas' digest pattern is one the compiled check knows holds every canonical digest
    (so ``ls`` of a large root does not search each new digest's text): each pattern in
    :data:`DIGEST_PATTERNS` matches canonical digests of every algorithm, and a text that is not
    canonical is still searched (and judged by the pattern)."""
    import random

    from ctrconv.digest import ALGORITHMS
    from ctrconv.oci import fastschema
    from ctrconv.oci.fastschema import DIGEST_PATTERNS, _Compiler, _compiler

    _compiler(str(SCHEMA_DIR)).check(_SCHEMA_BASE + schema_for(mt.OCI_MANIFEST))
    compiled = [v for v in _compiler(str(SCHEMA_DIR)).names.values() if isinstance(v, fastschema._Matches)]
    assert any(m.holds_canonical_digests for m in compiled), "the schemas' digest pattern is no longer known"
    rng = random.Random(11)
    for pattern in DIGEST_PATTERNS:
        regex = re.compile(pattern)
        for algorithm, length in ALGORITHMS.items():
            for _ in range(200):
                assert regex.search(f"{algorithm}:{rng.getrandbits(4 * length):0{length}x}")
    searched: list[str] = []
    compiler = _Compiler({"t": {"type": "string", "pattern": next(iter(DIGEST_PATTERNS))}})
    check = compiler.check("t")
    matches = next(v for v in compiler.names.values() if isinstance(v, fastschema._Matches))
    real = matches.pattern
    monkeypatch.setattr(matches, "pattern", type("Spy", (), {
        "search": lambda self, text: searched.append(text) or real.search(text), "pattern": real.pattern})())
    assert check("sha256:" + "ab" * 32) and searched == []
    assert check("sha256:" + "AB" * 32) and searched == ["sha256:" + "AB" * 32]  # the pattern allows it
    assert not check("sha256:../x")
