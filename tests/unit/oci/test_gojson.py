"""Go-compatible JSON output (``oci/gojson.py``) for the documents ctrconv makes, and media types."""

from __future__ import annotations

import pytest

from ctrconv.errors import FormatError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.gojson import marshal_go
from ctrconv.sinks._layout import index_json, name_entry

# index.json exactly as ctr images export (containerd 1.6.20) wrote it (docs §7.1)
CTR_INDEX_JSON = (
    b'{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    b'"digest":"sha256:bddf80' + b"0" * 58 + b'","size":503,"annotations":{"io.containerd.image.name":'
    b'"docker.io/library/test:v1","org.opencontainers.image.ref.name":"v1"}}]}'
)


def test_index_json_matches_ctr_byte_for_byte() -> None:
    """Descriptor fields in ``ocispec.Descriptor`` order, annotation keys sorted, no spaces, no newline."""
    target = {"size": 503, "digest": "sha256:bddf80" + "0" * 58, "mediaType": mt.OCI_MANIFEST}
    assert index_json([name_entry(target, "docker.io/library/test:v1")], media_type=False) == CTR_INDEX_JSON


def test_name_entry_keeps_urls_annotations_and_platform_in_go_order() -> None:
    desc = {"platform": {"os": "linux", "architecture": "amd64"}, "annotations": {"z": "1", "a": "2"},
            "urls": ["https://x"], "size": 1, "digest": "sha256:" + "1" * 64, "mediaType": mt.OCI_MANIFEST}
    entry = name_entry(desc, "docker.io/library/a:1")
    assert list(entry) == ["mediaType", "digest", "size", "urls", "annotations", "platform"]
    assert list(entry["annotations"]) == sorted(entry["annotations"]) and entry["annotations"]["z"] == "1"


def test_marshal_go_escaping() -> None:
    assert marshal_go({"a": "<x>&\u2028\n\t\r\b\x01\"\\é"}) == (
        b'{"a":"\\u003cx\\u003e\\u0026\\u2028\\n\\t\\r\\u0008\\u0001\\"\\\\\xc3\xa9"}'
    )
    assert marshal_go([1, True, None, "\ud800"]) == b'[1,true,null,"\xef\xbf\xbd"]'
    with pytest.raises(TypeError):
        marshal_go({"f": 1.5})


def test_marshal_go_long_lists_encode_the_same_as_short_ones() -> None:
    """Lists over ``_JOIN_ITEMS_OVER`` elements are encoded one element at a time (bounded
    pieces in memory): the bytes are those of the short-list path, nested lists and escaping
    included, and of Python's compact encoding where the two agree (no escapes)."""
    import json

    from ctrconv.oci import gojson

    item = {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 7,
            "annotations": {"n": "<a&b>"}, "list": [1, [2, None], True]}
    items = [dict(item, size=i) for i in range(gojson._JOIN_ITEMS_OVER * 3)]
    long = marshal_go({"manifests": items})
    short = b"".join([b'{"manifests":[', b",".join(marshal_go(i) for i in items), b"]}"])
    assert long == short
    plain = [{"digest": "sha256:" + "b" * 64, "size": i} for i in range(200)]
    assert marshal_go(plain) == json.dumps(plain, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "media_type, compression, layer",
    [
        (mt.OCI_LAYER, None, True),
        (mt.OCI_LAYER_GZIP, "gzip", True),
        (mt.OCI_LAYER_ZSTD, "zstd", True),
        (mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP, "gzip", True),
        (mt.OCI_LAYER_GZIP + "+encrypted", "gzip", True),  # suffixes are sorted, last wins
        (mt.DOCKER_LAYER, "unknown", True),
        (mt.DOCKER_LAYER_GZIP, "gzip", True),
        (mt.DOCKER_LAYER_FOREIGN_GZIP, "gzip", True),
        (mt.DOCKER_LAYER_GZIP + "+encrypted", None, True),
    ],
)
def test_layer_types(media_type: str, compression: str | None, layer: bool) -> None:
    assert mt.layer_compression(media_type) == compression
    assert mt.is_layer(media_type) is layer


def test_predicates() -> None:
    assert mt.is_index(mt.OCI_INDEX) and mt.is_index(mt.DOCKER_MANIFEST_LIST)
    assert mt.is_manifest(mt.OCI_MANIFEST) and mt.is_manifest(mt.DOCKER_MANIFEST)
    assert not mt.is_manifest(mt.DOCKER_MANIFEST_SCHEMA1)
    assert mt.is_config(mt.OCI_CONFIG) and mt.is_config(mt.DOCKER_CONFIG)
    assert not mt.is_config(mt.OCI_EMPTY)
    assert not mt.is_layer(mt.OCI_CONFIG)
    assert mt.is_layer("application/vnd.oci.image.layer.v1.tar+foo")
    assert mt.is_nondistributable(mt.DOCKER_LAYER_FOREIGN)
    assert mt.is_nondistributable(mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD)
    assert not mt.is_nondistributable(mt.OCI_LAYER_GZIP)
    with pytest.raises(FormatError):
        mt.layer_compression(mt.OCI_CONFIG)
