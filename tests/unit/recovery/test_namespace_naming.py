"""Naming a namespace's buckets from the orphan pages below its lost page
(:func:`ctrconv.recovery.salvage.name_namespace_buckets`), on in-memory trees: what each bucket
is told by, and which copy is the live one where stale copies of earlier commits lie among the
candidates (no persisted freelist: 1.7, 2.x). The real-node cases are in
tests/interop/test_rebuild_lost_records.py."""

from __future__ import annotations

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import ImageRecord, SnapshotRecord, Target, go_time, write_image, write_snapshot, write_timestamps
from ctrconv.recovery.salvage import StoreEvidence, containerd_shape, name_namespace_buckets

NS = (K.V1, b"k8s.io")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _images(*names: tuple[str, str, int]) -> BucketTree:
    bucket = BucketTree()
    for name, digest, when in names:
        record = bucket.bucket(name.encode(), create=True)
        assert record is not None
        write_image(record, ImageRecord("k8s.io", name, Target(MANIFEST, digest, 10),
                                        created_at=go_time(when), updated_at=go_time(when)))
    return bucket


def _snapshots(namespace: str, *keys: tuple[str, int]) -> BucketTree:
    bucket = BucketTree()
    for seq, (key, when) in enumerate(keys):
        record = bucket.bucket(b"overlayfs", key.encode(), create=True)
        assert record is not None
        write_snapshot(record, SnapshotRecord(namespace, "overlayfs", key, f"{namespace}/{seq}/{key}", None,
                                              created_at=go_time(when), updated_at=go_time(when)))
    return bucket


def _content(*digests: str) -> BucketTree:
    bucket = BucketTree()
    for digest in digests:
        record = bucket.bucket(K.BLOB, digest.encode(), create=True)
        assert record is not None
        record.put(K.SIZE, b"\x14")
        write_timestamps(record, go_time(5), go_time(5))
    bucket.bucket(K.INGESTS, create=True)
    return bucket


def _containers(*items: tuple[str, str]) -> BucketTree:
    bucket = BucketTree()
    for cid, snapshot_key in items:
        record = bucket.bucket(cid.encode(), create=True)
        assert record is not None
        record.put(K.IMAGE, b"busybox")
        record.put(K.SNAPSHOTTER, b"overlayfs")
        record.put(K.SNAPSHOT_KEY, snapshot_key.encode())
        record.bucket(b"runtime", create=True).put(K.NAME, b"io.containerd.runc.v2")  # type: ignore[union-attr]
        write_timestamps(record, go_time(7), go_time(7))
    return bucket


def _lease(lease_id: str) -> BucketTree:
    bucket = BucketTree()
    record = bucket.bucket(lease_id.encode(), create=True)
    assert record is not None
    write_timestamps(record, go_time(9), None)
    record.bucket(K.CONTENT, create=True).put(b"sha256:" + b"1" * 64, b"")  # type: ignore[union-attr]
    return bucket


def _sandboxes() -> BucketTree:
    bucket = BucketTree()
    record = bucket.bucket(b"pod-1", create=True)
    assert record is not None
    record.put(b"sandboxer", b"podsandbox")
    record.bucket(b"runtime", create=True).put(K.NAME, b"io.containerd.runc.v2")  # type: ignore[union-attr]
    write_timestamps(record, go_time(8), go_time(8))
    return bucket


A, B, C = ("sha256:" + c * 64 for c in "abc")


def test_each_bucket_is_told_by_its_records():
    parts = {K.IMAGES: _images(("docker.io/x:1", A, 1)), K.SNAPSHOTS: _snapshots("k8s.io", ("sha256:l1", 2)),
             K.CONTENT: _content(A), K.CONTAINERS: _containers(("c1", "c1")), K.LEASES: _lease("l1"),
             K.SANDBOXES: _sandboxes()}
    found = [(page, tree, 0) for page, tree in enumerate(parts.values(), start=10)]
    found.append((99, _snapshots("k8s.io", ("x", 1)).bucket(b"overlayfs"), 0))  # (records of one snapshotter: no bucket)
    named = name_namespace_buckets(NS, found, BucketTree(), exact=True)
    assert {kind: id(tree) for kind, tree in named.items()} == {kind: id(tree) for kind, tree in parts.items()}
    assert name_namespace_buckets((K.V1,), found, BucketTree(), exact=True) == {}  # (namespaces: assemble_namespaces)


