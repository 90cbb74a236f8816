"""Offline tests of the containerd-root writer (``ctrconv import`` / ``copy_images_to_root``).

Images are built in the test as OCI layouts (small gzip layers) and read through a tiny
layout source, so these tests need neither a daemon nor the sources package. What a real
containerd makes of the written roots is checked in test_import_interop.py.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ctrconv.bolt.reader import BoltFile, read_tree
from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_time, decode_uvarint_exact, decode_varint
from ctrconv.sinks.containerd_root import copy_images_to_root
from ctrconv.sinks.containerd_root import records as R
from ctrconv.errors import DigestMismatchError, LockedError, MissingContentError, UsageError
from ctrconv.layers.chain import chain_ids

from support.layouts import LayoutBuilder, LayoutSource, assert_superset, layer_tar

META = Path(K.METADATA_PLUGIN_DIR) / K.META_DB
OVERLAY = Path(K.snapshotter_dir("overlayfs"))


@pytest.fixture
def layout(tmp_path: Path) -> tuple[LayoutBuilder, dict[str, Any]]:
    builder = LayoutBuilder(tmp_path / "layout")
    img = builder.image(
        "docker.io/library/t:1",
        [{"etc/hello": b"hello\n", "bin/tool": b"#!/bin/sh\n"}, {"etc/hello": b"bye\n", "etc/new": b"n"}],
    )
    return builder, img


def _ns(tree: BucketTree, ns: str = "default") -> BucketTree:
    node = tree.bucket(K.V1, ns.encode())
    assert node is not None
    return node


def _labels(record: BucketTree) -> dict[str, str]:
    return R.read_map(record.bucket(K.LABELS))


# -- labels -------------------------------------------------------------------------------------


def test_children_labels_number_like_containerd() -> None:
    children = [
        {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "1" * 64},
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": "sha256:" + "2" * 64},
        {"mediaType": "application/vnd.example.sbom", "digest": "sha256:" + "3" * 64},
        {"mediaType": "application/vnd.example.sbom", "digest": "sha256:" + "4" * 64},
        {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "5" * 64},
    ]
    assert R.children_labels(children) == {
        "containerd.io/gc.ref.content.config": "sha256:" + "c" * 64,
        "containerd.io/gc.ref.content.l.0": "sha256:" + "1" * 64,
        "containerd.io/gc.ref.content.l.1": "sha256:" + "2" * 64,
        "containerd.io/gc.ref.content.0": "sha256:" + "3" * 64,
        "containerd.io/gc.ref.content.1": "sha256:" + "4" * 64,
        "containerd.io/gc.ref.content.config1": "sha256:" + "5" * 64,
    }
    index_children = [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "a" * 64},
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + "b" * 64},
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": "sha256:" + "d" * 64},
    ]
    assert R.children_labels(index_children) == {
        "containerd.io/gc.ref.content.m.0": "sha256:" + "a" * 64,
        "containerd.io/gc.ref.content.0": "sha256:" + "b" * 64,
        "containerd.io/gc.ref.content.m.1": "sha256:" + "d" * 64,
    }


# -- a new root ---------------------------------------------------------------------------------


def test_no_unpack_into_new_root_writes_records_blobs_and_modes(tmp_path: Path, layout) -> None:
    builder, img = layout
    root = tmp_path / "root"
    report = copy_images_to_root(LayoutSource(builder.path), root, unpack=False)
    assert [(i.name, i.status) for i in report.images] == [("docker.io/library/t:1", "added")]
    assert report.blobs_written == 4 and report.written

    tree = read_tree(root / META)
    assert decode_varint(tree.bucket(K.V1).get(K.VERSION)) == 3
    ns = _ns(tree)
    image = ns.bucket(K.IMAGES, b"docker.io/library/t:1")
    target = image.bucket(K.TARGET)
    assert target.get(K.DIGEST) == img["manifest"]["digest"].encode()
    assert target.get(K.MEDIATYPE) == b"application/vnd.oci.image.manifest.v1+json"
    assert decode_varint(target.get(K.SIZE)) == img["manifest"]["size"]
    assert R.read_map(image.bucket(K.ANNOTATIONS))["io.containerd.image.name"] == "docker.io/library/t:1"
    assert image.bucket(K.LABELS) is None  # no empty buckets
    assert len(image.get(K.CREATED_AT)) == 15 and image.get(K.CREATED_AT)[-2:] == b"\xff\xff"

    blobs = ns.bucket(K.CONTENT, K.BLOB)
    assert set(blobs.entries) == {
        d["digest"].encode() for d in (img["manifest"], img["config"], *img["layers"])
    }
    manifest = blobs.bucket(img["manifest"]["digest"].encode())
    assert _labels(manifest) == {
        "containerd.io/gc.ref.content.config": img["config"]["digest"],
        "containerd.io/gc.ref.content.l.0": img["layers"][0]["digest"],
        "containerd.io/gc.ref.content.l.1": img["layers"][1]["digest"],
    }
    for layer in img["layers"]:  # --no-unpack: no uncompressed label, like ctr
        rec = blobs.bucket(layer["digest"].encode())
        assert rec.bucket(K.LABELS) is None
        assert decode_varint(rec.get(K.SIZE)) == layer["size"]
    assert blobs.bucket(img["config"]["digest"].encode()).bucket(K.LABELS) is None

    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(root / K.METADATA_PLUGIN_DIR) == 0o711
    assert mode(root / META) == 0o644
    blob = root / K.CONTENT_PLUGIN_DIR / "blobs" / "sha256" / img["layers"][0]["digest"][7:]
    assert mode(blob) == 0o444
    assert not [p for p in (root / K.CONTENT_PLUGIN_DIR).iterdir() if p.name.startswith(".ctrconv")]
    with BoltFile(root / META) as db:
        assert db.meta.freelist_synced  # 1.6 style


def test_new_root_for_containerd_2_has_version_4_and_no_freelist(tmp_path: Path, layout) -> None:
    builder, _ = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, unpack=False, containerd_version="2.x")
    with BoltFile(root / META) as db:
        assert not db.meta.freelist_synced
        assert decode_varint(db.root.bucket(K.V1).get(K.VERSION)) == 4


def test_unpack_overlayfs_builds_chain_records_and_directories(tmp_path: Path, layout) -> None:
    builder, img = layout
    root = tmp_path / "root"
    report = copy_images_to_root(LayoutSource(builder.path), root)
    chains = chain_ids(img["diff_ids"])
    assert report.images[0].unpacked == chains[-1]
    assert report.images[0].snapshots_created == 2

    ns = _ns(read_tree(root / META))
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    assert _labels(blobs.bucket(img["config"]["digest"].encode())) == {
        "containerd.io/gc.ref.snapshot.overlayfs": chains[-1]
    }
    for layer, diff_id in zip(img["layers"], img["diff_ids"]):
        assert _labels(blobs.bucket(layer["digest"].encode())) == {"containerd.io/uncompressed": diff_id}

    snaps = ns.bucket(K.SNAPSHOTS, b"overlayfs")
    assert snaps.sequence == 2
    base, top = (snaps.bucket(c.encode()) for c in chains)
    assert base.get(K.NAME) == f"default/1/{chains[0]}".encode() and base.get(K.PARENT) is None
    assert top.get(K.NAME) == f"default/2/{chains[1]}".encode() and top.get(K.PARENT) == chains[0].encode()
    assert base.bucket(K.CHILDREN).entries == {chains[1].encode(): b""}

    backend = read_tree(root / OVERLAY / "metadata.db")
    records = backend.bucket(K.V1, K.SNAPSHOTS)
    assert records.sequence == 2
    b0 = records.bucket(f"default/1/{chains[0]}".encode())
    b1 = records.bucket(f"default/2/{chains[1]}".encode())
    assert decode_uvarint_exact(b0.get(K.ID)) == 1 and decode_uvarint_exact(b1.get(K.ID)) == 2
    assert b0.get(K.KIND) == b1.get(K.KIND) == b"\x03"
    assert b1.get(K.PARENT) == f"default/1/{chains[0]}".encode()
    assert decode_varint(b0.get(K.INODES)) == 5  # fs, etc, etc/hello, bin, bin/tool
    decode_time(b1.get(K.UPDATED_AT))
    assert backend.bucket(K.V1, K.PARENTS).entries == {b"\x01\x00\x02": f"default/2/{chains[1]}".encode()}

    sdir = root / OVERLAY / "snapshots"
    assert sorted(os.listdir(sdir)) == ["1", "2"]
    assert (sdir / "1" / "fs" / "etc" / "hello").read_bytes() == b"hello\n"
    assert (sdir / "2" / "fs" / "etc" / "hello").read_bytes() == b"bye\n"
    assert not (sdir / "2" / "fs" / "bin").exists()  # overlay upper: only this layer
    assert stat.S_IMODE(os.stat(sdir / "2").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sdir / "2" / "work").st_mode) == 0o711
    assert stat.S_IMODE(os.stat(sdir / "2" / "fs").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / OVERLAY).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(root / OVERLAY / "metadata.db").st_mode) == 0o600
    assert [p.name for p in (root / OVERLAY).iterdir() if p.name.startswith(".ctrconv")] == []


def test_unpack_native_holds_full_rootfs_per_snapshot(tmp_path: Path, layout) -> None:
    builder, _ = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, snapshotter="native")
    sdir = root / K.snapshotter_dir("native") / "snapshots"
    assert (sdir / "2" / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert (sdir / "2" / "etc" / "hello").read_bytes() == b"bye\n"
    assert (sdir / "1" / "etc" / "hello").read_bytes() == b"hello\n"
    ns = _ns(read_tree(root / META))
    assert ns.bucket(K.SNAPSHOTS, b"native") is not None


# -- idempotence, merge, reuse ------------------------------------------------------------------


def test_reimport_is_idempotent_and_writes_nothing(tmp_path: Path, layout) -> None:
    builder, _ = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root)
    before = {p: os.stat(root / p).st_ino for p in (META, OVERLAY / "metadata.db")}
    report = copy_images_to_root(LayoutSource(builder.path), root)
    assert not report.written
    assert [i.status for i in report.images] == ["present"]
    assert report.images[0].snapshots_reused == 2 and report.blobs_written == 0
    assert {p: os.stat(root / p).st_ino for p in before} == before
    assert not list((root / K.METADATA_PLUGIN_DIR).glob("*.bak-*"))


def test_second_image_reuses_shared_chain_and_keeps_every_record(tmp_path: Path, layout) -> None:
    builder, img = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root)
    old_meta = read_tree(root / META)
    old_backend = read_tree(root / OVERLAY / "metadata.db")

    other = LayoutBuilder(tmp_path / "other")
    img2 = other.image("docker.io/library/t:2", [
        {"etc/hello": b"hello\n", "bin/tool": b"#!/bin/sh\n"}, {"etc/hello": b"bye\n", "etc/new": b"n"},
        {"etc/third": b"3"},
    ], tag="two")
    report = copy_images_to_root(LayoutSource(other.path), root)
    assert report.images[0].snapshots_reused == 2 and report.images[0].snapshots_created == 1
    assert report.backups and all(Path(b).exists() for b in report.backups)

    new_meta = read_tree(root / META)
    chains = chain_ids(img2["diff_ids"])
    # nothing old changes; the reused top snapshot gains a child link
    assert_superset(old_meta, new_meta, allowed={(b"v1", b"default", b"snapshots", b"overlayfs")})
    old_top = _ns(old_meta).bucket(K.SNAPSHOTS, b"overlayfs", chains[1].encode())
    assert old_top.bucket(K.CHILDREN) is None
    children = _ns(new_meta).bucket(K.SNAPSHOTS, b"overlayfs", chains[1].encode(), K.CHILDREN)
    assert children.entries == {chains[2].encode(): b""}
    assert_superset(old_backend, read_tree(root / OVERLAY / "metadata.db"),
                    allowed={(b"v1", b"snapshots")})
    assert sorted(os.listdir(root / OVERLAY / "snapshots")) == ["1", "2", "3"]
    # the backup is the previous file, byte for byte
    backup_meta = [Path(b) for b in report.backups if Path(b).name.startswith("meta.db")]
    assert read_tree(backup_meta[0]) == old_meta


def test_stale_snapshot_record_without_backend_is_rebuilt(tmp_path: Path, layout) -> None:
    builder, img = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root)
    # lose the backend: containerd would skip the layers forever (docs §8.2)
    (root / OVERLAY / "metadata.db").unlink()
    for d in (root / OVERLAY / "snapshots").iterdir():
        import shutil
        shutil.rmtree(d)
    report = copy_images_to_root(LayoutSource(builder.path), root)
    assert report.images[0].snapshots_created == 2
    snaps = _ns(read_tree(root / META)).bucket(K.SNAPSHOTS, b"overlayfs")
    chains = chain_ids(img["diff_ids"])
    assert snaps.bucket(chains[1].encode()).get(K.NAME) == f"default/4/{chains[1]}".encode()
    assert sorted(os.listdir(root / OVERLAY / "snapshots")) == ["1", "2"]


def test_snapshot_ids_skip_leftover_directories(tmp_path: Path, layout) -> None:
    builder, _ = layout
    root = tmp_path / "root"
    (root / OVERLAY / "snapshots" / "7").mkdir(parents=True)
    copy_images_to_root(LayoutSource(builder.path), root)
    assert sorted(os.listdir(root / OVERLAY / "snapshots"), key=int) == ["7", "8", "9"]


def test_k8s_namespace_gets_cri_labels_and_pin(tmp_path: Path, layout) -> None:
    builder, _ = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, "k8s.io", unpack=False, pin=True)
    image = _ns(read_tree(root / META), "k8s.io").bucket(K.IMAGES, b"docker.io/library/t:1")
    assert _labels(image) == {"io.cri-containerd.image": "managed", "io.cri-containerd.pinned": "pinned"}


def test_name_option_and_retarget(tmp_path: Path, layout) -> None:
    builder, img = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, unpack=False, name="example.com/x:y")
    other = LayoutBuilder(tmp_path / "other")
    img2 = other.image("docker.io/library/z:1", [{"a": b"a"}])
    report = copy_images_to_root(LayoutSource(other.path), root, unpack=False, name="example.com/x:y")
    assert report.images[0].status == "updated"
    image = _ns(read_tree(root / META)).bucket(K.IMAGES, b"example.com/x:y")
    assert image.bucket(K.TARGET).get(K.DIGEST) == img2["manifest"]["digest"].encode()
    # the old image's blobs stay recorded; containerd's GC decides about them
    assert _ns(read_tree(root / META)).bucket(K.CONTENT, K.BLOB, img["manifest"]["digest"].encode())


# -- failures leave the root as it was ----------------------------------------------------------


def _snapshot_of(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_corrupt_blob_fails_and_changes_nothing(tmp_path: Path, layout) -> None:
    builder, img = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, unpack=False)
    before = _snapshot_of(root)
    other = LayoutBuilder(tmp_path / "other")
    img2 = other.image("docker.io/library/bad:1", [{"x": b"x" * 100}])
    blob = other.path / "blobs" / "sha256" / img2["layers"][0]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError):
        copy_images_to_root(LayoutSource(other.path), root)
    assert _snapshot_of(root) == before


def test_wrong_diff_id_fails_before_any_metadata(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(DigestMismatchError):
        copy_images_to_root(LayoutSource(_wrong_diff_id_layout(tmp_path / "layout").path), root)
    assert not root.exists()  # the failed import created the root, so it removed it again


def _wrong_diff_id_layout(path: Path) -> LayoutBuilder:
    """A one-layer image whose config's diff ID is not its layer's: the unpack fails."""
    builder = LayoutBuilder(path)
    layer = builder.blob(gzip.compress(layer_tar({"f": b"1"})), "application/vnd.oci.image.layer.v1.tar+gzip")
    config = builder.blob(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = builder.blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                        "config": config, "layers": [layer]}).encode(),
                            "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"io.containerd.image.name": "docker.io/library/w:1"}
    (builder.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    return builder


def test_failed_unpack_into_a_root_without_a_snapshotter_leaves_no_directory(tmp_path: Path, layout) -> None:
    """The snapshotter's directories the failed import made go again with its half-built tree
    (left, the root read as one with an overlayfs snapshotter and no database), and at once,
    not when the process exits."""
    builder, _ = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, unpack=False)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    with pytest.raises(DigestMismatchError):
        copy_images_to_root(LayoutSource(_wrong_diff_id_layout(tmp_path / "bad").path), root)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    assert not (root / "io.containerd.snapshotter.v1.overlayfs").exists()


def test_missing_blob_in_input_is_refused(tmp_path: Path, layout) -> None:
    builder, img = layout
    (builder.path / "blobs" / "sha256" / img["layers"][1]["digest"][7:]).unlink()
    with pytest.raises(MissingContentError):
        copy_images_to_root(LayoutSource(builder.path), tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_locked_root_is_refused(tmp_path: Path, layout) -> None:
    builder, _ = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, unpack=False)
    with open(root / META, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running containerd holds
        with pytest.raises(LockedError):
            copy_images_to_root(LayoutSource(builder.path), root, unpack=False, name="x.io/a:b")


def test_stale_temp_dirs_of_a_crash_are_removed(tmp_path: Path, layout) -> None:
    builder, _ = layout
    root = tmp_path / "root"
    leftovers = [root / K.CONTENT_PLUGIN_DIR / ".ctrconv-tmp-dead", root / OVERLAY / ".ctrconv-tmp-dead"]
    for p in leftovers:
        (p / "snap-x").mkdir(parents=True)
    copy_images_to_root(LayoutSource(builder.path), root)
    assert not any(p.exists() for p in leftovers)


def test_bad_options(tmp_path: Path, layout) -> None:
    builder, _ = layout
    with pytest.raises(UsageError):
        copy_images_to_root(LayoutSource(builder.path), tmp_path / "r", platform=["linux/amd64"], all_platforms=True)
    with pytest.raises(UsageError):
        copy_images_to_root(LayoutSource(builder.path), tmp_path / "r", snapshotter="btrfs")
    with pytest.raises(UsageError):
        copy_images_to_root(LayoutSource(builder.path), tmp_path / "r", "bad/ns")
    with pytest.raises(UsageError):
        copy_images_to_root(LayoutSource(builder.path), tmp_path / "r", containerd_version="3.0")


def test_platform_filter_skips_everything(tmp_path: Path, layout) -> None:
    builder, _ = layout
    # a single manifest without a descriptor platform is never filtered (containerd rule)
    report = copy_images_to_root(LayoutSource(builder.path), tmp_path / "r", unpack=False,
                                 platform=["linux/arm64"])
    assert report.images[0].status == "added"


def test_reimport_restores_a_lost_blob_file_without_touching_metadata(tmp_path: Path, layout) -> None:
    builder, img = layout
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, unpack=False)
    ino = os.stat(root / META).st_ino
    blob = root / K.CONTENT_PLUGIN_DIR / "blobs" / "sha256" / img["layers"][1]["digest"][7:]
    blob.unlink()
    report = copy_images_to_root(LayoutSource(builder.path), root, unpack=False)
    assert report.blobs_written == 1 and report.images[0].status == "present"
    assert blob.read_bytes() == (builder.path / "blobs" / "sha256" / blob.name).read_bytes()
    assert os.stat(root / META).st_ino == ino


# -- annotations ---------------------------------------------------------------------------------


def _annotate(builder: LayoutBuilder, extra: dict[str, str]) -> None:
    """Add annotations to the layout's last index.json entry."""
    index = json.loads((builder.path / "index.json").read_text())
    index["manifests"][-1]["annotations"] = {**index["manifests"][-1].get("annotations", {}), **extra}
    (builder.path / "index.json").write_text(json.dumps(index))


