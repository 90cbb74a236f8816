"""Descriptor/Manifest/Index/ImageConfig models, Go-compatible JSON output, media types."""

from __future__ import annotations

import json

import pytest

from ctrconv.digest import Digest
from ctrconv.errors import DigestMismatchError, FormatError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.model import Descriptor, ImageConfig, Index, Manifest, marshal_go, parse_blob
from ctrconv.oci.platform import Platform

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64

# index.json exactly as ctr images export (containerd 1.6.20) wrote it (docs §7.1)
CTR_INDEX_JSON = (
    b'{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    b'"digest":"sha256:bddf80' + b"0" * 58 + b'","size":503,"annotations":{"io.containerd.image.name":'
    b'"docker.io/library/test:v1","org.opencontainers.image.ref.name":"v1"}}]}'
)


def test_descriptor_to_json_matches_go_marshal() -> None:
    desc = Descriptor(
        mt.OCI_MANIFEST,
        Digest.parse("sha256:bddf80" + "0" * 58),
        503,
        annotations={
            "org.opencontainers.image.ref.name": "v1",
            "io.containerd.image.name": "docker.io/library/test:v1",
        },
    )
    doc = {"schemaVersion": 2, "manifests": [desc.to_json()]}
    assert marshal_go(doc) == CTR_INDEX_JSON


def test_descriptor_field_order_and_omissions() -> None:
    desc = Descriptor(
        mt.OCI_MANIFEST,
        Digest.parse(D1),
        1,
        annotations={"b": "2", "a": "1"},
        platform=Platform("linux", "arm", "v7"),
        urls=("https://x.example/blob",),
        artifact_type="application/vnd.example+json",
        data=b"{}",
    )
    out = desc.to_json()
    assert list(out) == [
        "mediaType", "digest", "size", "urls", "annotations", "data", "platform", "artifactType"
    ]
    assert list(out["annotations"]) == ["a", "b"]  # Go sorts map keys
    assert out["data"] == "e30="
    assert Descriptor.from_json(out) == desc
    bare = Descriptor("", Digest.parse(D1), 0).to_json()
    assert list(bare) == ["digest", "size"]


def test_descriptor_is_immutable_and_hashable() -> None:
    desc = Descriptor(mt.OCI_LAYER, Digest.parse(D1), 5, annotations={"a": "1"})
    with pytest.raises(TypeError):
        desc.annotations["a"] = "2"  # type: ignore[index]
    assert desc.annotated({"b": "2"}).annotations == {"a": "1", "b": "2"}
    assert desc.annotations == {"a": "1"}
    assert len({desc, desc.annotated({})}) == 1


@pytest.mark.parametrize(
    "obj",
    [
        {"mediaType": mt.OCI_LAYER, "digest": "sha256:../../x", "size": 1},
        {"mediaType": mt.OCI_LAYER, "digest": D1, "size": -1},
        {"mediaType": mt.OCI_LAYER, "digest": D1, "size": "1"},
        {"mediaType": mt.OCI_LAYER, "digest": D1, "size": 2**53},
        {"mediaType": mt.OCI_LAYER, "digest": D1, "size": 1, "annotations": {"a": 1}},
        {"mediaType": mt.OCI_LAYER, "digest": D1, "size": 1, "urls": "x"},
        {"mediaType": mt.OCI_LAYER, "digest": D1, "size": 1, "data": "!!"},
        {"mediaType": 5, "digest": D1, "size": 1},
        [],
    ],
)
def test_descriptor_from_json_rejects(obj: object) -> None:
    with pytest.raises(FormatError):
        Descriptor.from_json(obj)


def test_marshal_go_escaping() -> None:
    assert marshal_go({"a": "<x>&\u2028\n\t\r\b\x01\"\\é"}) == (
        b'{"a":"\\u003cx\\u003e\\u0026\\u2028\\n\\t\\r\\u0008\\u0001\\"\\\\\xc3\xa9"}'
    )
    assert marshal_go([1, True, None, "\ud800"]) == b'[1,true,null,"\xef\xbf\xbd"]'
    with pytest.raises(TypeError):
        marshal_go({"f": 1.5})


def _manifest_bytes() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": D1, "size": 10},
            "layers": [{"mediaType": mt.DOCKER_LAYER_GZIP, "digest": D2, "size": 20}],
        },
        indent=3,  # odd formatting: raw bytes must be kept, never re-serialised
    ).encode()


def test_manifest_keeps_raw_bytes_and_checks_digest() -> None:
    raw = _manifest_bytes()
    digest = Digest.from_bytes(raw)
    m = Manifest.from_bytes(raw, mt.DOCKER_MANIFEST, digest=str(digest))
    assert m.raw == raw and m.digest == digest
    assert [d.digest for d in m.children()] == [Digest.parse(D1), Digest.parse(D2)]
    assert m.descriptor() == Descriptor(mt.DOCKER_MANIFEST, digest, len(raw))
    with pytest.raises(DigestMismatchError):
        Manifest.from_bytes(raw, mt.DOCKER_MANIFEST, digest=D1)
    with pytest.raises(FormatError):
        Manifest.from_bytes(raw, mt.OCI_INDEX)
    with pytest.raises(FormatError):
        Manifest.from_bytes(raw, mt.OCI_MANIFEST)  # declares the docker type


def test_index_and_parse_blob() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": D1,
                    "size": 3,
                    "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
                }
            ],
            "annotations": {"x": "y"},
        }
    ).encode()
    idx = parse_blob(mt.OCI_INDEX, raw)
    assert isinstance(idx, Index)
    assert idx.manifests[0].platform == Platform("linux", "arm64", "v8")
    assert idx.annotations == {"x": "y"} and idx.children() == list(idx.manifests)
    with pytest.raises(FormatError):
        parse_blob(mt.OCI_LAYER, b"{}")


def test_image_config() -> None:
    raw = json.dumps(
        {
            "architecture": "arm",
            "variant": "v7",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        }
    ).encode()
    cfg = ImageConfig.from_bytes(raw, mt.OCI_CONFIG)
    assert cfg.diff_ids == (Digest.parse(D1), Digest.parse(D2))
    assert cfg.platform == Platform("linux", "arm", "v7")
    assert cfg.raw == raw
    with pytest.raises(FormatError):
        ImageConfig.from_bytes(raw, mt.OCI_MANIFEST)


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