def test_without_a_freelist_the_live_copies_win_over_stale_ones():
    tree = BucketTree()
    other = tree.bucket(K.V1, b"default", create=True)
    assert other is not None
    other.entries[K.IMAGES] = _images(("docker.io/x:1", A, 3), ("docker.io/y:1", B, 4))
    blobs = {A, B}
    live_images = _images(("docker.io/x:1", A, 1), ("docker.io/y:1", B, 2))
    deleted_too = _images(("docker.io/x:1", A, 1), ("docker.io/y:1", B, 2), ("docker.io/z:1", C, 6))
    default_copy = _images(("docker.io/x:1", A, 3))  # (an older copy of default's images: newer than ours)
    live_snapshots = _snapshots("k8s.io", ("sha256:l1", 2), ("c1", 2))
    other_snapshots = _snapshots("default", ("sha256:l1", 8))
    live_containers = _containers(("c1", "c1"))
    removed_container = _containers(("c1", "c1"), ("c2", "c2"))  # (c2's snapshot went with it)
    write_timestamps(removed_container.entries[b"c2"], None, go_time(9))  # type: ignore[arg-type]
    found = [(20, deleted_too, 0), (21, live_images, 0), (22, default_copy, 0), (23, other_snapshots, 0),
             (24, live_snapshots, 0), (25, removed_container, 0), (26, live_containers, 0), (27, _lease("gone"), 0)]
    evidence = StoreEvidence({}, lambda digest: digest in blobs)
    named = name_namespace_buckets(NS, found, tree, exact=False, evidence=evidence)
    assert named[K.IMAGES] is live_images
    assert named[K.SNAPSHOTS] is live_snapshots
    assert named[K.CONTAINERS] is live_containers
    assert K.LEASES not in named  # (an empty leases bucket is inlined: every copy found may be stale)
    # with a freelist the subtrees are the lost page's own: the lease is the namespace's
    assert K.LEASES in name_namespace_buckets(NS, [(27, _lease("kept"), 0)], tree, exact=True)


def test_an_empty_namespace_or_one_of_labels_only_says_nothing_of_the_tree():
    tree = BucketTree()
    tree.bucket(K.V1, create=True).put(K.VERSION, b"\x03")  # type: ignore[union-attr]
    tree.bucket(K.V1, b"k8s.io", create=True).entries[K.IMAGES] = _images(("docker.io/x:1", A, 1))  # type: ignore[union-attr]
    assert containerd_shape(tree) == 1
    tree.bucket(K.V1, b"made-by-ctr", K.LABELS, create=True)
    tree.bucket(K.V1, b"lost-page", create=True)
    assert containerd_shape(tree) == 1


def _meta_db_with_a_large_namespace(path, *, freelist: bool) -> int:
    """A meta.db whose ``k8s.io`` holds 300 images (its ``images`` root a branch page) and
    content; returns the page of the namespace's own leaf."""
    from ctrconv.bolt import _structs as S
    from ctrconv.bolt.reader import BoltFile
    from ctrconv.bolt.writer import write_bolt

    tree = BucketTree()
    tree.bucket(K.V1, create=True).put(K.VERSION, b"\x03")  # type: ignore[union-attr]
    ns = tree.bucket(K.V1, b"k8s.io", create=True)
    assert ns is not None
    ns.entries[K.IMAGES] = _images(*((f"docker.io/library/app-{i:03}:v1", A, i + 1) for i in range(300)))
    ns.entries[K.CONTENT] = _content(A, B)
    write_bolt(path, tree, freelist=freelist)
    with BoltFile(path) as db:
        namespace = db.bucket(K.V1, b"k8s.io")
        assert namespace is not None and db.page(namespace.root).flags == S.LEAF_PAGE
        images = db.bucket(K.V1, b"k8s.io", K.IMAGES)
        assert images is not None and db.page(images.root).flags == S.BRANCH_PAGE
        return namespace.root


