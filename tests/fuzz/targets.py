"""Fuzz targets: each feeds one input to a group of ctrconv readers/writers.

A :class:`Target` has a seed, a mutator and ``run(data)``; :func:`check` runs it under the
bounds of :mod:`fuzz.bounds`. ``run`` returns normally or raises whatever ctrconv raised;
the bounds decide whether that was allowed. Files are written to a fresh temp dir per case.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fuzz import mutators as M
from fuzz import seeds
from fuzz.bounds import DEFAULT_PEAK, run_case

from ctrconv import api
from ctrconv.bolt.check import check_bolt
from ctrconv.bolt.reader import BoltFile
from ctrconv.containerd.metadata import MetadataDB, SnapshotterDB
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError
from ctrconv.oci.validate import parse_config_diff_ids, validate_json
from ctrconv.image.plan import image_platforms, plan_image
from ctrconv.streams import CHUNK, VerifyingReader


@dataclass(frozen=True)
class Target:
    name: str
    seed: Callable[[], bytes]
    mutate: M.Mutator
    run: Callable[[bytes], Any]
    seconds: float = 10.0
    peak: int | None = DEFAULT_PEAK


def check(target: Target, data: bytes) -> Any:
    """Run one case under the bounds; raises :class:`fuzz.bounds.Finding` on a contract breach."""
    return run_case(lambda: target.run(data), seconds=target.seconds, peak=target.peak)


def _tempfile(data: bytes, name: str) -> tuple[tempfile.TemporaryDirectory[str], Path]:
    tmp = tempfile.TemporaryDirectory(prefix="ctrconv-fuzz-")
    path = Path(tmp.name) / name
    path.write_bytes(data)
    return tmp, path


# -- bolt ------------------------------------------------------------------------------------


def _walk_meta(db: BoltFile) -> None:
    meta = MetadataDB(db)
    meta.schema_version
    for ns in meta.namespaces():
        list(meta.images(ns))
        list(meta.blobs(ns))
        list(meta.ingests(ns))
        list(meta.leases(ns))
        meta.containers(ns)
        for snapshotter in meta.snapshotters(ns):
            meta.snapshot_sequence(ns, snapshotter)
            list(meta.snapshots(ns, snapshotter))
    # what ``ls -A`` and ``ls -q -A`` read of it (over an empty content store: every image
    # goes through the walks, which look up labels and snapshots in the namespace's buckets)
    from ctrconv.containerd.content import ContentStore
    from ctrconv.inventory import image_names, list_images
    from ctrconv.oci import platform as plat

    with tempfile.TemporaryDirectory(prefix="ctrconv-fuzz-content-") as empty:
        namespaces = meta.namespaces()
        for listing in (lambda: image_names(meta, namespaces),
                        lambda: list_images(meta, ContentStore(empty), namespaces, plat.default_matcher())):
            try:
                listing()
            except CtrconvError:
                pass


def _walk_snapshotter(db: BoltFile) -> None:
    snaps = SnapshotterDB(db)
    snaps.sequence
    list(snaps.snapshots())
    list(snaps.parent_links())


def run_bolt(data: bytes, walk: Callable[[BoltFile], None]) -> None:
    """Structure check, full dump with decoded values, and the containerd record walk."""
    tmp, path = _tempfile(data, "bolt.db")
    with tmp:
        check_bolt(str(path))
        api.dump_bolt(path)
        with BoltFile(path) as db:
            walk(db)


def run_meta_db(data: bytes) -> None:
    run_bolt(data, _walk_meta)


def run_snapshotter_db(data: bytes) -> None:
    run_bolt(data, _walk_snapshotter)


# -- JSON documents --------------------------------------------------------------------------


class MemorySource:
    """A BlobSource over a dict, for the plan walk (serves every blob by digest)."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def _get(self, digest: Digest | str) -> bytes | None:
        return self.blobs.get(str(digest))

    def exists(self, digest: Digest | str) -> bool:
        return self._get(digest) is not None

    def size(self, digest: Digest | str) -> int | None:
        data = self._get(digest)
        return None if data is None else len(data)

    def open(self, digest: Digest | str) -> io.BytesIO:
        return io.BytesIO(self._get(digest) or b"")

    def read_small(self, digest: Digest | str, size: int) -> bytes:
        d = Digest.parse(digest)
        reader = VerifyingReader(self.open(d), d, size)
        return b"".join(iter(lambda: reader.read(CHUNK), b""))


