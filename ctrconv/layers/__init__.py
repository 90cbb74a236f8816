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

from __future__ import annotations

from ctrconv.lazy import lazy_exports

#: exported name -> the submodule defining it; resolved on first use (PEP 562), so a caller
#: of ``chain_ids`` (``ctrconv ls``) does not import the tar and decompression machinery
_WHERE = {
    **dict.fromkeys(("ApplyResult", "Mode", "apply_layer", "effective_mode", "unpack_layer"), "apply"),
    **dict.fromkeys(("HashingReader", "chain_id", "chain_ids"), "chain"),
    **dict.fromkeys(("Compression", "LayerStream", "media_type_compression", "open_layer", "sniff_compression"),
                    "compression"),
    "copy_tree": "copy",
    **dict.fromkeys(("as_listing", "compare_listings", "tree_listing"), "listing"),
    **dict.fromkeys(("Usage", "disk_usage"), "usage"),
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)


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