def test_a_large_bucket_below_a_lost_namespace_page_comes_back_whole(tmp_path):
    """Without a freelist every unreached page is a candidate: the leaves of a large ``images``
    bucket (its root a branch page) are candidates too, and one of them alone, its records
    newest, stood for the whole bucket (the other images then counted as read back whole)."""
    from ctrconv.bolt.salvage import salvage
    from ctrconv.recovery.salvage import CONTAINERD_ROOT_HINTS

    for freelist in (True, False):
        path = tmp_path / f"meta-{freelist}.db"
        page = _meta_db_with_a_large_namespace(path, freelist=freelist)
        data = bytearray(path.read_bytes())
        data[page * 4096:(page + 1) * 4096] = bytes(4096)
        path.write_bytes(bytes(data))
        result = salvage(path, hints=CONTAINERD_ROOT_HINTS)
        images = result.tree.bucket(K.V1, b"k8s.io", K.IMAGES)
        assert images is not None and len(images.entries) == 300, (freelist, result.damage)
        assert (K.V1, b"k8s.io", K.IMAGES) in result.recovered_whole
        assert result.tree.bucket(K.V1, b"k8s.io", K.CONTENT, K.BLOB).entries.keys() == {A.encode(), B.encode()}  # type: ignore[union-attr]


def test_containers_below_a_lost_leaf_are_named_by_their_snapshot_keys():
    from ctrconv.recovery.salvage import name_containers

    tree = BucketTree()
    tree.bucket(K.V1, b"default", create=True).entries[K.SNAPSHOTS] = _snapshots("default", ("web-1", 3))  # type: ignore[union-attr]
    records = _containers(("web-1", "web-1"), ("removed", "removed"), ("bad", "not/an id"))
    found = [(30 + i, record, 0) for i, record in enumerate(records.entries.values())]
    # a persisted freelist: every orphan is a live record (rebuild judges a missing snapshot)
    assert set(name_containers(b"default", found, tree, exact=True)) == {b"web-1", b"removed"}
    # without one, a record whose snapshot is gone is a stale copy of a removed container
    assert set(name_containers(b"default", found, tree, exact=False)) == {b"web-1"}


def test_content_buckets_below_a_lost_leaf_are_named_by_their_records():
    from ctrconv.recovery.salvage import name_content_buckets

    blob = _content(A, B).bucket(K.BLOB)
    ingests = BucketTree()
    ingests.bucket(b"fetch-1", create=True).put(K.REF, b"default/1/fetch-1")  # type: ignore[union-attr]
    tree = BucketTree()
    named = name_content_buckets(b"default", [(40, blob, 0), (41, ingests, 0)], tree, exact=True)  # type: ignore[list-item]
    assert named == {K.BLOB: blob, K.INGESTS: ingests}
    # without a freelist, a copy of another namespace's records (same keys, same times) is theirs
    tree.bucket(K.V1, b"k8s.io", create=True).entries[K.CONTENT] = _content(A, B)  # type: ignore[union-attr]
    assert K.BLOB not in name_content_buckets(b"default", [(40, blob, 0)], tree, exact=False)  # type: ignore[list-item]
    assert K.BLOB in name_content_buckets(b"default", [(40, blob, 0)], tree, exact=True)  # type: ignore[list-item]


def test_a_copy_of_another_namespace_s_container_is_not_taken_without_a_freelist():
    """Two namespaces may hold containers of one id, each with a snapshot of it: a stale copy of
    the other one's record gave ``default/web`` that namespace's image and spec (a red-team run)."""
    from ctrconv.recovery.salvage import name_containers

    tree = BucketTree()
    tree.bucket(K.V1, b"default", create=True).entries[K.SNAPSHOTS] = _snapshots("default", ("web", 3))  # type: ignore[union-attr]
    other = tree.bucket(K.V1, b"other", create=True)
    assert other is not None
    other.entries[K.CONTAINERS] = _containers(("web", "web"))
    same_time = _containers(("web", "web")).entries[b"web"]  # (their record: created when theirs was)
    by_spec = _containers(("web", "web")).entries[b"web"]
    write_timestamps(by_spec, go_time(99), go_time(99))  # type: ignore[arg-type]
    by_spec.put(b"spec", b'{"linux":{"cgroupsPath":"/other/web"}}')  # type: ignore[union-attr]
    ours = _containers(("web", "web")).entries[b"web"]
    write_timestamps(ours, go_time(50), go_time(50))  # type: ignore[arg-type]
    for stale in (same_time, by_spec):
        assert name_containers(b"default", [(50, stale, 0)], tree, exact=False) == {}  # type: ignore[list-item]
    assert name_containers(b"default", [(50, same_time, 0), (51, ours, 0)], tree, exact=False) == {b"web": ours}  # type: ignore[list-item]


