"""How images are written into a containerd root: one typed options object, named like the
options of ``ctrconv import``, from the CLI down to the writer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from ctrconv.image.model import ImagePlan


@dataclass
class ImportOptions:
    """How images are written into a root. Field names are ``ctrconv import``'s option names
    (``unpack`` is ``--no-unpack`` negated, ``backup`` ``--no-backup``); defaults are the CLI's."""

    #: the snapshotter unpacked into (``overlayfs`` or ``native``)
    snapshotter: str = "overlayfs"
    #: build committed snapshots for the host-runnable manifest of each image
    unpack: bool = True
    #: ``--platform`` (repeatable; None: the host's)
    platform: Sequence[str] | None = None
    all_platforms: bool = False
    #: the input's single image stored under this name instead of its own
    name: str | None = None
    #: in ``k8s.io`` also label the image ``io.cri-containerd.pinned=pinned``
    pin: bool = False
    #: record each image as containerd's CRI plugin records a pull (:mod:`ctrconv.containerd.cri`:
    #: its three names ``repo:tag``, ``repo@digest`` and ``sha256:<id>`` labelled
    #: ``io.cri-containerd.image=managed``, no annotations, distribution-source labels on its
    #: blobs, every index child labelled). ``--cri`` True, ``--no-cri-names`` False; None: in
    #: ``k8s.io`` only
    cri: bool | None = None
    #: the line that will run a new root (1.6, 1.7, 2.x; None: 1.6): schema version and
    #: freelist style of a new meta.db; an existing root keeps its own form (a mismatch is a
    #: report warning)
    containerd_version: str | None = None
    #: keep replaced bolt files as ``<file>.bak-<UTC time>``
    backup: bool = True
    #: hash every blob file already in the content store before trusting it (default: a file
    #: the namespace records, of the right size, is trusted: it was verified when written; a
    #: file no record of the namespace vouches for is always hashed)
    verify_existing: bool = False
    #: ``--max-layer-size`` in bytes (a decompression-bomb limit; None: free disk only)
    max_layer_size: int | None = None
    #: overlayfs layers of one image unpacked side by side in worker processes (None or 1: in
    #: order); the result is the same either way
    jobs: int | None = None
    #: the platform whose manifest is unpacked, exactly (``OnlyStrict``), instead of the host's
    #: best match (``--platform`` given once sets it, like ``ctr images import --platform``)
    unpack_platform: str | None = None
    #: label images ``io.cri-containerd.image=managed`` in ``k8s.io`` (library only)
    cri_labels: bool = True
    #: keep the present manifests of unselected platforms, recorded and labelled from their
    #: index (library only: a rebuild must not let GC take what the node had)
    keep_partial: bool = False
    #: with ``keep_partial``, "present" is "recorded in the namespace" (library only: a rebuild
    #: whose content records are whole; another namespace's blob on disk is not a platform of
    #: this one, and recording it changed what ``ctr images check`` says of a healthy node)
    partial_from_records: bool = False
    #: walks of the images made already with no platform selection, by image name (library
    #: only: a rebuild decides its import groups from the same walks). Reused for an image
    #: without an index, whose walk no platform selection changes; anything else is walked again
    plans: Mapping[str, ImagePlan] | None = None
    #: an image whose config lists another number of diff IDs than its manifest has layers is
    #: recorded and left not unpacked, with a warning, instead of failing the import (library
    #: only: a rebuild keeps such an image as containerd 1.6 and 1.7 recorded it; they cannot
    #: unpack it either)
    skip_unpackable: bool = False


def with_fields(options: ImportOptions | None, fields: dict[str, Any]) -> ImportOptions:
    """``options`` (default: the CLI's defaults) with ``fields`` set; an unknown name is a TypeError."""
    return dataclasses.replace(options or ImportOptions(), **fields)
