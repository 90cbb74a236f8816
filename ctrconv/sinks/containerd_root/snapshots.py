"""Unpack an image's layers into committed snapshots, the way ``ctr import`` + ``Unpack`` leaves them.

For each chain ID of the image (containerd ``identity.ChainIDs``) the namespace gets a meta.db
record ``snapshots/<sn>/<chainID>`` named ``<ns>/<seq>/<chainID>`` and the snapshotter gets a
committed backend record with a fresh id and the directory ``snapshots/<id>`` (overlayfs:
``fs`` + ``work``; native: the whole root filesystem). Chains that the namespace already has
(record, backend record and directory all present) are reused; backend snapshots are never
shared between namespaces, like containerd.

Directories are built under ``<snapshotter dir>/.ctrconv-tmp-*`` (outside ``snapshots/``, whose
unknown entries overlay ``Cleanup`` deletes, and never looked at by containerd) and renamed to
``snapshots/<id>`` by :meth:`SnapshotWriter.install` only after the snapshotter metadata.db with
their ids was written (see :mod:`.transaction` for the whole order).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Protocol, Sequence

from ctrconv import tempfiles
from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import backend_name, backend_name_seq, is_committed, key_bytes, read_backend_id, text
from ctrconv.containerd.root import snapshot_tree
from ctrconv.sinks.containerd_root import records as R
from ctrconv.sinks.containerd_root.content_writer import TMP_PREFIX
from ctrconv.sinks.containerd_root.transaction import RootTransaction
from ctrconv.errors import FormatError, UsageError
from ctrconv.layers.apply import ApplyResult, Mode, finish_deferred_parents
from ctrconv.layers.chain import chain_ids
from ctrconv.layers.copy import copy_tree
from ctrconv.layers.parallel import LayerJob, OpenedLayer, apply_in_parallel, apply_job, apply_opened, open_ahead
from ctrconv.progress import SILENT_STAGE, Stage
from ctrconv.layers.usage import disk_usage
from ctrconv.placement import spread_subdirectories
from ctrconv.streams import fsync_dir

SNAPSHOTTERS = K.TREE_SNAPSHOTTERS
SNAPSHOT_DIR_MODE = 0o700  # overlay snapshots/<id> (MkdirTemp)
FS_MODE = 0o755
WORK_MODE = 0o711

#: path of a layer blob (already verified in the target content store) from its digest
BlobPath = Callable[[str], Path]
#: a stream of a layer blob from its digest (one still arriving: see :mod:`.fetch`)
BlobOpener = Callable[[str], BinaryIO]


class Arrivals(Protocol):
    """Blobs still being fetched (:class:`~.fetch.BlobFetcher`), for worker processes."""

    def arriving(self, digest: str) -> tuple[Path, Path, int]: ...

    def check(self) -> None: ...


@dataclass
class _Snap:
    """A snapshot of the chain: where its filesystem is now, and its backend id."""

    chain_id: str
    backend_name: str
    snapshot_id: int
    #: overlay: the ``fs`` dir; native: the snapshot dir. Paths as text: an import keeps every
    #: snapshot it built until it installs them, and two ``Path`` objects each were ~4.5 MiB
    #: of a 10,000-image rebuild's peak (its re-import unpacks 4,850 snapshots in one group)
    path: str
    pending: str | None = None  # temp dir to rename to snapshots/<id>, None once installed


def check_snapshotter(name: str) -> None:
    """Refuse a snapshotter ctrconv cannot write."""
    if name not in SNAPSHOTTERS:
        raise UsageError(f"unsupported snapshotter {name!r} (use {' or '.join(SNAPSHOTTERS)})")


@dataclass(frozen=True)
class _Layer:
    """One layer still to be unpacked: its descriptor, diff ID and chain ID."""

    layer: Mapping[str, Any]
    diff_id: str
    chain_id: str


@dataclass
class _Build:
    """A snapshot being built: where, on top of what, and (once applied) the apply's result."""

    item: _Layer
    snapshot_id: int
    work: Path  # temp dir renamed to snapshots/<id> by install()
    target: Path  # overlay: work/fs; native: work
    lowers: list[str | Path]
    mode: Mode
    applied: ApplyResult | None = None


@dataclass
class UnpackResult:
    top_chain_id: str
    created: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


