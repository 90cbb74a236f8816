"""``verify --deep``: compare each unpacked snapshot with the layer it was made from.

The layer is applied again into a scratch directory outside the root (``$TMPDIR``: verify
never writes into the root it checks), with the same semantics: overlay with the parent
snapshots as lowers, or native on a copy of the parent, and the two trees are compared entry by entry: type, mode, owner, size, content hash,
link target, device numbers and xattrs. Times containerd sets at apply time are ignored, and
so are the attributes of the snapshot root itself (containerd never takes them from the layer).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ctrconv.containerd.root import ContainerdRoot
from ctrconv.errors import CtrconvError
from ctrconv.layers import chain_ids, compare_listings, copy_tree, tree_listing, unpack_layer
from ctrconv.verify.problems import Report

MAX_DIFFERENCES_SHOWN = 5


def check_snapshot_trees(
    croot: ContainerdRoot,
    namespace: str,
    snapshotter: str,
    layers: list[dict],
    diff_ids: list[str],
    snapshot_dirs: dict[str, Path],
    report: Report,
    checked: set[tuple[str, str]],
) -> None:
    """Compare the snapshots of one layer chain; ``snapshot_dirs`` maps chain ID -> directory."""
    chains = chain_ids(diff_ids)
    scratch_parent = Path(tempfile.gettempdir())
    lowers: list[Path] = []
    for layer, diff_id, chain in zip(layers, diff_ids, chains):
        snap = snapshot_dirs.get(chain)
        if snap is None:
            return  # the chain is not (fully) unpacked; the shallow checks report that
        fs = snap / "fs" if snapshotter == "overlayfs" else snap
        key = (namespace, f"{snapshotter}/{chain}")
        if key not in checked:
            checked.add(key)
            report.count("snapshots compared")
            try:
                problems = _compare(croot, scratch_parent, snapshotter, layer, diff_id, fs, lowers)
            except CtrconvError as exc:
                problems = [f"layer could not be applied for comparison: {exc}"]
            if problems:
                shown = "; ".join(problems[:MAX_DIFFERENCES_SHOWN])
                more = f" (+{len(problems) - MAX_DIFFERENCES_SHOWN} more)" if len(problems) > MAX_DIFFERENCES_SHOWN else ""
                report.add("snapshot-differs", f"snapshot {namespace}/{snapshotter}/{chain}", str(fs), f"differs from layer {layer['digest']}: {shown}{more}")
        lowers.insert(0, fs)


def _compare(croot, scratch_parent: Path, snapshotter: str, layer: dict, diff_id: str, fs: Path, lowers: list[Path]) -> list[str]:
    scratch = Path(tempfile.mkdtemp(prefix=".ctrconv-verify-", dir=scratch_parent))
    try:
        target = scratch / "fs"
        if snapshotter == "overlayfs":
            target.mkdir()
            mode = "overlay" if lowers else "naive"
            use_lowers = lowers
        else:
            if lowers:
                copy_tree(lowers[0], target)
            else:
                target.mkdir()
            mode, use_lowers = "naive", []
        with croot.content.open(layer["digest"]) as blob:
            unpack_layer(blob, target, mode=mode, media_type=layer.get("mediaType"), lowers=use_lowers, expected_diff_id=diff_id)
        want, got = tree_listing(target), tree_listing(fs)
        want.pop("/", None)
        got.pop("/", None)
        return compare_listings(want, got)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
