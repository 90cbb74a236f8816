"""Schema validation of real-shaped documents, hostile JSON, and the checks beyond the schema."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ctrconv.errors import FormatError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.validate import (
    MAX_DOCUMENT_SIZE,
    SCHEMA_FILES,
    SCHEMA_DIR,
    parse_config_diff_ids,
    parse_json_bytes,
    validate_json,
    validate_object,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def enc(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def oci_manifest(**extra: Any) -> dict[str, Any]:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 616},
        "layers": [
            {"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 1085453},
            {"mediaType": mt.OCI_LAYER_ZSTD, "digest": D3, "size": 313},
        ],
    }
    doc.update(extra)
    return doc


def docker_manifest() -> dict[str, Any]:
    # the shape ctr images import writes for a docker-archive
    return {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": D1, "size": 1470},
        "layers": [{"mediaType": mt.DOCKER_LAYER, "digest": D2, "size": 4608}],
    }


def oci_index(**extra: Any) -> dict[str, Any]:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": D1,
                "size": 657,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": D2,
                "size": 657,
                "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            },
            {  # buildkit attestation manifest: unknown platform, artifact annotations
                "mediaType": mt.OCI_MANIFEST,
                "digest": D3,
                "size": 839,
                "platform": {"architecture": "unknown", "os": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            },
        ],
    }
    doc.update(extra)
    return doc


def docker_list() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": mt.DOCKER_MANIFEST,
                "digest": D1,
                "size": 527,
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
            {
                "mediaType": mt.DOCKER_MANIFEST,
                "digest": D2,
                "size": 527,
                "platform": {
                    "architecture": "amd64",
                    "os": "windows",
                    "os.version": "10.0.17763.1879",
                    "features": ["sse4"],
                },
            },
        ],
    }


def docker_config() -> dict[str, Any]:
    # docker save output: nulls, container_config, docker_version
    return {
        "architecture": "amd64",
        "config": {
            "Hostname": "",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "Entrypoint": None,
            "Labels": None,
            "Volumes": None,
            "OnBuild": None,
            "Image": "sha256:" + "4" * 64,
        },
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"sh\"]"], "Labels": {}},
        "created": "2023-07-18T23:19:33.655005962Z",
        "docker_version": "20.10.23",
        "history": [{"created": "2023-07-18T23:19:33Z", "created_by": "ADD file", "empty_layer": True}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [D2]},
    }


def oci_config() -> dict[str, Any]:
    return {
        "created": "2024-01-01T00:00:00Z",
        "architecture": "arm",
        "variant": "v7",
        "os": "linux",
        "config": {"Env": ["A=b", "EMPTY="], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [D2, D3]},
    }


GOOD = [
    (mt.OCI_MANIFEST, oci_manifest()),
    (mt.OCI_MANIFEST, oci_manifest(layers=[])),  # scratch image / artifact
    (mt.OCI_MANIFEST, {k: v for k, v in oci_manifest().items() if k != "mediaType"}),
    (
        mt.OCI_MANIFEST,
        oci_manifest(
            artifactType="application/vnd.example.sbom+json",
            subject={"mediaType": mt.OCI_MANIFEST, "digest": D3, "size": 7},
            annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
            config={"mediaType": mt.OCI_EMPTY, "digest": D1, "size": 2, "data": "e30="},
        ),
    ),
    (mt.DOCKER_MANIFEST, docker_manifest()),
    (mt.OCI_INDEX, oci_index()),
    (mt.OCI_INDEX, {"schemaVersion": 2, "manifests": []}),
    (mt.DOCKER_MANIFEST_LIST, docker_list()),
    (mt.DOCKER_CONFIG, docker_config()),
    (mt.DOCKER_CONFIG, {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}),
    (mt.OCI_CONFIG, oci_config()),
    (mt.OCI_LAYOUT_HEADER, {"imageLayoutVersion": "1.0.0"}),
    (mt.OCI_DESCRIPTOR, {"mediaType": mt.OCI_LAYER, "digest": D1, "size": 0}),
    (
        mt.DOCKER_MANIFEST,
        dict(
            docker_manifest(),
            layers=[
                {
                    "mediaType": mt.DOCKER_LAYER_FOREIGN_GZIP,
                    "digest": D2,
                    "size": 10,
                    "urls": ["https://mcr.example/layer"],
                }
            ],
        ),
    ),
]


@pytest.mark.parametrize("media_type, doc", GOOD, ids=[f"{i}-{m.split('.')[-1]}" for i, (m, _) in enumerate(GOOD)])
def test_good_documents(media_type: str, doc: dict[str, Any]) -> None:
    assert validate_json(media_type, enc(doc), digest=D1) == doc


def _bad(media_type: str, doc: Any, *fragments: str, digest: str | None = None) -> None:
    with pytest.raises(FormatError) as info:
        validate_json(media_type, enc(doc) if not isinstance(doc, bytes) else doc, digest=digest)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_error_names_digest_media_type_and_path() -> None:
    doc = oci_manifest()
    doc["layers"][1]["size"] = -1
    _bad(mt.OCI_MANIFEST, doc, D3, mt.OCI_MANIFEST, "/layers/1/size", "minimum", digest=D3)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["layers"][0].update(digest="sha256:../../x"), "/layers/0/digest"),
        (lambda d: d["layers"][0].update(digest="sha256:" + "A" * 64), "/layers/0/digest"),
        (lambda d: d["layers"][0].update(digest="md5:" + "a" * 32), "unsupported digest algorithm"),
        (lambda d: d["config"].update(digest="sha256:" + "a" * 63), "/config/digest"),
        (lambda d: d["config"].update(size="616"), "/config/size"),
        (lambda d: d["config"].update(size=1.5), "/config/size"),
        (lambda d: d["config"].update(size=616.0), "/config/size"),
        (lambda d: d["config"].update(size=2**53), "/config/size"),
        (lambda d: d["config"].update(size=True), "/config/size"),
        (lambda d: d["config"].pop("mediaType"), "/config"),
        (lambda d: d["config"].update(mediaType="invalid"), "/config/mediaType"),
        (lambda d: d.update(schemaVersion=1), "/schemaVersion"),
        (lambda d: d.update(annotations={"a": 1}), "/annotations/a"),
        (lambda d: d.update(mediaType=mt.OCI_INDEX), "declares mediaType"),
        (lambda d: d.update(manifests=[]), "found an index"),
        (lambda d: d.pop("layers"), "layers"),
        (lambda d: d["layers"][0].update(urls=["not a uri"]), "/layers/0/urls/0"),
        (lambda d: d.update(subject={"mediaType": mt.OCI_MANIFEST, "digest": "sha1:ab", "size": 1}), "/subject"),
    ],
)
def test_bad_manifests(mutate: Any, fragment: str) -> None:
    doc = oci_manifest()
    mutate(doc)
    _bad(mt.OCI_MANIFEST, doc, fragment)


def test_index_must_not_look_like_a_manifest() -> None:
    _bad(mt.OCI_INDEX, dict(oci_index(), config={}), "found a manifest")
    _bad(mt.OCI_INDEX, oci_manifest(), "declares mediaType")


def test_docker_documents_require_their_media_type() -> None:
    doc = docker_manifest()
    del doc["mediaType"]
    _bad(mt.DOCKER_MANIFEST, doc, "mediaType")
    _bad(mt.DOCKER_MANIFEST_LIST, dict(docker_list(), mediaType=mt.OCI_MANIFEST), "declares mediaType")


def test_a_document_of_the_same_kind_under_another_type_is_judged_by_its_own() -> None:
    """An OCI manifest listed as a docker manifest (and the like): containerd parses it by the
    descriptor's type and checks only the kind, and imports, unpacks and runs it; refused here
    before (found by a red-team run). Judged by the type it declares instead."""
    assert validate_object(mt.DOCKER_MANIFEST, oci_manifest())
    assert validate_object(mt.OCI_MANIFEST, docker_manifest())
    assert validate_object(mt.DOCKER_MANIFEST_LIST, oci_index())
    bad = dict(oci_manifest(), layers="not a list")
    with pytest.raises(FormatError):
        validate_object(mt.DOCKER_MANIFEST, bad)


def test_config_checks() -> None:
    bad_diff = oci_config()
    bad_diff["rootfs"]["diff_ids"] = ["sha256:../../etc"]
    _bad(mt.OCI_CONFIG, bad_diff, "/rootfs/diff_ids/0")
    bad_env = oci_config()
    bad_env["config"]["Env"] = ["NOVALUE"]
    _bad(mt.OCI_CONFIG, bad_env, "/config/Env/0")
    no_diff_ids = oci_config()
    del no_diff_ids["rootfs"]["diff_ids"]
    _bad(mt.OCI_CONFIG, no_diff_ids, "diff_ids")


def test_unknown_and_schema1_media_types() -> None:
    _bad("application/vnd.example+json", {}, "no schema")
    _bad(mt.DOCKER_MANIFEST_SCHEMA1, {"schemaVersion": 1}, "schema 1")


# --- hostile JSON -------------------------------------------------------------------------


def test_deep_nesting_rejected_without_recursion_error() -> None:
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        data = opener * 100_000 + b"1" + closer * 100_000
        _bad(mt.OCI_MANIFEST, data, "nested deeper than 200")


def test_nesting_inside_strings_does_not_count() -> None:
    doc = oci_manifest(annotations={"x": "[" * 5000 + "{" * 5000})
    assert validate_json(mt.OCI_MANIFEST, enc(doc)) == doc
    assert parse_json_bytes(b"[" * 200 + b"]" * 200) is not None


def test_huge_deep_document_is_fast() -> None:
    half = MAX_DOCUMENT_SIZE // 2
    start = time.monotonic()
    _bad(mt.OCI_MANIFEST, b"[" * half + b"]" * half, "nested deeper")
    assert time.monotonic() - start < 10


def test_size_limit() -> None:
    _bad(mt.OCI_MANIFEST, b" " * (MAX_DOCUMENT_SIZE + 1), "exceeds")


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b'{"schemaVersion": 2, "x": "\xff\xfe"}', "UTF-8"),
        (b'\xef\xbb\xbf{"schemaVersion": 2}', "invalid JSON"),  # BOM: Go refuses it too
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"size": NaN}', "invalid JSON"),
        (b'{"size": Infinity}', "invalid JSON"),
        (b'{"size": 1e999}', "out of range"),
        (b'{"size": ' + b"9" * 5000 + b"}", "invalid JSON"),
        (b"", "invalid JSON"),
        (b"[1,", "invalid JSON"),
        (b"[1] [2]", "invalid JSON"),
    ],
)
def test_hostile_bytes(data: bytes, fragment: str) -> None:
    _bad(mt.OCI_MANIFEST, data, fragment, mt.OCI_MANIFEST)


def test_huge_integer_size_refused() -> None:
    doc = oci_manifest()
    doc["layers"][0]["size"] = 10**30
    _bad(mt.OCI_MANIFEST, doc, "/layers/0/size")


def test_non_object_top_level() -> None:
    _bad(mt.OCI_MANIFEST, [], "document root")
    _bad(mt.OCI_INDEX, "x", "document root")


def test_long_values_are_truncated_in_messages() -> None:
    doc = oci_manifest()
    doc["layers"][0]["digest"] = "sha256:" + "z" * 100_000
    with pytest.raises(FormatError) as info:
        validate_json(mt.OCI_MANIFEST, enc(doc))
    assert len(str(info.value)) < 600


def test_validate_object_and_schema_table() -> None:
    assert validate_object(mt.OCI_INDEX, oci_index()) == oci_index()
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(
        set(SCHEMA_FILES.values()) | {"defs.json"}
    )


def test_parse_config_diff_ids() -> None:
    assert parse_config_diff_ids(enc(oci_config())) == [D2, D3]
    assert parse_config_diff_ids(b'{"rootfs": {"type": "layers"}}') == []
    assert parse_config_diff_ids(b'{"rootfs": {"diff_ids": null}}') == []
    assert parse_config_diff_ids(b"{}") == []
    with pytest.raises(FormatError, match="diff_ids/1"):
        parse_config_diff_ids(json.dumps({"rootfs": {"diff_ids": [D1, "sha256:x"]}}).encode())
    with pytest.raises(FormatError, match="not an array"):
        parse_config_diff_ids(b'{"rootfs": {"diff_ids": "x"}}')
    with pytest.raises(FormatError, match="nested"):
        parse_config_diff_ids(b"[" * 1000 + b"]" * 1000)


@pytest.mark.parametrize("media_type", [mt.OCI_MANIFEST, mt.OCI_INDEX])
def test_descriptor_checks_skip_nothing_once_digests_are_remembered(media_type: str) -> None:
    """Descriptors whose digests were found good before pass without a JSON pointer being made;
    a bad digest or size at any position still fails with the pointer and message of the
    per-descriptor check, after the same digests were accepted in other documents."""
    from ctrconv.errors import InvalidDigestError
    from ctrconv.digest import Digest

    good = ["sha256:" + c * 64 for c in "456789a"]
    bad_digests = ["sha384:" + "a" * 64, "sha512:" + "b" * 96, "sha256:" + "c" * 65]
    key, where = ("layers", "image manifest") if media_type == mt.OCI_MANIFEST else ("manifests", "image index")
    item_type = mt.OCI_LAYER_GZIP if key == "layers" else mt.OCI_MANIFEST

    def doc_with(entries: list[dict[str, Any]]) -> dict[str, Any]:
        doc = oci_manifest() if key == "layers" else oci_index()
        doc[key] = entries
        return doc

    entries = [{"mediaType": item_type, "digest": d, "size": 10 + i} for i, d in enumerate(good)]
    validate_object(media_type, doc_with(entries))  # every digest now remembered as good
    for position in range(len(entries)):
        for bad in bad_digests:
            mutated = [dict(e) for e in entries]
            mutated[position]["digest"] = bad
            try:
                Digest.parse(bad)
            except InvalidDigestError as exc:
                reason = str(exc)
            with pytest.raises(FormatError) as info:
                validate_object(media_type, doc_with(mutated))
            message = str(info.value)
            assert f"at /{key}/{position}/digest: {reason}" in message, message
    if key == "layers":  # diff_ids: a bad one after remembered good ones is still found
        config = {"architecture": "amd64", "os": "linux",
                  "rootfs": {"type": "layers", "diff_ids": [*good, bad_digests[0]]}}
        with pytest.raises(FormatError, match=f"at /rootfs/diff_ids/{len(good)}: "):
            validate_object(mt.OCI_CONFIG, config)


def test_the_scanner_path_parses_and_words_as_the_decoder() -> None:
    """``parse_json_bytes`` calls the decoder's C scanner directly and leaves everything else
    (leading space, a BOM, extra data, any error) to ``JSONDecoder.decode``: on 3,000 damaged
    documents and the edge cases, the result or the error message is the decoder's."""
    import random

    from ctrconv.oci import validate

    def by_the_decoder(data: bytes) -> str:
        text = data.decode("utf-8")
        try:
            decoded = validate._DECODER.decode(text) if not text.startswith("\ufeff") else json.loads(text, **validate._DECODING)
        except ValueError as exc:
            return f"ERR JSON document: invalid JSON: {str(exc)[:200]}"
        return repr(validate._replace_lone_surrogates(decoded))

    cases = [b'{"a":1}', b'{"a":1}\n', b' {"a":1}', b'{"a":1} x', b'\xef\xbb\xbf{"a":1}', b'{"a":1,"a":2}', b'[1]  \r\n',
             b"", b"   ", b'{"a":NaN}', b'{"a":1e400}', b'"x"', b'{"a":"\\ud800"}', b'{"a":1}\x0c', b'{"a":"b\nc"}',
             b'{"a":1}{"b":2}', b"1 2", b'{"a":[1,2,{"b":null}]}\t', b"\n\n{}", b'{"a" :1 , "b":[ ]}']
    rng = random.Random(20261206)
    base = b'{"schemaVersion": 2, "layers": [{"size": 1, "digest": "sha256:ab"}], "x": "\\u00e9"}'
    for _ in range(3000):
        damaged = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at, how = rng.randrange(len(damaged)), rng.random()
            if how < 0.4:
                damaged[at] = rng.choice(b' {}[]",:0a\n\\ue-')
            elif how < 0.7:
                del damaged[at]
            else:
                damaged.insert(at, rng.choice(b' {}[]",:0a\n\\ue-'))
        cases.append(bytes(damaged))
    for data in cases:
        try:
            got = repr(parse_json_bytes(data))
        except FormatError as exc:
            got = f"ERR {exc}"
        assert got == by_the_decoder(data), data


def test_a_config_without_rootfs_is_valid_as_containerd_takes_it() -> None:
    """containerd imports, checks, lists and exports an image whose config has no ``rootfs``
    (hand-made scratch images, artifact tools), so ctrconv validates it too (found by a
    red-team run: ls said error, export and import refused it). An image with layers and no
    ``diff_ids`` still fails where it is unpacked (0 diff IDs for N layers), as containerd's does."""
    from ctrconv.oci.validate import parse_config_diff_ids, validate_json

    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    assert validate_json("application/vnd.oci.image.config.v1+json", config)["os"] == "linux"
    assert parse_config_diff_ids(config) == []