def _annotations(root: Path, name: str) -> dict[str, str]:
    record = _ns(read_tree(root / META)).bucket(K.IMAGES, name.encode())
    assert record is not None
    return R.read_map(record.bucket(K.ANNOTATIONS))


def test_an_annotation_longer_than_a_label_may_be_is_imported(tmp_path: Path, layout) -> None:
    """containerd holds labels to 4096 bytes, not annotations: ``ctr images import`` takes an
    index entry with a 5,000-byte description; ctrconv refused the whole input (a red-team run)."""
    builder, _ = layout
    long = "d" * 5000
    _annotate(builder, {"org.opencontainers.image.description": long})
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, unpack=False)
    assert _annotations(root, "docker.io/library/t:1")["org.opencontainers.image.description"] == long


def test_a_name_imported_again_takes_the_new_entrys_annotations(tmp_path: Path, layout) -> None:
    """The record's annotations are its target's, which containerd's ``Update(img, "target")``
    replaces as a unit: a re-import over a name leaves the new entry's annotations (ctrconv kept
    the old ones, so the record and later exports described the previous image: a red-team run);
    the same input again changes nothing."""
    builder, _ = layout
    _annotate(builder, {"org.opencontainers.image.version": "1", "old.only": "x"})
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root, unpack=False)
    newer = LayoutBuilder(tmp_path / "newer")
    newer.image("docker.io/library/t:1", [{"etc/hello": b"v2\n"}])
    _annotate(newer, {"org.opencontainers.image.version": "2"})
    report = copy_images_to_root(LayoutSource(newer.path), root, unpack=False)
    assert [i.status for i in report.images] == ["updated"]
    got = _annotations(root, "docker.io/library/t:1")
    assert got["org.opencontainers.image.version"] == "2" and "old.only" not in got
    again = copy_images_to_root(LayoutSource(newer.path), root, unpack=False)
    assert [i.status for i in again.images] == ["present"] and not again.metadata_written


