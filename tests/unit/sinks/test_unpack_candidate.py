"""The manifest an import unpacks, as containerd's ``Unpack`` picks it (``images.Manifest``
with ``LimitManifests(.., 1)``): the image's own manifest whatever its platform; in an index
the best child its platform matches, those without a platform last, and only the first of
those, by its config (a red-team run against ctr on 1.6, 1.7 and 2.x)."""

from __future__ import annotations

from typing import Any

from ctrconv.image.model import ImagePlan, PlannedManifest
from ctrconv.oci import platform as plat
from ctrconv.sinks.containerd_root.importer import _unpack_candidate

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2}
AMD = {"os": "linux", "architecture": "amd64"}
ARM = {"os": "linux", "architecture": "arm64"}
ON_AMD64 = plat.only(plat.Platform("linux", "amd64"))


def _m(name: str, config_platform: dict[str, Any], tagged: bool, config: dict[str, Any] = CONFIG) -> PlannedManifest:
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + name * 64, "size": 1}
    if tagged:
        desc["platform"] = config_platform
    return PlannedManifest(desc, config_platform, config, [], {})


def _plan(*manifests: PlannedManifest, index: bool = True) -> ImagePlan:
    target = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + "f" * 64, "size": 1}
    return ImagePlan(target=target, manifests=list(manifests), indexes=[target] if index else [])


def test_an_image_of_one_manifest_is_unpacked_whatever_its_platform() -> None:
    arm = _m("a", ARM, tagged=False)
    assert _unpack_candidate(_plan(arm, index=False), ON_AMD64) is arm


def test_the_matching_child_wins_over_children_without_a_platform() -> None:
    untagged, amd = _m("u", AMD, tagged=False), _m("b", AMD, tagged=True)
    assert _unpack_candidate(_plan(untagged, amd), ON_AMD64) is amd


def test_of_children_without_a_platform_only_the_first_counts() -> None:
    """containerd reads the first one's config only: an arm64 first child leaves nothing to
    unpack on amd64 (ctr images check says unavailable), though the second is amd64."""
    arm, amd = _m("a", ARM, tagged=False), _m("b", AMD, tagged=False)
    assert _unpack_candidate(_plan(arm, amd), ON_AMD64) is None
    assert _unpack_candidate(_plan(amd, arm), ON_AMD64) is amd


def test_an_artifact_has_nothing_to_unpack() -> None:
    helm = dict(CONFIG, mediaType="application/vnd.cncf.helm.config.v1+json")
    assert _unpack_candidate(_plan(_m("h", AMD, tagged=False, config=helm), index=False), ON_AMD64) is None
    assert _unpack_candidate(_plan(_m("h", AMD, tagged=True, config=helm)), ON_AMD64) is None
