"""Docker Engine's containerd image store: the conventions ctrconv must share with it.

Docker 25+ with the containerd snapshotter feature keeps its images as containerd images in
namespace ``moby``. An image whose last name went (re-tagged, untagged, or loaded from an
archive entry with no name) is kept under ``moby-dangling@<target digest>``, which ``docker
images`` shows as ``<none>``; the image ID Docker shows is the target digest. These records
carry no labels of Docker's own (checked on Docker 26.1 and 28.5).
"""

from __future__ import annotations

#: the namespace of Docker's containerd image store
NAMESPACE = "moby"
#: the name prefix of a dangling image record
DANGLING_PREFIX = "moby-dangling@"


def dangling_name(target_digest: str) -> str:
    """The record name Docker gives an unnamed image (``moby-dangling@sha256:...``)."""
    return DANGLING_PREFIX + target_digest


def is_dangling(name: str) -> bool:
    """``name`` is Docker's record of an unnamed image, not a name."""
    return name.startswith(DANGLING_PREFIX)
