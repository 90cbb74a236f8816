"""The one completeness rule (``ctrconv.pipeline.completeness``) on small in-memory images."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pytest

from ctrconv.layers import chain_ids
from ctrconv.oci import mediatypes as mt
from ctrconv.pipeline.completeness import RecordedLabels, assess

SNAP = "containerd.io/gc.ref.snapshot.overlayfs"


class Store:
    """A blob source over a dict, for the rule alone."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, data: bytes, media_type: str, keep: bool = True, **extra: Any) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if keep:
            self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def exists(self, digest) -> bool:
        return str(digest) in self.blobs

    def size(self, digest):
        return len(self.blobs[str(digest)]) if self.exists(digest) else None

    def open(self, digest):
        return io.BytesIO(self.blobs[str(digest)])

    def read_small(self, digest, size: int) -> bytes:
        return self.blobs[str(digest)]


def _image(store: Store, arch: str, keep_layers: bool = True) -> tuple[dict, dict, list[dict], str]:
    layers = [store.put(f"layer {arch} {i}".encode(), mt.OCI_LAYER_GZIP, keep_layers) for i in range(2)]
    diff_ids = ["sha256:" + hashlib.sha256(f"diff {arch} {i}".encode()).hexdigest() for i in range(2)]
    config = store.put(json.dumps({"architecture": arch, "os": "linux",
                                   "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode(), mt.OCI_CONFIG)
    manifest = store.put(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config,
                                     "layers": layers}).encode(), mt.OCI_MANIFEST)
    return manifest, config, layers, chain_ids(diff_ids)[-1]


def test_a_whole_single_manifest_image_is_ok():
    store = Store()
    manifest, *_ = _image(store, "amd64")
    verdict = assess(store, manifest)
    assert verdict.ok and len(verdict.whole) == 1 and not verdict.broken


@pytest.mark.parametrize("labelled_layers", [False, True])
def test_layers_discarded_after_unpack_are_usable_lost_layers_are_not(labelled_layers):
    """CRI's discard_unpacked_layers leaves the manifest labelled for its config only and the
    config labelled with the unpacked chain; a layer lost any other way is damage."""
    store = Store()
    manifest, config, layers, top = _image(store, "amd64", keep_layers=False)
    labels = {manifest["digest"]: {"containerd.io/gc.ref.content.config": config["digest"]},
              config["digest"]: {SNAP: top}}
    if labelled_layers:
        labels[manifest["digest"]].update({f"containerd.io/gc.ref.content.l.{i}": l["digest"] for i, l in enumerate(layers)})
    verdict = assess(store, manifest, labels_of=lambda d: labels.get(d, {}),
                     snapshot_exists=lambda sn, key: (sn, key) == ("overlayfs", top))
    if labelled_layers:
        assert not verdict.ok and {d["digest"] for d in verdict.broken} == {l["digest"] for l in layers}
    else:
        assert verdict.ok and verdict.discarded and not verdict.whole


@pytest.mark.parametrize("recorded", [False, True])
def test_layers_docker_never_fetched_are_usable_recorded_then_lost_are_not(recorded):
    """Docker's containerd store labels every layer but never fetches one whose snapshot
    exists: no content record at all. A layer whose record survives while its blob is gone
    was stored and lost: damage."""
    store = Store()
    manifest, config, layers, top = _image(store, "amd64", keep_layers=False)
    labels = {manifest["digest"]: {"containerd.io/gc.ref.content.config": config["digest"],
                                   **{f"containerd.io/gc.ref.content.l.{i}": l["digest"] for i, l in enumerate(layers)}},
              config["digest"]: {SNAP: top}}
    records = {manifest["digest"], config["digest"]} | ({layers[0]["digest"]} if recorded else set())
    verdict = assess(store, manifest, labels_of=RecordedLabels(lambda d: labels.get(d, {}), records.__contains__),
                     snapshot_exists=lambda sn, key: (sn, key) == ("overlayfs", top))
    if recorded:
        assert not verdict.ok and {d["digest"] for d in verdict.broken} == {l["digest"] for l in layers}
    else:
        assert verdict.ok and verdict.discarded and not verdict.whole and not verdict.broken


class StoreWithOrphanFiles(Store):
    """A namespace view whose content store also holds files the namespace has no record of."""

    def __init__(self, orphan_files: set[str]) -> None:
        super().__init__()
        self.orphan_files = orphan_files

    def on_disk_elsewhere(self, digest) -> bool:
        return str(digest) in self.orphan_files


def test_a_layer_whose_record_is_lost_but_whose_file_remains_is_damage_not_never_fetched():
    """A deleted content record (or a destroyed meta.db page) leaves the blob file on disk; a
    layer Docker never fetched has no file. Only the second is usable."""
    for orphan in (False, True):
        store = StoreWithOrphanFiles(set())
        manifest, config, layers, top = _image(store, "amd64", keep_layers=False)
        if orphan:
            store.orphan_files.add(layers[1]["digest"])
        labels = {manifest["digest"]: {"containerd.io/gc.ref.content.config": config["digest"],
                                       **{f"containerd.io/gc.ref.content.l.{i}": l["digest"] for i, l in enumerate(layers)}},
                  config["digest"]: {SNAP: top}}
        records = {manifest["digest"], config["digest"]}
        verdict = assess(store, manifest, labels_of=RecordedLabels(lambda d: labels.get(d, {}), records.__contains__),
                         snapshot_exists=lambda sn, key: (sn, key) == ("overlayfs", top))
        assert verdict.ok is not orphan, orphan
        assert bool(verdict.broken) is orphan


@pytest.mark.parametrize("recorded_elsewhere", [False, True])
def test_a_file_another_namespace_records_is_no_sign_of_a_lost_record(recorded_elsewhere):
    """The file of a layer this namespace never recorded is on disk because another namespace
    records it (``ctr images import`` into ``default``, then Docker pulled the image into
    ``moby`` and skipped its layers): still never fetched, usable. The same file that no
    namespace records is an orphan: a lost record, damage."""
    store = StoreWithOrphanFiles(set())
    manifest, config, layers, top = _image(store, "amd64", keep_layers=False)
    store.orphan_files |= {layer["digest"] for layer in layers}
    labels = {manifest["digest"]: {"containerd.io/gc.ref.content.config": config["digest"],
                                   **{f"containerd.io/gc.ref.content.l.{i}": l["digest"] for i, l in enumerate(layers)}},
              config["digest"]: {SNAP: top}}
    records = {manifest["digest"], config["digest"]}
    elsewhere = store.orphan_files.__contains__ if recorded_elsewhere else None
    verdict = assess(store, manifest,
                     labels_of=RecordedLabels(lambda d: labels.get(d, {}), records.__contains__, elsewhere),
                     snapshot_exists=lambda sn, key: (sn, key) == ("overlayfs", top))
    assert verdict.ok is recorded_elsewhere and bool(verdict.discarded) is recorded_elsewhere
    assert bool(verdict.broken) is not recorded_elsewhere


def test_discarded_needs_the_snapshot_to_exist():
    store = Store()
    manifest, config, layers, top = _image(store, "amd64", keep_layers=False)
    labels = {config["digest"]: {SNAP: top}}
    verdict = assess(store, manifest, labels_of=lambda d: labels.get(d, {}), snapshot_exists=lambda sn, key: False)
    assert not verdict.ok and len(verdict.broken) == 2


def test_index_platforms_never_pulled_or_partial_are_excused_while_one_is_usable():
    store = Store()
    host, *_ = _image(store, "amd64")
    partial, _, other_layers, _ = _image(store, "arm64", keep_layers=False)
    absent = store.put(b'{"schemaVersion":2}', mt.OCI_MANIFEST, keep=False)
    index = store.put(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {**host, "platform": {"os": "linux", "architecture": "amd64"}},
        {**partial, "platform": {"os": "linux", "architecture": "arm64"}},
        {**absent, "platform": {"os": "linux", "architecture": "s390x"}},
    ]}).encode(), mt.OCI_INDEX)
    verdict = assess(store, index)
    assert verdict.ok and not verdict.broken
    assert [m.descriptor["digest"] for m in verdict.partial] == [partial["digest"]]
    assert [d["digest"] for d in verdict.absent] == [absent["digest"]]


