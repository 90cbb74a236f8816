"""What a registry pull records beyond an archive import, line by line (``ctr images pull``).

Every blob the pull walks gets ``containerd.io/distribution.source.<host>`` with its
repository added to the ones already recorded (containerd's ``AppendDistributionSourceLabel``
runs on every descriptor it walks, fetched or already present). containerd 2.x's pull (the
transfer service, ``ctr images pull`` without ``--local``) also fetches every child manifest
of an index, selected or not, and the config of each: those manifests get their GC labels
(config and layers) and the configs are recorded; their layers are not fetched. Observed on
2.1.9 (``tests/interop/test_registry_matrix.py``, docs/registry.md).
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

from ctrconv.digest import Digest
from ctrconv.image.plan import ImagePlan, PlannedManifest, read_json_blob
from ctrconv.oci import mediatypes as mt
from ctrconv.sinks.containerd_root import records as R


def label_pull(run: Any, plan: ImagePlan, distribution: Mapping[str, str], transfer_service: bool,
               unpacked: Collection[PlannedManifest]) -> None:
    """Distribution sources on every blob of ``plan``; with ``transfer_service`` (a 2.x
    pull) the unselected manifests of its indexes and their configs too. The layers of the
    manifests not ``unpacked`` are noted in ``run.walked``: 2.x walks those even where an
    unpacked manifest's layer of the same digest was skipped (its snapshot existed)."""
    for desc in plan.blobs:
        _add_source(run, str(Digest.parse(desc["digest"])), distribution)
    unpacked_digests = {m.descriptor["digest"] for m in unpacked}
    for m in plan.manifests:
        if m.descriptor["digest"] not in unpacked_digests:
            run.walked.update(str(Digest.parse(layer["digest"])) for layer in m.layers)
    if not transfer_service:
        return
    for child in plan.skipped:
        if not mt.is_manifest(child.get("mediaType", "")):
            continue
        digest = str(Digest.parse(child["digest"]))
        doc = read_json_blob(run.source, child)
        config = doc["config"]
        run.sizes[digest] = int(child["size"])
        run.add_labels(digest, R.children_labels([config, *(doc.get("layers") or [])]))
        _add_source(run, digest, distribution)
        config_digest = str(Digest.parse(config["digest"]))
        run.sizes[config_digest] = int(config["size"])
        _add_source(run, config_digest, distribution)


def _add_source(run: Any, digest: str, distribution: Mapping[str, str]) -> None:
    current = run.labels.setdefault(digest, {})
    for key, repo in distribution.items():
        current[key] = R.append_sources(current.get(key, ""), repo)
    run.pulled.add(digest)
