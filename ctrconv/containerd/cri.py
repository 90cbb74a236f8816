"""What containerd's CRI plugin records for a pulled image, so a preloaded image looks pulled.

Observed on 1.6.20, 1.7.24 and 2.1.9 (CRI ``PullImage`` from a registry, the real-node corpus in
``tests/``), identical on all three lines:

* three image records in ``k8s.io``, all with the same target (the pulled index or manifest)
  and the label ``io.cri-containerd.image=managed``, no annotations:
  ``repo:tag``, ``repo@sha256:<target digest>`` and ``sha256:<config digest>`` (the image ID
  ``crictl images`` shows: the config of the platform the node runs). A pull by digest records
  no tag name.
* every blob fetched carries ``containerd.io/distribution.source.<registry host without
  port>=<repository path>``; index blobs label **every** child manifest
  (``gc.ref.content.m.<i>`` by position, pulled or not), manifests their config and layers,
  layers ``containerd.io/uncompressed`` and the config ``gc.ref.snapshot.<snapshotter>``.

The kubelet asks CRI for the exact reference of a pod spec (tag or digest) and for image IDs,
so a preload must write all three names or a digest-pinned pod pulls (``ImagePullBackOff``
on an air-gapped node).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from ctrconv.containerd import schema as K
from ctrconv.errors import CtrconvError
from ctrconv.oci.reference import parse_docker_ref

_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")

LABEL_CRI_IMAGE = "io.cri-containerd.image"
LABEL_CRI_PINNED = "io.cri-containerd.pinned"
CRI_NAMESPACE = "k8s.io"


@dataclass(frozen=True)
class CriNames:
    """The image records CRI keeps for one pulled image."""

    names: tuple[str, ...]
    #: the ``containerd.io/distribution.source.<host>`` label every blob of the image gets
    source_label: tuple[str, str] | None


def cri_names(name: str, target_digest: str, config_digest: str | None, *, digest_name: bool = True) -> CriNames:
    """Names for ``name`` (normalised as CRI stores them: ``busybox:1`` ->
    ``docker.io/library/busybox:1``), its ``repo@digest`` (not with ``digest_name=False``: a
    manifest no registry serves, which CRI would report as a repo digest to pull, and then no
    distribution-source label either) and its ``sha256:<id>``."""
    if _IMAGE_ID.fullmatch(name):
        return CriNames((name,), None)  # an image ID record (a CRI root copied): no other names
    try:
        ref = parse_docker_ref(name)
    except CtrconvError:
        ids = (f"{config_digest}",) if config_digest else ()
        return CriNames((name, *[i for i in ids if i != name]), None)
    names: list[str] = []
    if ref.tag and ref.digest is None:
        names.append(f"{ref.name}:{ref.tag}")
    if digest_name or ref.digest is not None:
        names.append(f"{ref.name}@{target_digest}")
    if config_digest:
        names.append(config_digest)
    if not digest_name:  # (nothing of it came from that registry: no distribution source either, as ctr)
        return CriNames(tuple(dict.fromkeys(names)), None)
    host = ref.domain.split(":", 1)[0]
    return CriNames(tuple(dict.fromkeys(names)), (f"{K.LABEL_DISTRIBUTION_SOURCE}.{host}", ref.path))


def source_labels(annotations: Mapping[str, str], derived: tuple[str, str] | None) -> dict[str, str]:
    """Distribution-source labels for every blob: the input's own (a ``ctr`` 1.7+ export
    carries them as index annotations) or the one the image name implies."""
    given = {k: v for k, v in annotations.items() if k.startswith(K.LABEL_DISTRIBUTION_SOURCE + ".")}
    if given:
        return given
    return dict([derived]) if derived else {}