def run_json(data: bytes) -> None:
    """Every document parser on the bytes, under each media type, then a plan walk rooted at it."""
    blobs = {seeds.sha256(v): v for k, v in seeds.image_blobs().items() if k != "layer_tar"}
    for media_type in seeds.json_seeds():
        try:
            validate_json(media_type, data)
        except CtrconvError:
            pass
        source = MemorySource({**blobs, seeds.sha256(data): data})
        target = {"mediaType": media_type, "digest": seeds.sha256(data), "size": len(data)}
        try:
            plan_image(source, target)
        except CtrconvError:
            pass
        image_platforms(source, target)
    parse_config_diff_ids(data)


# -- archives --------------------------------------------------------------------------------


def _consume_source(path: Path) -> None:
    from ctrconv.sources import open_source

    with open_source(path) as source:
        for entry in source.entries():
            plan = plan_image(source, entry.descriptor)
            for desc in plan.blobs:
                if desc in plan.missing:
                    continue
                d = Digest.parse(desc["digest"])
                with source.open(d) as stream:
                    reader = VerifyingReader(stream, d, desc["size"])
                    while reader.read(CHUNK):
                        pass


def run_archive(data: bytes) -> None:
    """Open the tar as an image source, plan and stream every blob; then ``verify -i``."""
    tmp, path = _tempfile(data, "image.tar")
    with tmp:
        try:
            _consume_source(path)
        except CtrconvError:
            pass
        api.verify_layout(str(path))


# -- layers ----------------------------------------------------------------------------------


def _snapshot(top: str) -> list[tuple[str, int, int]]:
    result = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            result.append((os.path.join(dirpath, name), st.st_mode, st.st_size))
    return sorted(result)


class EscapeError(AssertionError):
    """A layer apply wrote outside its target directory."""


def run_layer(data: bytes, *, compressed: bool = False) -> None:
    """Apply the tar (both modes) into a target beside a sentinel dir; the sentinel must not change."""
    from ctrconv.layers import apply_layer, unpack_layer

    with tempfile.TemporaryDirectory(prefix="ctrconv-fuzz-") as tmp:
        sentinel = os.path.join(tmp, "sentinel")
        os.makedirs(os.path.join(sentinel, "etc"))
        Path(sentinel, "etc", "passwd").write_text("root:x:0:0\n")
        os.symlink("../sentinel", os.path.join(tmp, "outside-link"))
        work = os.path.join(tmp, "work")

        def outside() -> list[tuple[str, int, int]]:
            return [e for e in _snapshot(tmp) if e[0] != work and not e[0].startswith(work + "/")]

        before = outside()
        for mode in ("naive", "overlay"):
            target = os.path.join(work, mode, "fs")
            lower = os.path.join(work, mode, "lower")
            os.makedirs(target)
            os.makedirs(os.path.join(lower, "var"))
            try:
                if compressed:
                    unpack_layer(io.BytesIO(data), target, mode=mode, lowers=[lower],
                                 max_bytes=64 << 20, external=False)
                else:
                    apply_layer(io.BytesIO(data), target, mode=mode, lowers=[lower])
            except CtrconvError:
                pass
            if outside() != before:
                raise EscapeError(f"layer apply ({mode}) changed files outside its target")


def _gzip_seed() -> bytes:
    return seeds.image_blobs()["layer"]


def mutate_gzip(data: bytes, rng: random.Random) -> bytes:
    """Either damage the compressed bytes, or compress a damaged tar."""
    import gzip

    if rng.random() < 0.5:
        return M.chain(M.GENERIC, data, rng, most=2)
    return gzip.compress(M.mutate_tar(seeds.layer_tar(), rng), mtime=0)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("meta-db", lambda: seeds.bolt_seed("meta.db"), M.mutate_bolt, run_meta_db),
        Target("snapshotter-db", lambda: seeds.bolt_seed("metadata.db"), M.mutate_bolt, run_snapshotter_db),
        Target("json-index", lambda: seeds.image_blobs()["index"], M.mutate_json, run_json),
        Target("json-manifest", lambda: seeds.image_blobs()["manifest"], M.mutate_json, run_json),
        Target("json-config", lambda: seeds.image_blobs()["config"], M.mutate_json, run_json),
        Target("oci-tar", seeds.oci_tar, M.mutate_tar, run_archive),
        Target("docker-archive", seeds.docker_archive, M.mutate_tar, run_archive),
        Target("layer-tar", seeds.layer_tar, M.mutate_tar, run_layer),
        Target("layer-gzip", _gzip_seed, mutate_gzip, lambda d: run_layer(d, compressed=True)),
    )
}
