"""The image walk and the name documents against what a real containerd 1.6 stored and exported.

Every index, manifest and config reachable in the fixture root is read verified and validated
by the pipeline's own walk (:func:`ctrconv.image.plan.plan_image`); ctr's exported
``index.json`` and ``manifest.json`` are reproduced byte for byte by the sinks' name documents
(:mod:`ctrconv.sinks._layout`), ``oci_ref_name``, ``familiarize`` and the DefaultStrict choice.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from ctrconv.containerd.content import ContentStore
from ctrconv.digest import Digest
from ctrconv.image.plan import config_platform, plan_image, ranked_manifests, read_json_blob
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.gojson import marshal_go
from ctrconv.oci.platform import (
    Platform,
    default_matcher,
    default_strict_matcher,
    format_platform,
    host_platform,
    selector,
)
from ctrconv.oci.reference import familiarize
from ctrconv.sinks._layout import index_json, name_entry
from support.fixture_set import FixtureSet


class _TarBlobs:
    """The blobs of an exported tar as a blob source (the walk reads them verified)."""

    def __init__(self, members: dict[str, bytes]) -> None:
        self._blobs = {"sha256:" + k.rsplit("/", 1)[1]: v for k, v in members.items() if k.startswith("blobs/sha256/")}

    def exists(self, digest: Digest | str) -> bool:
        return str(digest) in self._blobs

    def size(self, digest: Digest | str) -> int | None:
        data = self._blobs.get(str(digest))
        return None if data is None else len(data)

    def open(self, digest: Digest | str) -> BinaryIO:
        return io.BytesIO(self._blobs[str(digest)])

    def read_small(self, digest: Digest | str, size: int) -> bytes:
        data = self._blobs[str(digest)]
        assert len(data) == size and str(Digest.from_bytes(data)) == str(digest)
        return data


def test_host_platform_matches_containerd(fixture_set: FixtureSet) -> None:
    assert format_platform(host_platform()) == fixture_set.info["host_platform"]


def test_every_stored_document_validates(fixture_set: FixtureSet) -> None:
    store = ContentStore(fixture_set.root / "io.containerd.content.v1.content")
    seen_types: set[str] = set()
    for image in fixture_set.images():
        plan = plan_image(store, image["target"])  # every present document read verified and validated
        assert plan.blobs, image["name"]
        seen_types |= {d["mediaType"] for d in plan.indexes} | {m.descriptor["mediaType"] for m in plan.manifests}
        if plan.indexes and image.get("host_manifest"):
            # the manifest ctr unpacked for this host is the first of the ordered matches
            assert ranked_manifests(plan, default_matcher())[0].descriptor["digest"] == image["host_manifest"]
        manifests = {m.descriptor["digest"]: m for m in plan.manifests}
        for rec in image["manifests"]:
            if rec["digest"] not in manifests:
                continue  # sparse image: manifest not in the store
            m = manifests[rec["digest"]]
            assert m.layers == rec["layers"]
            if not store.exists(m.config["digest"]):
                continue
            config = read_json_blob(store, m.config)
            seen_types.add(m.config["mediaType"])
            assert config["rootfs"]["diff_ids"] == rec["diff_ids"]
            assert format_platform(Platform.from_json(config_platform(config))) == rec["platform"]
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
        target: dict[str, Any] = image["target"]
        assert members["index.json"] == index_json([name_entry(target, name)], media_type=False)

        # the manifest DefaultStrict picks goes into manifest.json; only selected platforms' blobs are exported
        plan = plan_image(_TarBlobs(members), target, selector(default_strict_matcher()))
        assert not plan.missing, name
        skipped = {f"blobs/sha256/{Digest.parse(d['digest']).hex}" for d in plan.skipped}
        assert not skipped & members.keys()
        chosen = ranked_manifests(plan, default_strict_matcher())[0] if plan.indexes else plan.manifests[0]
        manifest_json = marshal_go(
            [
                {
                    "Config": f"blobs/sha256/{Digest.parse(chosen.config['digest']).hex}",
                    "RepoTags": [familiarize(name)],
                    "Layers": [f"blobs/sha256/{Digest.parse(d['digest']).hex}" for d in chosen.layers],
                }
            ]
        )
        assert members["manifest.json"] == manifest_json
        checked += 1
    if checked == 0:
        pytest.skip("fixture set records no ctr exports")
