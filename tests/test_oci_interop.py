"""The OCI model against what a real containerd 1.6 stored and exported (fixture set).

Every index, manifest and config in the fixture root must validate and parse; ctr's exported
``index.json`` and ``manifest.json`` must be reproduced byte for byte from our descriptors,
``oci_ref_name``, ``familiarize`` and the DefaultStrict platform choice.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from ctrconv.digest import Digest
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.model import Descriptor, ImageConfig, Index, Manifest, marshal_go, parse_blob
from ctrconv.oci.platform import (
    default_matcher,
    default_strict_matcher,
    format_platform,
    host_platform,
    select_children,
)
from ctrconv.oci.reference import familiarize, oci_ref_name
from support.fixture_set import FixtureSet


def blob_path(root: Path, digest: Digest) -> Path:
    return root / "io.containerd.content.v1.content" / "blobs" / digest.algorithm / digest.hex


def read_blob(root: Path, desc: Descriptor) -> bytes | None:
    path = blob_path(root, desc.digest)
    return path.read_bytes() if path.exists() else None


def walk(root: Path, desc: Descriptor) -> list[Manifest | Index | ImageConfig]:
    """Parse every present document reachable from ``desc`` (sparse images lack some)."""
    data = read_blob(root, desc)
    if data is None:
        return []
    if not (mt.is_index(desc.media_type) or mt.is_manifest(desc.media_type) or mt.is_config(desc.media_type)):
        return []
    doc = parse_blob(desc.media_type, data, digest=desc.digest)
    found: list[Manifest | Index | ImageConfig] = [doc]
    if isinstance(doc, (Manifest, Index)):
        for child in doc.children():
            found += walk(root, child)
    return found


def test_host_platform_matches_containerd(fixture_set: FixtureSet) -> None:
    assert format_platform(host_platform()) == fixture_set.info["host_platform"]


def test_every_stored_document_validates(fixture_set: FixtureSet) -> None:
    seen_types = set()
    for image in fixture_set.images():
        target = Descriptor.from_json(image["target"])
        docs = walk(fixture_set.root, target)
        assert docs, image["name"]
        seen_types |= {d.media_type for d in docs}
        if isinstance(docs[0], Index) and image.get("host_manifest"):
            # the manifest ctr unpacked for this host is the first of the ordered matches
            chosen = select_children(docs[0].manifests, default_matcher())
            assert str(chosen[0].digest) == image["host_manifest"]
        manifests = {str(d.digest): d for d in docs if isinstance(d, Manifest)}
        configs = {d.digest: d for d in docs if isinstance(d, ImageConfig)}
        for rec in image["manifests"]:
            if rec["digest"] not in manifests:
                continue  # sparse image: manifest not in the store
            m = manifests[rec["digest"]]
            assert [d.to_json() for d in m.layers] == rec["layers"]
            cfg = configs.get(m.config.digest)
            if cfg is not None:
                assert [str(d) for d in cfg.diff_ids] == rec["diff_ids"]
                assert format_platform(cfg.platform) == rec["platform"]
    assert {mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST, mt.OCI_CONFIG} <= seen_types


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_ctr_export_names_and_platform_choice(fixture_set: FixtureSet) -> None:
    checked = 0
    for image in fixture_set.images():
        rel = image.get("export")
        if not rel or not fixture_set.file(rel).exists():
            continue
        members = _tar_members(fixture_set.file(rel))
        name = image["name"]
        target = Descriptor.from_json(image["target"]).annotated(
            {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": oci_ref_name(name)}
        )
        index_json = marshal_go({"schemaVersion": 2, "manifests": [target.to_json()]})
        assert members["index.json"] == index_json

        # the manifest DefaultStrict picks goes into manifest.json; its blobs are exported
        manifest_desc = target
        if mt.is_index(target.media_type):
            index = Index.from_bytes(members[f"blobs/sha256/{target.digest.hex}"], target.media_type)
            chosen = select_children(index.manifests, default_strict_matcher())
            exported = {f"blobs/sha256/{d.digest.hex}" for d in chosen}
            skipped = {f"blobs/sha256/{d.digest.hex}" for d in index.manifests} - exported
            assert exported <= members.keys() and not skipped & members.keys()
            manifest_desc = chosen[0]
        manifest = Manifest.from_bytes(
            members[f"blobs/sha256/{manifest_desc.digest.hex}"], manifest_desc.media_type
        )
        manifest_json = marshal_go(
            [
                {
                    "Config": f"blobs/sha256/{manifest.config.digest.hex}",
                    "RepoTags": [familiarize(name)],
                    "Layers": [f"blobs/sha256/{d.digest.hex}" for d in manifest.layers],
                }
            ]
        )
        assert members["manifest.json"] == manifest_json
        checked += 1
    if checked == 0:
        pytest.skip("fixture set records no ctr exports")
