"""``verify --deep``: compare each unpacked snapshot with the layer it was made from.

The layer is applied again into a scratch directory outside the root (``$TMPDIR``: verify
never writes into the root it checks), with the same semantics: overlay with the parent
snapshots as lowers, or native on a copy of the parent, and the two trees are compared entry by entry: type, mode, owner, size, content hash,
link target, device numbers and xattrs. Times containerd sets at apply time are ignored, and
so are the attributes of the snapshot root itself (containerd never takes them from the layer).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

from ctrconv import tempfiles
from ctrconv.containerd.content import ContentStore
from ctrconv.containerd.root import ContainerdRoot
from ctrconv.errors import CtrconvError, NoSpaceError
from ctrconv.layers import chain_ids, copy_tree, unpack_layer
from ctrconv.layers.listing import compare_walks, walk_entries
from ctrconv.oci import mediatypes as mt
from ctrconv.oci import platform as plat
from ctrconv.placement import spread_subdirectories
from ctrconv.image.plan import plan_image, read_json_blob
from ctrconv.verify.problems import Report


def unpacked_layer_chains(content: ContentStore, target: dict[str, Any]
                          ) -> Iterator[tuple[list[dict], list[str], bool]]:
    """(layers, diff IDs, whether it runs on this host) of every manifest of an image whose
    blobs are all present, the host's first: the chains containerd unpacks (other platforms'
    too: ``ctr images pull --all-platforms`` or ``--platform`` on 1.6/1.7, or an import with
    ``--platform``). Only the host's were compared, so a damaged arm64 snapshot of an amd64
    node was called clean (a red-team run); a chain with no snapshot is skipped by the
    comparison. Images or manifests that cannot be read yield nothing."""
    host = plat.default_matcher()
    try:
        plan = plan_image(content, target, None)
    except CtrconvError:
        return
    missing = {str(d.get("digest")) for d in plan.missing}
    chains = []
    for manifest in plan.manifests:
        if not mt.is_config(manifest.config.get("mediaType", "")) or manifest.config.get("digest") in missing:
            continue
        runs = not manifest.platform or runs_here(host, manifest.platform)
        layers = [layer for layer in manifest.layers if mt.is_layer(layer.get("mediaType", ""))]
        if any(layer.get("digest") in missing for layer in layers):
            continue
        chains.append((not runs, manifest, layers, runs))
    for _, manifest, layers, runs in sorted(chains, key=lambda c: c[0]):
        try:
            config = read_json_blob(content, manifest.config)
        except CtrconvError:
            continue
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if diff_ids and len(diff_ids) == len(layers):
            yield layers, diff_ids, runs


def runs_here(matcher: plat.MatchComparer, platform: dict) -> bool:
    """``matcher`` accepts ``platform`` (a descriptor's JSON); an unparsable one never runs."""
    try:
        return matcher.match(plat.Platform.from_json(platform))
    except CtrconvError:
        return False


class HostRuns:
    """:func:`runs_here` with the host's matcher, built once (0.1 ms each: verify built one per
    image) and asked once per distinct platform (10,000 images share a handful of them)."""

    def __init__(self) -> None:
        self._host = plat.default_matcher()
        self._known: dict[frozenset[tuple[str, type, Any]], bool] = {}

    def __call__(self, platform: dict) -> bool:
        try:  # a platform with list values (os.features) is not remembered
            key = frozenset((k, type(v), v) for k, v in platform.items())
            hash(key)
        except TypeError:
            return runs_here(self._host, platform)
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = runs_here(self._host, platform)
        return known


MAX_DIFFERENCES_SHOWN = 5


def compare_chain(
    content: ContentStore,
    snapshotter: str,
    layers: list[dict],
    diff_ids: list[str],
    fs_of: Callable[[str], Path | None],
    checked: set[Hashable],
    key_of: Callable[[str], Hashable],
    scratch_parent: Path | None = None,
) -> Iterator[tuple[str, dict, Path, list[str]]]:
    """Compare the snapshots of one layer chain bottom-up with their layers.

    ``fs_of(chain ID)`` is the snapshot's tree (None: not unpacked, the walk ends there); each
    snapshot is compared once per ``key_of(chain)`` across calls (``checked``). Yields
    (chain ID, layer, tree, differences) per comparison, the differences a (false)
    :class:`NotCompared` when the layer itself could not be applied (nothing is known about the
    snapshot); a caller may stop early.
    """
    lowers: list[Path] = []
    for layer, diff_id, chain in zip(layers, diff_ids, chain_ids(diff_ids)):
        fs = fs_of(chain)
        if fs is None:
            return
        key = key_of(chain)
        if key not in checked:
            checked.add(key)
            try:
                found: list[str] | NotCompared = compare_snapshot(content, snapshotter, layer, diff_id, fs, lowers,
                                                                  scratch_parent)
            except LayerNotApplied as exc:
                found = NotCompared(str(exc))
            yield chain, layer, fs, found
        lowers.insert(0, fs)


def check_snapshot_trees(
    croot: ContainerdRoot,
    namespace: str,
    snapshotter: str,
    layers: list[dict],
    diff_ids: list[str],
    snapshot_trees: dict[str, Path],
    report: Report,
    checked: set[Hashable],
) -> None:
    """Compare the snapshots of one layer chain; ``snapshot_trees`` maps chain ID -> the
    snapshot's tree (:meth:`ContainerdRoot.snapshot_fs`). A chain not (fully) unpacked is
    compared up to its gap; the shallow checks report the gap."""
    def tree_of(chain: str) -> Path | None:
        tree = snapshot_trees.get(chain)
        return tree if tree is not None and tree.is_dir() else None  # (a lost directory: reported as such)

    walk = compare_chain(croot.content, snapshotter, layers, diff_ids, tree_of, checked,
                         lambda chain: (namespace, f"{snapshotter}/{chain}"))
    while True:
        try:
            found = next(walk, None)
        except NoSpaceError as exc:
            # not a verdict on the snapshot: it was not compared (and the chain above it neither)
            report.add("snapshot-not-compared", f"snapshots {namespace}/{snapshotter}",
                       str(croot.snapshots_dir(snapshotter)), f"{exc} ({exc.hint})", severity="info")
            return
        if found is None:
            return
        chain, layer, fs, problems = found
        if isinstance(problems, NotCompared):
            report.add("snapshot-not-compared", f"snapshot {namespace}/{snapshotter}/{chain}", str(fs),
                       f"its layer {layer['digest']} could not be applied for the comparison: {problems.reason}",
                       severity="info")
            continue
        report.count("snapshots compared")
        if problems:
            shown = "; ".join(problems[:MAX_DIFFERENCES_SHOWN])
            more = f" (+{len(problems) - MAX_DIFFERENCES_SHOWN} more)" if len(problems) > MAX_DIFFERENCES_SHOWN else ""
            report.add("snapshot-differs", f"snapshot {namespace}/{snapshotter}/{chain}", str(fs), f"differs from layer {layer['digest']}: {shown}{more}")


def compare_snapshot(
    content: ContentStore, snapshotter: str, layer: dict, diff_id: str, fs: Path, lowers: list[Path],
    scratch_parent: Path | None = None,
) -> list[str]:
    """Differences between one snapshot tree ``fs`` and its layer applied afresh on ``lowers``
    (nearest first) in a scratch directory; empty when they match."""
    scratch = tempfiles.temp_dir(scratch_parent or tempfile.gettempdir(), ".ctrconv-verify-")
    spread_subdirectories(scratch)  # each layer's tree away from the one just removed
    try:
        return _compare_in(scratch, content, snapshotter, layer, diff_id, fs, lowers)
    except NoSpaceError as exc:
        # the scratch filesystem is full: nothing is known about the snapshot (it was called
        # "differs", and rebuild then deleted a healthy snapshot)
        raise NoSpaceError(f"no room in {scratch.parent} to apply layer {layer['digest']} for comparison: {exc}",
                           hint="free space there, or point TMPDIR at a larger filesystem") from exc
    except LayerNotApplied:
        raise
    except CtrconvError as exc:
        return [f"layer could not be applied for comparison: {exc}"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        tempfiles.forget(scratch)


def _compare_in(scratch: Path, content: ContentStore, snapshotter: str, layer: dict, diff_id: str, fs: Path,
                lowers: list[Path]) -> list[str]:
    # a name of its own each time: ext4 picks a flagged parent's subdirectory's block group
    # from a hash of its name (the same name would land where the last tree was just removed)
    target = scratch / f"fs-{os.urandom(6).hex()}"
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
    try:
        with content.open(layer["digest"]) as blob:
            unpack_layer(blob, target, mode=mode, media_type=layer.get("mediaType"), lowers=use_lowers,
                         expected_diff_id=diff_id)
    except NoSpaceError:
        raise
    except CtrconvError as exc:
        raise LayerNotApplied(str(exc)) from exc
    # both trees walked side by side, entry by entry (memory flat in the number of entries)
    try:
        problems, total = compare_walks(_below_top(walk_entries(target)), _below_top(_snapshot_walk(fs)),
                                        limit=MAX_DIFFERENCES_KEPT)
    except _SnapshotUnreadable as exc:
        return [f"snapshot tree cannot be read: {exc.__cause__}"]
    if total > len(problems):
        problems.append(f"... {total - len(problems)} more")
    return problems


#: differences of one snapshot kept in full (the rest are counted)
MAX_DIFFERENCES_KEPT = 1000


@dataclass(frozen=True)
class NotCompared:
    """A snapshot whose layer could not be applied: no verdict (false, as "no differences"
    is, so that a caller only looking for differences keeps the snapshot)."""

    reason: str

    def __bool__(self) -> bool:
        return False


class LayerNotApplied(CtrconvError):
    """The layer blob could not be applied in the scratch directory (corrupt, truncated, a
    diff ID it does not hash to): a fault of the blob, reported by the blob checks; nothing is
    known about the snapshot."""


class _SnapshotUnreadable(Exception):
    """The snapshot's own tree failed to read (not the scratch copy)."""


def _snapshot_walk(fs: Path) -> Iterator[dict]:
    try:
        yield from walk_entries(fs)
    except OSError as exc:
        raise _SnapshotUnreadable() from exc


def _below_top(entries: Iterator[dict]) -> Iterator[dict]:
    """Every entry but the tree's top (its own mode and times are the scratch directory's)."""
    return (e for e in entries if e["path"] != "/")
