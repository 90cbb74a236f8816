"""Layer application: turn image layer blobs into snapshot directories like containerd does.

Public API:

* :func:`open_layer` - decompressing reader for a layer blob (gzip, zstd, plain; media type
  checked against magic bytes; optional external igzip/pigz/zstd; optional size cap).
* :func:`apply_layer` - apply an uncompressed tar stream in ``"overlay"`` or ``"naive"`` mode;
  :func:`unpack_layer` does both steps; :func:`effective_mode` states containerd's rule that an
  overlay layer without parents is applied naively. Both return :class:`ApplyResult`.
* :func:`chain_ids` / :func:`chain_id` - snapshot keys from diff IDs; :class:`HashingReader`.
* :func:`disk_usage` - snapshot ``inodes``/``size`` as containerd records them.
* :func:`copy_tree` - native snapshotter's copy of the parent snapshot.
* :func:`tree_listing` / :func:`compare_listings` - describe and diff unpacked trees.
"""

from ctrconv.layers.apply import ApplyResult, Mode, apply_layer, effective_mode, unpack_layer
from ctrconv.layers.chain import HashingReader, chain_id, chain_ids
from ctrconv.layers.compression import (
    Compression,
    LayerStream,
    media_type_compression,
    open_layer,
    sniff_compression,
)
from ctrconv.layers.copy import copy_tree
from ctrconv.layers.listing import as_listing, compare_listings, tree_listing
from ctrconv.layers.usage import Usage, disk_usage

__all__ = [
    "ApplyResult",
    "Compression",
    "HashingReader",
    "LayerStream",
    "Mode",
    "Usage",
    "apply_layer",
    "as_listing",
    "chain_id",
    "chain_ids",
    "compare_listings",
    "copy_tree",
    "disk_usage",
    "effective_mode",
    "media_type_compression",
    "open_layer",
    "sniff_compression",
    "tree_listing",
    "unpack_layer",
]