def test_a_container_below_a_lost_leaf_that_cannot_be_named_is_said_lost(tmp_path):
    """A container made with ``--rootfs`` names no snapshot: with its id gone it cannot come
    back, and rebuild said nothing of it (a red-team run); the salvage notes say so now."""
    from ctrconv.bolt.reader import BoltFile
    from ctrconv.bolt.salvage import salvage
    from ctrconv.bolt.writer import write_bolt
    from ctrconv.recovery.salvage import CONTAINERD_ROOT_HINTS

    tree = BucketTree()
    tree.bucket(K.V1, create=True).put(K.VERSION, b"\x03")  # type: ignore[union-attr]
    ns = tree.bucket(K.V1, b"default", create=True)
    assert ns is not None
    ns.entries[K.SNAPSHOTS] = _snapshots("default", ("web-1", 3), ("web-2", 4))
    ns.entries[K.CONTAINERS] = _containers(("web-1", "web-1"), ("web-2", "web-2"), ("rootfs-c", "x"))
    ns.entries[K.CONTAINERS].entries[b"rootfs-c"].entries.pop(K.SNAPSHOT_KEY)  # type: ignore[union-attr]
    path = tmp_path / "meta.db"
    write_bolt(path, tree)
    with BoltFile(path) as db:
        page = db.bucket(K.V1, b"default", K.CONTAINERS).root  # type: ignore[union-attr]
    data = bytearray(path.read_bytes())
    data[page * 4096:(page + 1) * 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    result = salvage(path, hints=CONTAINERD_ROOT_HINTS)
    assert set(result.tree.bucket(K.V1, b"default", K.CONTAINERS).entries) == {b"web-1", b"web-2"}  # type: ignore[union-attr]
    assert any("1 of the 3 subtrees below its lost page could not be named" in str(d) for d in result.damage), result.damage


def test_a_namespace_copy_without_snapshot_records_is_named_by_its_containers_snapshots() -> None:
    """A meta.db cut short kept a namespace's containers but not its snapshot records: the copy
    went to ``default`` and its 320 containers were dropped (their snapshots came back in their
    own namespace from the snapshotter db: a red-team run). The snapshotter's keys name it."""
    from ctrconv.recovery.salvage import assemble_namespaces

    copy = BucketTree(entries={K.CONTAINERS: _containers(("c1", "c1"), ("c2", "c2")), K.CONTENT: _content("sha256:" + "a" * 64)})
    evidence = StoreEvidence(snapshot_keys={"overlayfs": frozenset({"many/7/c1", "many/8/c2", "default/2/sha256:" + "b" * 64})})
    v1 = assemble_namespaces([(40, copy, 0)], evidence)
    assert v1 is not None and set(v1.bucket(K.V1).entries) == {b"many"}  # type: ignore[union-attr]
    # a key two namespaces hold says nothing: the copy stays unnamed (the first such is ``default``)
    shared = StoreEvidence(snapshot_keys={"overlayfs": frozenset({"many/7/c1", "other/3/c1", "many/8/c2", "other/4/c2"})})
    v1 = assemble_namespaces([(40, copy, 0)], shared)
    assert v1 is not None and set(v1.bucket(K.V1).entries) == {b"default"}  # type: ignore[union-attr]


def test_a_damaged_snapshots_copy_does_not_cost_the_containers_whose_snapshots_the_snapshotter_holds():
    """Without a freelist, the only ``snapshots`` copy found was damaged (its lower pages reused
    since) and lacked the container's snapshot record, which comes back from the snapshotter
    db: the live ``containers`` copy was refused for it and the container dropped (a CI run
    whose fresh real-node corpus had such a copy). Where the snapshots copy is whole, a
    container whose snapshot it lacks still marks a stale copy (a removed container)."""
    damaged_snapshots = _snapshots("k8s.io", ("sha256:l1", 2))  # (c1's record lost with the damage)
    containers = _containers(("c1", "c1"))
    evidence = StoreEvidence({"overlayfs": frozenset({"k8s.io/1/sha256:l1", "k8s.io/2/c1"})})
    found = [(24, damaged_snapshots, 3), (26, containers, 0)]
    named = name_namespace_buckets(NS, found, BucketTree(), exact=False, evidence=evidence)
    assert named[K.CONTAINERS] is containers
    whole = [(24, damaged_snapshots, 0), (26, containers, 0)]
    assert K.CONTAINERS not in name_namespace_buckets(NS, whole, BucketTree(), exact=False, evidence=evidence)
