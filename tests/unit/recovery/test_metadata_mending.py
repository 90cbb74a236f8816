"""What rebuild mends in the records: timestamps that are no Go binary time are written again
(containerd could not list the namespace holding one: ``Time.UnmarshalBinary: invalid length``),
and namespaces assembled from orphan pages that kept nothing go (both found by a red-team run)."""

from __future__ import annotations

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_time, encode_go_time
from ctrconv.containerd.records import go_time
from ctrconv.recovery.metadata import mend_undecodable_times
from ctrconv.recovery.report import RebuildReport

NOW = 1_700_000_000_000_000_000


def _record(tree: BucketTree, *path: bytes) -> BucketTree:
    bucket = tree.bucket(*path, create=True)
    assert bucket is not None
    return bucket


def test_an_undecodable_time_takes_the_record_s_other_time_or_now() -> None:
    tree = BucketTree()
    good = encode_go_time(go_time(1_600_000_000_000_000_000))
    blob = _record(tree, K.V1, b"k8s.io", b"content", b"blob", b"sha256:" + b"a" * 64)
    blob.put(K.CREATED_AT, good)
    blob.put(K.UPDATED_AT, bytes([good[0] ^ 2]) + good[1:])  # a flipped version byte
    image = _record(tree, K.V1, b"default", b"images", b"x:1")
    image.put(K.CREATED_AT, good[:-1])  # one byte short
    image.put(K.UPDATED_AT, b"")
    healthy = _record(tree, K.V1, b"default", b"images", b"y:1")
    healthy.put(K.CREATED_AT, good)
    healthy.put(K.UPDATED_AT, good)
    labels = _record(tree, K.V1, b"default", b"images", b"y:1", K.LABELS)
    labels.put(K.CREATED_AT, b"a label value that is not a time")
    annotations = _record(tree, K.V1, b"default", b"images", b"y:1", K.ANNOTATIONS)
    annotations.put(K.UPDATED_AT, b"an annotation")
    report = RebuildReport(root="r", output="r")

    mend_undecodable_times(tree, "meta.db", report, now_ns=NOW)

    assert blob.get(K.UPDATED_AT) == good
    assert decode_time(image.get(K.CREATED_AT)).unix_ns == NOW  # type: ignore[arg-type]
    assert decode_time(image.get(K.UPDATED_AT)).unix_ns == NOW  # type: ignore[arg-type]
    assert healthy.get(K.CREATED_AT) == good and labels.get(K.CREATED_AT) == b"a label value that is not a time"
    assert annotations.get(K.UPDATED_AT) == b"an annotation"
    assert len(report.restored) == 3 and all(r["kind"] == "timestamp" for r in report.restored)


def test_a_recovered_namespace_with_nothing_left_goes() -> None:
    """Orphan namespace pages that named no namespace are called ``recovered-<page>``; one that
    held only a stale lease and containers whose snapshots are gone was left as an empty
    namespace ``ctr namespaces ls`` listed (a red-team run on a 1.6 meta.db cut short)."""
    from ctrconv.recovery.metadata import drop_empty_recovered_namespaces

    tree = BucketTree()
    _record(tree, K.V1, b"recovered-48", b"leases", b"384003976-HBlH")
    _record(tree, K.V1, b"recovered-48", K.CONTAINERS)
    _record(tree, K.V1, b"recovered-7", K.IMAGES, b"x:1")
    _record(tree, K.V1, b"default", K.LEASES)
    report = RebuildReport(root="r", output="r")
    drop_empty_recovered_namespaces(tree, report)
    v1 = tree.bucket(K.V1)
    assert v1 is not None and set(v1.entries) == {b"recovered-7", b"default"}
    assert [c["object"] for c in report.cleaned] == ["namespace recovered-48"]