class SnapshotWriter:
    """Creates committed snapshots for one namespace and snapshotter inside a transaction."""

    def __init__(
        self, txn: RootTransaction, namespace: str, snapshotter: str, now_ns: int,
        max_layer_bytes: int | None = None, jobs: int | None = None,
    ) -> None:
        check_snapshotter(snapshotter)
        self.txn = txn
        self.namespace = namespace
        self.snapshotter = snapshotter
        self.now_ns = now_ns
        self.max_layer_bytes = max_layer_bytes  # decompression-bomb limit per layer (None: free disk)
        # overlay layers applied side by side in worker processes; 1 (the default) = in order,
        # since on the machines measured so far parallel extraction was no faster
        # (benchmarks/README.md, bench_unpack_jobs.py)
        self.jobs = 1 if jobs is None else max(1, jobs)
        self.dir = txn.snapshotter_dir(snapshotter)
        self.snapshots_dir = self.dir / "snapshots"
        self.backend = txn.backend(snapshotter)
        ns = R.namespace_bucket(txn.meta, namespace)
        bucket = ns.bucket(K.SNAPSHOTS, snapshotter.encode(), create=True)
        assert bucket is not None
        self.meta_bucket = bucket
        self._next_id = self._first_free_id()
        self._backend_seq = self._highest_backend_sequence()
        self._built: dict[str, _Snap] = {}
        self._tmp: Path | None = None

    # -- ids ---------------------------------------------------------------------------------

    def _backend_records(self) -> BucketTree:
        snaps = self.backend.bucket(K.V1, K.SNAPSHOTS, create=True)
        assert snaps is not None
        return snaps

    def _first_free_id(self) -> int:
        """Above the sequence, every recorded id and every numeric directory (crash leftovers)."""
        snaps = self._backend_records()
        top = snaps.sequence
        for _, record in snaps.buckets():
            snapshot_id = read_backend_id(record)
            if snapshot_id is not None:
                top = max(top, snapshot_id)
        if self.snapshots_dir.is_dir():
            for entry in os.listdir(self.snapshots_dir):
                if entry.isdigit():
                    top = max(top, int(entry))
        return top + 1

    def _highest_backend_sequence(self) -> int:
        """The highest ``<seq>`` of this namespace's backend names (``<ns>/<seq>/<key>``).

        An import killed after the snapshotter db was replaced but before meta.db leaves
        backend snapshots meta.db never named, under sequences meta.db never advanced past:
        the next import took the same names again, and the leftovers' parent links then
        crossed into its snapshots (their ``v1/parents`` entries no longer matched). New names
        start above every one in use, as after a containerd that committed them."""
        prefix = f"{self.namespace}/"
        top = 0
        for key, _ in self._backend_records().buckets():
            name = text(key)
            if name.startswith(prefix):
                top = max(top, backend_name_seq(name) or 0)
        return top

    def _snapshot_dir(self, snapshot_id: int) -> Path:
        return self.snapshots_dir / str(snapshot_id)

    def _fs_of(self, snapshot_dir: Path) -> Path:
        """The snapshot's tree in ``snapshot_dir`` (:func:`snapshot_tree`, the one rule)."""
        tree = snapshot_tree(self.snapshotter, snapshot_dir)
        assert tree is not None, "check_snapshotter admits only snapshotters with a tree"
        return tree

    # -- reuse -------------------------------------------------------------------------------

    def _existing(self, chain_id: str, parent: _Snap | None) -> _Snap | None:
        """The namespace's committed snapshot for ``chain_id``, if every part of it is sound.

        Sound = meta.db record with the right parent, a committed backend record whose parent
        is the parent's backend record, and the directory on disk (§8.2: a stale meta.db
        record alone would make containerd skip the layer forever).
        """
        if chain_id in self._built:
            return self._built[chain_id]
        record = self.meta_bucket.bucket(chain_id.encode())
        if record is None or record.get(K.PARENT) != (parent.chain_id.encode() if parent else None):
            return None
        name = record.get(K.NAME)
        backend = self._backend_records().bucket(name) if name else None
        if backend is None or not is_committed(backend):
            return None
        if backend.get(K.PARENT) != (key_bytes(parent.backend_name) if parent else None):
            return None
        snapshot_id = read_backend_id(backend)
        if snapshot_id is None:
            return None
        path = self._fs_of(self._snapshot_dir(snapshot_id))
        if not path.is_dir():
            return None
        return _Snap(chain_id, text(name), snapshot_id, os.fspath(path))  # type: ignore[arg-type]

    # -- unpack ------------------------------------------------------------------------------

    def unpack(
        self,
        layers: Sequence[Mapping[str, Any]],
        diff_ids: Sequence[str],
        blob_path: BlobPath,
        stage: Stage = SILENT_STAGE,
        open_blob: BlobOpener | None = None,
        arrivals: Arrivals | None = None,
    ) -> UnpackResult:
        """Make sure every chain of ``layers`` exists; returns the top chain ID. ``stage``
        advances by each layer blob's size (at once for a chain that already exists) and by
        the files written. ``open_blob``: layers applied in order are read from this stream
        of the blob instead of its file (a blob still being fetched: it raises if the blob
        fails its digest, and the temp snapshot goes with the failed import). ``arrivals``:
        layers applied side by side in worker processes read blobs still being fetched too."""
        if len(layers) != len(diff_ids):
            raise FormatError(
                f"image config lists {len(diff_ids)} diff IDs for {len(layers)} layers"
            )
        if not layers:
            raise FormatError("image has no layers to unpack")
        chains = chain_ids(diff_ids)
        result = UnpackResult(chains[-1])
        below: list[_Snap] = []
        for chain in chains:
            # once one layer has to be built, everything above it is built on top of it
            snap = self._existing(chain, below[-1] if below else None)
            if snap is None:
                break
            result.reused.append(chain)
            below.append(snap)
        for layer in layers[:len(below)]:
            stage.advance(int(layer["size"]))
        todo = [_Layer(layer, diff_id, chain)
                for layer, diff_id, chain in list(zip(layers, diff_ids, chains))[len(below):]]
        if self.snapshotter == "overlayfs" and self.jobs > 1 and len(todo) > 1:
            self._build_overlay_in_parallel(todo, below, blob_path, stage, arrivals)
        elif open_blob is None:
            self._build_reading_ahead(todo, below, blob_path, stage)
        else:
            for item in todo:
                build = self._prepare(item, [s.path for s in below])
                self._apply(build, blob_path, stage, open_blob)
                below.append(self._register(build, below))
        result.created.extend(item.chain_id for item in todo)
        return result

    def _prepare(self, item: "_Layer", below: list[str | Path]) -> "_Build":
        """A fresh temp directory for one snapshot, shaped like the snapshotter makes it;
        ``below`` are the trees of the layers under it, bottom first."""
        parent = below[-1] if below else None
        work = Path(tempfile.mkdtemp(prefix="snap-", dir=self._tmp_dir()))
        os.chmod(work, SNAPSHOT_DIR_MODE if self.snapshotter == "overlayfs" else FS_MODE)
        target = self._fs_of(work)
        if self.snapshotter == "overlayfs":
            self._make_upper(target, parent)
            (work / "work").mkdir()
            os.chmod(work / "work", WORK_MODE)
            lowers = list(reversed(below))
            mode: Mode = "overlay" if parent is not None else "naive"
        else:
            if parent is not None:
                copy_tree(parent, target)
            lowers = []
            mode = "naive"
        snapshot_id = self._next_id
        self._next_id += 1
        return _Build(item, snapshot_id, work, target, lowers, mode)

    @staticmethod
    def _make_upper(target: Path, parent: str | Path | None) -> None:
        """An empty overlay upper dir, owned as its parent layer's (the snapshotter's rule)."""
        target.mkdir()
        os.chmod(target, FS_MODE)
        if parent is not None:
            st = os.stat(parent)
            os.lchown(target, st.st_uid, st.st_gid)

    def _empty_upper(self, build: "_Build") -> None:
        """Start ``build``'s upper dir again, empty."""
        shutil.rmtree(build.target)
        self._make_upper(Path(build.target), build.lowers[0] if build.lowers else None)

    def _job(self, build: "_Build", blob_path: BlobPath, *, side_by_side: bool,
             arrivals: Arrivals | None = None) -> LayerJob:
        """The worker's job; with ``arrivals``, made once the blob's first bytes are there
        (the worker reads the rest as it arrives), else once its file is complete."""
        layer = build.item.layer
        digest = str(layer["digest"])
        if arrivals is None:
            path, committed, arriving = str(blob_path(digest)), "", None
        else:
            temp, final, size = arrivals.arriving(digest)
            path, committed, arriving = str(temp), str(final), size
        return LayerJob(path, str(build.target), build.mode, layer.get("mediaType"),
                        tuple(str(p) for p in build.lowers), build.item.diff_id, self.max_layer_bytes,
                        defer_parents=side_by_side, arriving=arriving, committed_path=committed, digest=digest)

    def _apply(self, build: "_Build", blob_path: BlobPath, stage: Stage, open_blob: BlobOpener | None = None) -> None:
        """In-order apply: every lower is complete, parents get their attributes at once."""
        if open_blob is None:
            build.applied = apply_job(self._job(build, blob_path, side_by_side=False), stage)
            return
        layer = build.item.layer
        job = LayerJob("", str(build.target), build.mode, layer.get("mediaType"), tuple(str(p) for p in build.lowers),
                       build.item.diff_id, self.max_layer_bytes, defer_parents=False, digest=str(layer["digest"]))
        with open_blob(str(layer["digest"])) as blob:
            build.applied = apply_job(job, stage, blob=blob)

    def _build_reading_ahead(self, todo: list["_Layer"], below: list[_Snap], blob_path: BlobPath, stage: Stage) -> None:
        """Apply layers in order from their files, the next one inflating (bounded read-ahead)
        while the current one is still being created, so the inflater does not wait for the
        applier at layer boundaries. Nothing changes in what is verified or when it installs."""
        opened: list[OpenedLayer] = []
        try:
            for index, item in enumerate(todo):
                while len(opened) < min(index + 2, len(todo)):
                    ahead = todo[len(opened)]
                    job = LayerJob(str(blob_path(str(ahead.layer["digest"]))), "", "naive", ahead.layer.get("mediaType"),
                                   (), ahead.diff_id, self.max_layer_bytes, defer_parents=False,
                                   digest=str(ahead.layer["digest"]))
                    opened.append(open_ahead(job, stage, opened[-1] if opened else None))
                build = self._prepare(item, [s.path for s in below])
                build.applied = apply_opened(opened[index], str(build.target), tuple(str(p) for p in build.lowers),
                                             build.mode, stage)
                below.append(self._register(build, below))
        finally:
            for layer in opened:
                layer.close()

    def _build_overlay_in_parallel(self, todo: list["_Layer"], below: list[_Snap], blob_path: BlobPath,
                                   stage: Stage, arrivals: Arrivals | None = None) -> None:
        """Apply overlay layers side by side (worker processes), each as soon as its blob is
        there (or arriving), then finish and register them bottom-up.

        An overlay upper dir depends on its lowers only for the attributes of parent
        directories a layer needs but does not carry; those are created plainly during the
        apply and get their lowers' attributes afterwards, in layer order, once every lower is
        complete. Metadata (ids, sequences, parents) is written in layer order as before.
        """
        builds: list[_Build] = []
        trees: list[str | Path] = [s.path for s in below]
        for item in todo:
            build = self._prepare(item, trees)
            builds.append(build)
            trees.append(build.target)
        # each layer starts once its blob is there or, fetched (``arrivals``), once its first
        # bytes are: the worker reads the rest as it arrives, and stops if the fetch fails
        jobs = [functools.partial(self._job, b, blob_path, side_by_side=True, arrivals=arrivals) for b in builds]
        watch = arrivals.check if arrivals is not None else None
        for build, applied in zip(builds, apply_in_parallel(jobs, self.jobs, stage, watch)):
            build.applied = applied
        for build in builds:
            assert build.applied is not None
            if not finish_deferred_parents(build.target, build.applied.deferred_parents, build.lowers):
                # a lower's default ACL reached directories the layer had filled without it:
                # applied again in order (its lowers are complete now), as containerd would
                self._empty_upper(build)
                build.applied = apply_job(self._job(build, blob_path, side_by_side=False, arrivals=arrivals))
            below.append(self._register(build, below))

    def _register(self, build: "_Build", below: list[_Snap]) -> _Snap:
        """Records for one applied snapshot on top of ``below`` (registered, in layer order):
        backend record (with usage), meta.db record and child link."""
        parent, chain = (below[-1] if below else None), build.item.chain_id
        usage = disk_usage(build.target)
        seq = max(self.meta_bucket.sequence, self._backend_seq) + 1
        self.meta_bucket.sequence = seq
        self._backend_seq = seq
        name = backend_name(self.namespace, seq, chain)
        R.put_backend_snapshot(
            self.backend, name, snapshot_id=build.snapshot_id,
            parent=(parent.backend_name, parent.snapshot_id) if parent else None,
            inodes=usage.inodes, size=usage.size, now_ns=self.now_ns,
        )
        R.put_snapshot_record(self.meta_bucket, chain, name, parent.chain_id if parent else None, self.now_ns)
        if parent is not None:
            R.add_child_link(self.meta_bucket, parent.chain_id, chain)
        snap = _Snap(chain, name, build.snapshot_id, os.fspath(build.target), pending=os.fspath(build.work))
        self._built[chain] = snap
        return snap

    def _tmp_dir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfiles.temp_dir(self.dir, TMP_PREFIX)
            # each snapshot tree gets a block group of its own (ext4 without a journal slows
            # every inode allocation in a group with recently removed inodes: ctrconv.placement)
            spread_subdirectories(self._tmp)
        return self._tmp

    # -- install -----------------------------------------------------------------------------

    def install(self) -> None:
        """Rename every built directory to ``snapshots/<id>`` (after metadata.db was written)."""
        for snap in self._built.values():
            if snap.pending is None:
                continue
            final = self._snapshot_dir(snap.snapshot_id)
            os.rename(snap.pending, final)
            snap.path = os.fspath(self._fs_of(final))
            snap.pending = None
        fsync_dir(self.snapshots_dir)

    def close(self) -> None:
        """Drop whatever was built but not installed (a failed import)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            tempfiles.forget(self._tmp)
            self._tmp = None
