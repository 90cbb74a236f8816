"""The record codec (``ctrconv.containerd.records``) over the one bucket protocol.

Every ``read_x``/``write_x`` pair must give back what it was given, whether the record is read
from an in-memory :class:`BucketTree` or from a file the bolt writer wrote, and must encode a
record containerd itself wrote to exactly the bytes containerd wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ctrconv.bolt.reader import BoltFile, Bucket
from ctrconv.bolt.tree import BucketTree, ReadBucket
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import records as R
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import GoTime, decode_time
from ctrconv.containerd.root import ContainerdRoot, snapshot_tree
from ctrconv.errors import FormatError

UTC = GoTime(1_733_000_000_123_456_789, None)
EAST = GoTime(1_733_000_100_000_000_001, 3 * 3600)  # +03:00: version 1, offset in minutes
ODD = GoTime(1_733_000_200_000_000_000, -(3600 + 1))  # -01:00:01: version 2 (offset seconds)

IMAGE = R.ImageRecord(
    "default", "docker.io/library/a:1",
    R.Target("application/vnd.oci.image.index.v1+json", "sha256:" + "a" * 64, 1234),
    labels={"io.cri-containerd.image": "managed", "k\udcff": "v\udcfe"},
    annotations={"io.containerd.image.name": "docker.io/library/a:1"},
    created_at=UTC, updated_at=EAST,
)
BLOB = R.BlobRecord("default", "sha256:" + "b" * 64, 1 << 40,
                    labels={K.LABEL_GC_CONTENT + ".m.0": "sha256:" + "c" * 64}, created_at=ODD, updated_at=UTC)
INGEST = R.IngestRecord("default", "manifest-sha256:" + "d" * 64, "default-1234", UTC, "sha256:" + "d" * 64)
LEASE = R.LeaseRecord("default", "pull-1", EAST, {"containerd.io/gc.expire": "2026-01-01T00:00:00Z"},
                      ("sha256:" + "e" * 64,), {"overlayfs": ("extract-1 sha256:x", "sha256:y")},
                      ("ingest-1",), ("docker.io/library/a:1",))
SNAPSHOT = R.SnapshotRecord("default", "overlayfs", "sha256:" + "f" * 64, "default/7/sha256:" + "f" * 64,
                            "sha256:" + "9" * 64, children=("sha256:1", "sha256:2"),
                            labels={"containerd.io/snapshot.ref": "x"}, created_at=UTC, updated_at=UTC)
BACKEND = R.BackendSnapshot("default/7/sha256:" + "f" * 64, 300, "committed", "default/6/sha256:" + "9" * 64,
                            labels={"l": "v"}, created_at=UTC, updated_at=ODD, inodes=17, size=-1)

#: (read, write, record) for each kind; read takes the record's own bucket
Codec = tuple[Callable[[ReadBucket], Any], Callable[[BucketTree, Any], None], Any]
CODECS: dict[str, Codec] = {
    "image": (lambda b: R.read_image(b, IMAGE.namespace, IMAGE.name), R.write_image, IMAGE),
    "blob": (lambda b: R.read_blob(b, BLOB.namespace, BLOB.digest), R.write_blob, BLOB),
    "ingest": (lambda b: R.read_ingest(b, INGEST.namespace, INGEST.ref), R.write_ingest, INGEST),
    "lease": (lambda b: R.read_lease(b, LEASE.namespace, LEASE.id), R.write_lease, LEASE),
    "snapshot": (lambda b: R.read_snapshot(b, SNAPSHOT.namespace, SNAPSHOT.snapshotter, SNAPSHOT.key),
                 R.write_snapshot, SNAPSHOT),
    "backend": (lambda b: R.read_backend_snapshot(b, BACKEND.key), R.write_backend_snapshot, BACKEND),
}


def _in_file(tree: BucketTree, tmp_path: Path) -> BoltFile:
    """``tree`` under ``v1/r`` of a file the bolt writer wrote, opened with the mmap reader."""
    root = BucketTree()
    root.bucket(K.V1, create=True).entries[b"r"] = tree  # type: ignore[union-attr]
    path = tmp_path / "records.db"
    write_bolt(path, root)
    return BoltFile(path)


@pytest.mark.parametrize("kind", sorted(CODECS))
def test_write_then_read_gives_the_record_back_from_a_tree_and_from_a_file(kind: str, tmp_path: Path) -> None:
    read, write, record = CODECS[kind]
    tree = BucketTree()
    write(tree, record)
    assert read(tree) == record
    with _in_file(tree, tmp_path) as db:
        bucket = db.bucket(K.V1, b"r")
        assert bucket is not None
        from_file = read(bucket)
        assert from_file == record
        again = BucketTree()
        write(again, from_file)
        assert again.to_plain() == bucket.to_tree().to_plain() == tree.to_plain()


def test_timestamps_keep_their_zone_and_encoding_version() -> None:
    tree = BucketTree()
    R.write_timestamps(tree, EAST, ODD)
    assert tree.get(K.CREATED_AT)[0] == 1 and tree.get(K.UPDATED_AT)[0] == 2  # type: ignore[index]
    assert decode_time(tree.get(K.CREATED_AT)) == EAST  # type: ignore[arg-type]
    assert decode_time(tree.get(K.UPDATED_AT)) == ODD  # type: ignore[arg-type]
    # what containerd writes for time.Now().UTC(): version 1, offset -1
    assert R.go_time(0).unix_ns == 0 and R.go_time(0).offset_seconds is None


def test_backend_snapshot_and_its_parents_index_entry() -> None:
    parents = BucketTree()
    R.write_parent_link(parents, 300, 301, "default/8/sha256:child")
    assert parents.entries == {b"\xac\x02\x00\xad\x02": b"default/8/sha256:child"}
    assert list(R.read_parent_links(parents)) == [(300, 301, "default/8/sha256:child")]
    assert R.split_parents_key(R.parents_key(1, 2)) == (1, 2)
    with pytest.raises(FormatError):
        R.split_parents_key(b"\x01\x02")
    for kind in ("view", "active", "committed", "kind-9"):
        tree = BucketTree()
        R.write_backend_snapshot(tree, R.BackendSnapshot("k", 1, kind, None))
        assert R.read_backend_snapshot(tree, "k").kind == kind
        assert R.is_committed(tree) == (kind == "committed")


def test_damaged_fields_name_the_record_and_lenient_readers_say_none() -> None:
    image = BucketTree()
    R.write_image(image, IMAGE)
    image.bucket(K.TARGET).put(K.SIZE, b"\x80")  # type: ignore[union-attr]  # truncated varint
    with pytest.raises(FormatError, match=r"^image default/docker.io/library/a:1: truncated varint"):
        R.read_image(image, "default", IMAGE.name)
    assert R.target_digest(image) == IMAGE.target.digest
    assert R.target_digest(BucketTree()) is None
    with pytest.raises(FormatError, match="no target"):
        R.read_image(BucketTree(), "default", "x")
    blob = BucketTree()
    R.write_blob(blob, BLOB)
    assert R.read_blob_size(blob) == BLOB.size
    assert not R.write_blob_size(blob, BLOB.size) and R.write_blob_size(blob, 5)
    blob.put(K.SIZE, b"\x80")
    assert R.read_blob_size(blob) is None
    backend = BucketTree()
    assert R.read_backend_id(backend) is None
    with pytest.raises(FormatError, match="backend snapshot k: no id"):
        R.read_backend_snapshot(backend, "k")


def test_children_links_and_the_newest_update_of_a_tree() -> None:
    record = BucketTree()
    R.write_snapshot(record, SNAPSHOT)
    assert not R.add_child(record, "sha256:1") and R.add_child(record, "sha256:3")
    assert R.read_snapshot(record, "n", "s", "k").children == ("sha256:1", "sha256:2", "sha256:3")
    root = BucketTree()
    R.write_image(root.bucket(b"a", create=True), IMAGE)  # type: ignore[arg-type]
    R.write_blob(root.bucket(b"b", b"c", create=True), BLOB)  # type: ignore[arg-type]
    assert R.newest_update(root) == max(UTC.unix_ns, EAST.unix_ns, ODD.unix_ns)
    root.bucket(b"b", b"c").put(K.CREATED_AT, b"\x01broken")  # type: ignore[union-attr]
    assert R.newest_update(root) == EAST.unix_ns  # an undecodable time is skipped
    assert R.newest_update(BucketTree()) == 0


def test_backend_names_carry_the_sequence_they_were_made_with() -> None:
    name = R.backend_name("k8s.io", 42, "sha256:" + "a" * 64)
    assert name == "k8s.io/42/sha256:" + "a" * 64 and R.backend_name_seq(name) == 42
    assert R.backend_name_seq("k8s.io/x/key") is None and R.backend_name_seq("plain") is None


def test_schema_version_and_labels() -> None:
    v1 = BucketTree()
    assert R.read_schema_version(v1) is None
    R.write_schema_version(v1, K.DB_VERSION_2X)
    assert v1.get(K.VERSION) == b"\x08" and R.read_schema_version(v1) == 4
    record = BucketTree()
    R.write_map(record, K.LABELS, {"a": "1", "empty": ""})
    assert R.read_map(record.bucket(K.LABELS)) == {"a": "1"}
    R.write_map(record, K.LABELS, {})
    assert record.bucket(K.LABELS) is None
    with pytest.raises(FormatError, match="longer than"):
        R.write_map(record, K.LABELS, {"k": "v" * R.MAX_LABEL_BYTES})


# -- the bucket protocol -------------------------------------------------------------------------


def _sample_tree() -> BucketTree:
    """A root (which holds only buckets in bolt) with page-rooted, inline and nested buckets."""
    root = BucketTree()
    tree = root.bucket(b"top", create=True)
    assert tree is not None
    tree.sequence = 3
    big = tree.bucket(b"big", create=True)
    assert big is not None
    big.sequence = 99
    for i in range(600):  # page-rooted, with branch pages
        big.put(b"key-%04d" % i, b"value-%d" % i * 5)
    small = tree.bucket(b"small", b"inner", create=True)  # inline buckets
    assert small is not None
    small.put(b"x", b"1")
    tree.put(b"plain", b"v")
    return root


def _same(a: ReadBucket, b: ReadBucket) -> int:
    """Compare two buckets through the protocol only; returns how many entries were compared."""
    assert a.sequence == b.sequence
    ai, bi = list(a.items()), list(b.items())
    assert [k for k, _ in ai] == [k for k, _ in bi] == sorted(k for k, _ in ai)
    assert [k for k, _ in a.values()] == [k for k, _ in b.values()]
    assert [k for k, _ in a.buckets()] == [k for k, _ in b.buckets()]
    compared = 0
    for (key, va), (_, vb) in zip(ai, bi):
        if isinstance(va, bytes):
            assert va == vb == a.get(key) == b.get(key)
            assert a.bucket(key) is None and b.bucket(key) is None
            compared += 1
        else:
            assert a.get(key) is None and b.get(key) is None
            sa, sb = a.bucket(key), b.bucket(key)
            assert sa is not None and sb is not None
            compared += _same(sa, sb)
    return compared


def test_file_buckets_and_trees_answer_the_protocol_alike(tmp_path: Path) -> None:
    whole = _sample_tree()
    path = tmp_path / "t.db"
    write_bolt(path, whole)
    with BoltFile(path) as db:
        assert _same(db.root, whole) == 602
        root: Bucket | None = db.root.bucket(b"top")
        tree = whole.bucket(b"top")
        assert root is not None and tree is not None
        deep_file, deep_tree = root.bucket(b"small", b"inner"), tree.bucket(b"small", b"inner")
        assert deep_file is not None and deep_tree is not None and deep_file.get(b"x") == deep_tree.get(b"x") == b"1"
        for missing in ((b"nope",), (b"plain",), (b"small", b"nope"), (b"plain", b"x")):
            assert root.bucket(*missing) is None and tree.bucket(*missing) is None
        assert root.bucket() is root and tree.bucket() is tree


# -- records containerd wrote ----------------------------------------------------------------------


def _namespaced(meta: ReadBucket) -> Iterator[tuple[str, str, ReadBucket, Callable[[ReadBucket], Any], Callable]]:
    """(kind, where, record bucket, read, write) for every record of every namespace of a meta.db."""
    v1 = meta.bucket(K.V1)
    assert v1 is not None
    for ns_key, ns in v1.buckets():
        n = R.text(ns_key)
        for kind, path, make in (
            ("image", (K.IMAGES,), lambda k: lambda b: R.read_image(b, n, k)),
            ("blob", (K.CONTENT, K.BLOB), lambda k: lambda b: R.read_blob(b, n, k)),
            ("ingest", (K.CONTENT, K.INGESTS), lambda k: lambda b: R.read_ingest(b, n, k)),
            ("lease", (K.LEASES,), lambda k: lambda b: R.read_lease(b, n, k)),
        ):
            parent = ns.bucket(*path)
            for key, bucket in parent.buckets() if parent else ():
                write = {"image": R.write_image, "blob": R.write_blob, "ingest": R.write_ingest,
                         "lease": R.write_lease}[kind]
                yield kind, f"{n}/{kind}/{R.text(key)}", bucket, make(R.text(key)), write
        snaps = ns.bucket(K.SNAPSHOTS)
        for sn_key, sn in snaps.buckets() if snaps else ():
            for key, bucket in sn.buckets():
                k, s = R.text(key), R.text(sn_key)
                yield ("snapshot", f"{n}/snapshots/{s}/{k}", bucket,
                       lambda b, s=s, k=k: R.read_snapshot(b, n, s, k), R.write_snapshot)


def _check_root(root: Path, counts: dict[str, int]) -> None:
    """Re-encode every record of ``root`` through the codec; it must come out byte for byte."""
    croot = ContainerdRoot(root)
    with BoltFile(croot.meta_db) as db:
        for kind, where, bucket, read, write in _namespaced(db.root):
            record = read(bucket)
            tree = BucketTree()
            write(tree, record)
            assert tree.to_plain() == bucket.to_tree().to_plain(), where  # type: ignore[attr-defined]
            assert read(tree) == record, where
            counts[kind] = counts.get(kind, 0) + 1
    for sn in croot.snapshotters_on_disk():
        if not croot.snapshotter_db(sn).is_file():
            continue
        with BoltFile(croot.snapshotter_db(sn)) as db:
            snaps = db.root.bucket(K.V1, K.SNAPSHOTS)
            ids: dict[str, int] = {}
            for key, bucket in snaps.buckets() if snaps else ():
                record = R.read_backend_snapshot(bucket, R.text(key))
                tree = BucketTree()
                R.write_backend_snapshot(tree, record)
                assert tree.to_plain() == bucket.to_tree().to_plain(), f"{sn}/{record.key}"
                ids[record.key] = record.id
                counts["backend"] = counts.get("backend", 0) + 1
                fs = croot.snapshot_fs(sn, record.id)
                assert fs is not None and fs.is_dir(), f"{sn}/{record.key}: {fs}"
            parents = db.root.bucket(K.V1, K.PARENTS)
            rebuilt = BucketTree()
            for pid, cid, child in R.read_parent_links(parents):
                assert ids[child] == cid
                R.write_parent_link(rebuilt, pid, cid, child)
                counts["parents"] = counts.get("parents", 0) + 1
            if parents is not None:
                assert rebuilt.to_plain()["entries"] == parents.to_tree().to_plain()["entries"]


def test_fixture_root_records_reencode_to_the_bytes_containerd_wrote(fixture_set: Any) -> None:
    counts: dict[str, int] = {}
    _check_root(fixture_set.root, counts)
    assert {k for k, n in counts.items() if n} >= {"image", "blob", "snapshot", "backend", "parents"}, counts


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_real_node_records_reencode_to_the_bytes_containerd_wrote(realnode_set_for: Any, line: str) -> None:
    corpus = realnode_set_for(line)
    counts: dict[str, int] = {}
    for name in ("node", "crashed", "discarded"):
        if corpus.root(name).is_dir():
            _check_root(corpus.root(name), counts)
    assert {k for k, n in counts.items() if n} >= {"image", "blob", "snapshot", "backend", "parents"}, counts


# -- the snapshot directory rule --------------------------------------------------------------------


def test_one_rule_for_a_snapshots_directory(tmp_path: Path) -> None:
    croot = ContainerdRoot(tmp_path)
    base = tmp_path / "io.containerd.snapshotter.v1.overlayfs" / "snapshots" / "12"
    assert croot.snapshot_dir("overlayfs", 12) == base
    assert croot.snapshot_fs("overlayfs", 12) == base / "fs"
    assert croot.snapshot_fs("native", 12) == tmp_path / "io.containerd.snapshotter.v1.native" / "snapshots" / "12"
    for other in ("btrfs", "devmapper", "zfs", "erofs", "blockfile"):
        assert croot.snapshot_fs(other, 12) is None
    assert snapshot_tree("overlayfs", tmp_path / "tmp-x") == tmp_path / "tmp-x" / "fs"