def test_two_tags_of_one_image_on_a_fresh_root_are_both_imported_not_updated(tmp_path: Path) -> None:
    """In k8s.io both tags share CRI's ``sha256:<id>`` name: the second tag found it made by the
    first and was reported ``updated`` on a fresh root (a red-team run)."""
    builder = LayoutBuilder(tmp_path / "layout")
    builder.image("docker.io/library/t:1", [{"f": b"1"}])
    index = json.loads((builder.path / "index.json").read_text())
    second = dict(index["manifests"][0], annotations={"io.containerd.image.name": "docker.io/library/t:2"})
    index["manifests"].append(second)
    (builder.path / "index.json").write_text(json.dumps(index))
    report = copy_images_to_root(LayoutSource(builder.path), tmp_path / "root", namespace="k8s.io", unpack=False)
    assert [(i.name, i.status) for i in report.images] == [("docker.io/library/t:1", "added"),
                                                           ("docker.io/library/t:2", "added")]
    again = copy_images_to_root(LayoutSource(builder.path), tmp_path / "root", namespace="k8s.io", unpack=False)
    assert [i.status for i in again.images] == ["present", "present"]


def test_an_entry_that_names_no_image_says_so(tmp_path: Path) -> None:
    """An index.json entry naming a layer blob was refused as "filtered out by the platform
    selection" (no platform was asked for: a red-team run)."""
    builder = LayoutBuilder(tmp_path / "layout")
    img = builder.image("docker.io/library/t:1", [{"f": b"1"}])
    index = json.loads((builder.path / "index.json").read_text())
    index["manifests"] = [dict(img["layers"][0], annotations={"io.containerd.image.name": "docker.io/library/l:1"})]
    (builder.path / "index.json").write_text(json.dumps(index))
    with pytest.raises(UsageError, match="not an image: its entry names a application/vnd.oci.image.layer.v1.tar"):
        copy_images_to_root(LayoutSource(builder.path), tmp_path / "root", unpack=False)


def test_name_takes_one_image_under_several_names(tmp_path: Path) -> None:
    """``--name`` needs one image: an input whose one image carries several names is one (it
    counted the names: a red-team run); two images are refused, counted as images."""
    builder = LayoutBuilder(tmp_path / "layout")
    builder.image("docker.io/library/t:1", [{"f": b"1"}])
    index = json.loads((builder.path / "index.json").read_text())
    index["manifests"].append(dict(index["manifests"][0], annotations={"io.containerd.image.name": "docker.io/library/t:2"}))
    (builder.path / "index.json").write_text(json.dumps(index))
    report = copy_images_to_root(LayoutSource(builder.path), tmp_path / "root", unpack=False, name="docker.io/library/x:1")
    assert [i.name for i in report.images] == ["docker.io/library/x:1"]
    builder.image("docker.io/library/u:1", [{"g": b"2"}])
    with pytest.raises(UsageError, match="exactly one image; it has 2"):
        copy_images_to_root(LayoutSource(builder.path), tmp_path / "root2", unpack=False, name="docker.io/library/x:1")