def test_an_index_with_no_usable_platform_is_broken():
    store = Store()
    partial, _, layers, _ = _image(store, "arm64", keep_layers=False)
    index = store.put(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {**partial, "platform": {"os": "linux", "architecture": "arm64"}}]}).encode(), mt.OCI_INDEX)
    verdict = assess(store, index)
    assert not verdict.ok and {d["digest"] for d in verdict.broken} == {l["digest"] for l in layers}


def test_a_layer_every_platform_shares_lost_breaks_the_image():
    store = Store()
    host, _, host_layers, _ = _image(store, "amd64")
    shared = host_layers[0]
    config = store.put(b'{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}', mt.OCI_CONFIG)
    other = store.put(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config,
                                  "layers": [shared]}).encode(), mt.OCI_MANIFEST)
    index = store.put(json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {**host, "platform": {"os": "linux", "architecture": "amd64"}},
        {**other, "platform": {"os": "linux", "architecture": "arm64"}}]}).encode(), mt.OCI_INDEX)
    del store.blobs[shared["digest"]]
    verdict = assess(store, index)
    assert not verdict.ok and [d["digest"] for d in verdict.broken] == [shared["digest"]]


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
@pytest.mark.parametrize("namespace", ["moby", "default", "k8s.io"])
def test_only_dockers_store_and_transfer_service_lines_count_another_namespaces_file_as_never_fetched(namespace, line):
    """1.6's pulls and imports record every blob they use (sharing another namespace's file),
    so there, outside Docker's store, a layer unrecorded beside such a file lost its record (the
    damage catalogue's content-record-deleted); ``moby`` may never record it, and neither may
    any namespace of a meta.db 1.7 or 2.x wrote (their transfer service's pulls fetch no layer
    whose snapshot exists)."""
    from ctrconv.pipeline.completeness import lookups_in, skips_shared_blobs

    layer = "sha256:" + "a" * 64

    class Bucket:
        def __init__(self, holds: bool) -> None:
            self.holds = holds

        def bucket(self, *path: bytes):
            return object() if self.holds and path[-1] == layer.encode() else None

    class V1:
        def buckets(self):
            return [(namespace.encode(), Bucket(False)), (b"other", Bucket(True))]

        def bucket(self, name: bytes):
            return Bucket(name == b"other")

    class Meta:
        v1 = V1()
        writer_line = line

    labels_of, _ = lookups_in(Meta(), namespace)
    assert isinstance(labels_of, RecordedLabels) and not labels_of.recorded(layer)
    skips = namespace == "moby" or line != "1.6"
    assert labels_of.elsewhere(layer) is skips is skips_shared_blobs(namespace, line)
