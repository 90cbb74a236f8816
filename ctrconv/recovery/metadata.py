"""Stage 3, clean metadata: in the salvaged meta.db tree, drop content records of missing or
corrupt blobs and the images whose target is gone; fix recorded sizes; prune snapshot GC
labels of lost snapshots. Ingests, leases, containers and sandboxes are kept as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.containerd.root import is_namespace
from ctrconv.containerd.cri import CRI_NAMESPACE, LABEL_CRI_IMAGE
from ctrconv.containerd.records import (
    Target, go_time, key_bytes, read_blob_size, read_map, target_digest, write_blob_size, write_map, write_target,
    write_timestamps,
)
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, InvalidDigestError
from ctrconv.recovery.buckets import namespaces, target_descriptor, text
from ctrconv.recovery.report import RebuildReport

GC_SNAPSHOT = K.LABEL_GC_SNAPSHOT
GC_CONTENT = K.LABEL_GC_CONTENT

if TYPE_CHECKING:
    from ctrconv.containerd.content import ContentStore


def clean_metadata(meta: BucketTree, good: dict[str, int], report: RebuildReport,
                   content: ContentStore | None = None) -> dict[tuple[str, str], str]:
    """Drop records of missing or corrupt content and the images that point at it.

    ``good`` maps the digests of the verified blobs to their sizes. Returns, per (namespace,
    digest), the name of a dropped image whose lost target (an index) listed that manifest in
    its content record's GC labels: the manifest can be named after it.
    """
    _drop_unreachable_namespaces(meta, report)
    drop_undecodable_labels(meta, "meta.db", report)
    mend_undecodable_times(meta, "meta.db", report)
    orphaned = children_of_lost_targets(meta, good)
    known_targets = _targets_by_name(meta)
    for ns_name, ns in namespaces(meta):
        _clean_content_records(ns_name, ns, good, report)
        # ingests are kept: a pull of the same blob resumes one, and containerd's GC drops
        # those that expired (their data under content/ingest is copied with the content)
        images = ns.bucket(K.IMAGES)
        for key in list(images.entries) if images else []:
            record = images.entries[key]
            digest = (target_digest(record) if isinstance(record, BucketTree) else None) or ""
            if not digest and isinstance(record, BucketTree) and content is not None:
                digest = _mend_lost_target(ns_name, key, record, ns, good, known_targets, content, report) or ""
            elif digest not in good and isinstance(record, BucketTree) and content is not None \
                    and _says_another_target(key, digest):
                # a damaged target digest (a flipped bit) where the root still says the right one
                digest = _mend_lost_target(ns_name, key, record, ns, good, known_targets, content, report,
                                           lost=f"its target digest {digest!r} damaged") or digest
            if digest not in good:
                del images.entries[key]
                report.drop("image", f"image {ns_name}/{text(key)}", f"target {digest or '?'} missing or corrupt")
            elif content is not None:
                _mend_target_media_type(ns_name, key, record, digest, content, report)  # type: ignore[arg-type]
    return orphaned


def _targets_by_name(meta: BucketTree) -> dict[bytes, set[str]]:
    """Image name -> the target digests its records have, across namespaces."""
    found: dict[bytes, set[str]] = {}
    for _, ns in namespaces(meta):
        images = ns.bucket(K.IMAGES)
        for key, record in (images.entries.items() if images else ()):
            digest = target_digest(record) if isinstance(record, BucketTree) else None
            if digest:
                found.setdefault(key, set()).add(digest)
    return found


def _says_another_target(key: bytes, digest: str) -> bool:
    """Whether an image record whose target ``digest`` is not a good blob may be mended from what
    else the root says: its ``repo@sha256:...`` name holds a digest other than that one, or the
    digest is no digest at all (damaged bytes; a valid one whose blob is gone stays gone)."""
    name = text(key)
    if "@" in name:
        return name.rsplit("@", 1)[1] != digest
    try:
        Digest.parse(digest)
    except (CtrconvError, ValueError):
        return True
    return False


def _mend_lost_target(ns_name: str, key: bytes, record: BucketTree, ns: BucketTree, good: dict[str, int],
                      known: dict[bytes, set[str]], content: ContentStore, report: RebuildReport,
                      lost: str = "record lost to damage") -> str | None:
    """The target of an image record whose name survived the damage but whose body (a lost
    page) did not, where the root still says it: the digest in a ``repo@sha256:...`` name, or
    the one target the same name has in the other namespaces. The record was dropped, and with
    it a name a node's pods ask for (a red-team run: 24 single pages of a 2.x meta.db each cost
    one k8s.io name). None where nothing says it (the image goes as before)."""
    from ctrconv.recovery.derive import sniff_document

    name = text(key)
    candidates: set[str] = set()
    if "@" in name:
        candidates.add(name.rsplit("@", 1)[1])
    else:
        candidates |= known.get(key, set())
    found = [doc for digest in sorted(candidates) if digest in good
             if (doc := sniff_document(Digest.parse(digest), content.blob_path(digest))) is not None]
    if len(found) != 1:
        return None
    doc = found[0].descriptor
    write_target(record, Target(doc["mediaType"], doc["digest"], doc["size"]))
    if record.get(K.CREATED_AT) is None or record.get(K.UPDATED_AT) is None:
        import time as _time

        now = go_time(_time.time_ns())
        write_timestamps(record, now, now)
    if ns_name == CRI_NAMESPACE and record.bucket(K.LABELS) is None:
        write_map(record, K.LABELS, {LABEL_CRI_IMAGE: "managed"})  # (as a re-derived CRI image)
    report.restore("image", f"image {ns_name}/{name}",
                   f"{lost}, its name survived: target {doc['digest']} "
                   f"({'the digest its name holds' if '@' in name else 'the target this name has elsewhere'})")
    return str(doc["digest"])


def drop_empty_recovered_namespaces(meta: BucketTree, report: RebuildReport) -> None:
    """Namespaces the salvage had to name ``recovered-<page>`` (an orphan namespace page whose
    records said nothing of their namespace: often a freed older copy of another) that hold
    nothing once repaired (no image, container, content or snapshot record; a lease alone is
    no content) go: they were left as empty namespaces ``ctr namespaces ls`` listed (a
    red-team run). One that still holds records stays, for the operator to look at."""
    from ctrconv.recovery.salvage import RECOVERED_NAMESPACE_PREFIX

    v1 = meta.bucket(K.V1)
    for key in list(v1.entries) if v1 else []:
        ns = v1.entries[key]  # type: ignore[union-attr]
        if not (isinstance(ns, BucketTree) and text(key).startswith(RECOVERED_NAMESPACE_PREFIX)):
            continue
        if _holds_records(ns):
            continue
        del v1.entries[key]  # type: ignore[union-attr]
        report.clean("namespace", f"namespace {text(key)}",
                     "assembled from an orphan page that named no namespace; nothing of it survived the repair")


def _holds_records(ns: BucketTree) -> bool:
    for path in ((K.IMAGES,), (K.CONTAINERS,), (K.CONTENT, K.BLOB)):
        bucket = ns.bucket(*path)
        if bucket is not None and bucket.entries:
            return True
    snapshots = ns.bucket(K.SNAPSHOTS)
    return any(isinstance(b, BucketTree) and b.entries for b in (snapshots.entries.values() if snapshots else ()))


def _drop_unreachable_namespaces(meta: BucketTree, report: RebuildReport) -> None:
    """Namespace buckets whose names containerd refuses (``identifiers.Validate``: a damaged
    key, a writer other than containerd): no client can name them, so their images never
    run and their records only keep content from GC. They are dropped like any record that
    cannot be what it claims; blobs only they held are left to :func:`derive_images`, which
    names images after their manifests' annotations, as for any lost image record."""
    v1 = meta.bucket(K.V1)
    for key in list(v1.entries) if v1 else []:
        name = text(key)
        if isinstance(v1.entries[key], BucketTree) and not is_namespace(name):  # type: ignore[union-attr]
            del v1.entries[key]  # type: ignore[union-attr]
            report.drop("namespace", f"namespace {name}", "a name containerd refuses (a damaged key?): no client can reach it")


def _mend_target_media_type(ns_name: str, key: bytes, record: BucketTree, digest: str, content: ContentStore,
                            report: RebuildReport) -> None:
    """A target media type that is not UTF-8 (a flipped bit): containerd 1.7+ could not list the
    namespace's images, and the image was dropped as having no platform. The target blob, whole,
    says what it is: its own ``mediaType``, or its shape."""
    target = record.bucket(K.TARGET)
    raw = target.get(K.MEDIATYPE) if target is not None else None
    if raw is None or _utf8(raw):
        return
    from ctrconv.recovery.derive import sniff_document

    found = sniff_document(Digest.parse(digest), content.blob_path(digest))
    if found is None:
        return  # (not a manifest or index: the image goes as having no platform)
    target.put(K.MEDIATYPE, found.descriptor["mediaType"].encode())  # type: ignore[union-attr]
    report.restore("image", f"image {ns_name}/{text(key)}",
                   f"target media type was not UTF-8: {found.descriptor['mediaType']}, as its blob says")


def drop_flattened_buckets(meta: BucketTree, report: RebuildReport) -> set[tuple[str, bytes]]:
    """Plain values where containerd keeps a namespace's buckets (``images``, ``content``...:
    a damaged flag). What they held is unreadable, to containerd too: they go, reported, and
    the caller treats those records as lost (images are re-derived from the content there).
    Returns (namespace, bucket name) of each."""
    flattened: set[tuple[str, bytes]] = set()
    for ns_name, ns in namespaces(meta):
        for key in [k for k, v in ns.entries.items() if not isinstance(v, BucketTree)]:
            del ns.entries[key]
            flattened.add((ns_name, key))
            report.drop("record", f"record {ns_name}/{text(key)}",
                        "a plain value where containerd keeps a bucket: everything it held was unreadable")
    return flattened


def drop_undecodable_labels(tree: BucketTree, where: str, report: RebuildReport) -> None:
    """Labels (of images, content, snapshots, containers: any ``labels`` bucket) whose key or
    value is not UTF-8 go: containerd 1.7+ cannot send them over its API, and one such label
    made listing, checking and running every image of its namespace fail. containerd never
    writes one (its API takes only UTF-8): damage, or another writer."""
    stack: list[tuple[tuple[bytes, ...], BucketTree]] = [((), tree)]
    while stack:
        path, bucket = stack.pop()
        for key, value in list(bucket.entries.items()):
            if not isinstance(value, BucketTree):
                continue
            if key == K.LABELS:
                for name, label in list(value.entries.items()):
                    if isinstance(label, bytes) and _utf8(name) and _utf8(label):
                        continue
                    del value.entries[name]
                    at = "/".join(text(p) for p in path)
                    report.drop("label", f"label {text(name)!r} of {where} {at}",
                                "not UTF-8 (its key or value): containerd 1.7+ could not list or use its namespace")
            else:
                stack.append((path + (key,), value))


#: the keys whose values containerd decodes as Go binary times (``time.UnmarshalBinary``)
_TIME_KEYS = (K.CREATED_AT, K.UPDATED_AT, K.EXPIRE_AT)


def mend_undecodable_times(tree: BucketTree, where: str, report: RebuildReport, now_ns: int | None = None) -> None:
    """Timestamps of records (content, images, snapshots, containers, leases, in meta.db or a
    snapshotter's db) that are no Go binary time (a flipped length or version byte) are written
    again: from the record's other timestamp when that one decodes, else the time of the
    rebuild. containerd fails to list the whole namespace on one such value (``ctr content ls``:
    ``Time.UnmarshalBinary: invalid length``); verify reported it and rebuild copied it as it
    was (a red-team run). An unreadable ``expireat`` (an ingest's) is set to the rebuild's time:
    the ingest expires. Maps whose keys are anyone's (labels, annotations, a container's
    extensions) are not looked into."""
    import time as _time

    from ctrconv.containerd.codec import encode_go_time
    from ctrconv.containerd.records import go_time

    now = go_time(now_ns if now_ns is not None else _time.time_ns())
    stack: list[tuple[tuple[bytes, ...], BucketTree]] = [((), tree)]
    while stack:
        path, bucket = stack.pop()
        bad = [key for key in _TIME_KEYS if isinstance(raw := bucket.entries.get(key), bytes) and not _decodes(raw)]
        for key in bad:
            other = next((raw for k in (K.CREATED_AT, K.UPDATED_AT) if k != key and k not in bad
                          and isinstance(raw := bucket.entries.get(k), bytes) and _decodes(raw)), None)
            bucket.entries[key] = other if other is not None and key != K.EXPIRE_AT else encode_go_time(now)
            at = "/".join(text(p) for p in path)
            report.restore("timestamp", f"{text(key)} of {where} {at}",
                           "not a Go binary time (containerd could not list its namespace): written again")
        for key, value in bucket.entries.items():
            if isinstance(value, BucketTree) and key not in _FREE_KEYED:
                stack.append((path + (key,), value))


#: buckets whose keys are chosen by users, never record fields
_FREE_KEYED = (K.LABELS, K.ANNOTATIONS, b"extensions")


def _decodes(raw: bytes) -> bool:
    from ctrconv.containerd.codec import decode_time

    try:
        decode_time(raw)
    except CtrconvError:
        return False
    return True


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _clean_content_records(ns_name: str, ns: BucketTree, good: dict[str, int], report: RebuildReport) -> None:
    """Content records of one namespace: only good blobs keep one, with the blob's real size."""
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    for key in list(blobs.entries) if blobs else []:
        record = blobs.entries[key]  # type: ignore[union-attr]
        obj = f"content {ns_name}/{text(key)}"
        try:
            digest = str(Digest.parse(key))
        except InvalidDigestError:
            del blobs.entries[key]  # type: ignore[union-attr]
            report.drop("content", obj, "invalid digest")
            continue
        if not isinstance(record, BucketTree) or digest not in good:
            del blobs.entries[key]  # type: ignore[union-attr]
            report.drop("content", obj, BLOB_GONE)
            continue
        if read_blob_size(record) != good[digest]:
            write_blob_size(record, good[digest])


#: the reason :func:`clean_metadata` gives for a record it dropped because its blob is gone
BLOB_GONE = "blob missing or corrupt"


def lost_records(report: RebuildReport, ns_name: str) -> set[str]:
    """Digests whose content record ``ns_name`` held while the blob was missing or corrupt
    (dropped by :func:`clean_metadata`): content lost to damage. A layer containerd let go
    after unpacking (``discard_unpacked_layers``) or never fetched (Docker's store) had no
    record, so it is not among them."""
    prefix = f"content {ns_name}/"
    return {d["object"][len(prefix):] for d in report.dropped
            if d["kind"] == "content" and d["reason"] == BLOB_GONE and d["object"].startswith(prefix)}


def children_of_lost_targets(meta: BucketTree, good: dict[str, int]) -> dict[tuple[str, str], str]:
    """(namespace, child digest) -> image name, for images whose target blob is gone but whose
    content record still lists its children (``containerd.io/gc.ref.content.m.<i>``, or any
    other content reference: a nested index was recorded as ``...content.0``, and the whole
    image behind it was dropped; a red-team run). Only children that are whole manifests or
    indexes become images (:func:`~ctrconv.recovery.derive.derive_images`)."""
    found: dict[tuple[str, str], str] = {}
    prefix = K.LABEL_GC_CONTENT + "."
    for ns_name, ns in namespaces(meta):
        images = ns.bucket(K.IMAGES)
        blobs = ns.bucket(K.CONTENT, K.BLOB)
        for key, record in sorted(images.entries.items()) if images and blobs else []:
            desc = target_descriptor(record)
            if desc is None or desc["digest"] in good:
                continue
            content = blobs.entries.get(desc["digest"].encode())  # type: ignore[union-attr]
            labels = read_map(content.bucket(K.LABELS)) if isinstance(content, BucketTree) else {}
            for label, value in labels.items():
                if label.startswith(prefix):
                    found.setdefault((ns_name, value), text(key))
    return found


def prune_dangling_labels(meta: BucketTree, report: RebuildReport) -> None:
    """Drop snapshot GC labels whose snapshot is gone (the image is unpacked again and labelled
    anew). Content references to content a namespace does not hold stay: an index lists every
    platform, a pull fetches some, and containerd's GC ignores the rest."""
    for ns_name, ns in namespaces(meta):
        blobs = ns.bucket(K.CONTENT, K.BLOB)
        if blobs is None:
            continue
        snapshots = ns.bucket(K.SNAPSHOTS)
        for digest, record in blobs.entries.items():
            labels = record.bucket(K.LABELS) if isinstance(record, BucketTree) else None
            if labels is None:
                continue
            for key in list(labels.entries):
                value = labels.entries[key]
                name = text(key)
                if not isinstance(value, bytes) or not name.startswith(GC_SNAPSHOT):
                    continue
                sn = key_bytes(name[len(GC_SNAPSHOT):].split("/", 1)[0])
                bucket = snapshots.bucket(sn) if snapshots else None
                if bucket is None or value not in bucket.entries:
                    # re-unpacking the image labels its snapshots again
                    del labels.entries[key]
                    report.clean("gc-label", f"label {name} of content {ns_name}/{text(digest)}",
                                 f"pointed at snapshot {text(value)}, which is gone")
            if not labels.entries:
                del record.entries[K.LABELS]  # type: ignore[union-attr]


def _layer_count(content: ContentStore, blobs: BucketTree, manifest: bytes) -> int | None:
    """How many layers the manifest lists (``None``: unreadable)."""
    from ctrconv.oci.validate import parse_json_bytes

    record = blobs.entries.get(manifest)
    try:
        doc = parse_json_bytes(content.read_small(text(manifest), read_blob_size(record) or 0
                                                  if isinstance(record, BucketTree) else 0))
        layers = doc["layers"]
    except (CtrconvError, KeyError, TypeError):
        return None
    return len(layers) if isinstance(layers, list) else None


def label_kept_snapshots(meta: BucketTree, content: ContentStore, report: RebuildReport,
                         lost_in: Callable[[str], bool] = lambda _ns: True) -> None:
    """Give an image config the ``gc.ref.snapshot.<sn>`` label containerd's unpacker gives it
    where the namespace holds the committed snapshot of its top layer but the label is gone
    (content records lost, snapshot records written again from the snapshotter's): without it
    ``verify`` called the rebuilt root damaged, and containerd's GC keeps such a chain only while
    a container above it lives. Only where content records may have been lost (``lost_in``):
    an arm64 config whose one layer its amd64 sibling shares got a label containerd never set
    on a healthy node, which then read as damaged (a red-team run). (Where records were lost,
    a config of any platform whose chain exists is labelled: ``ctr pull --platform`` unpacks
    a foreign one, and its snapshots must not go to GC.)"""
    from ctrconv.layers.chain import chain_ids
    from ctrconv.oci.validate import parse_json_bytes

    for ns_name, ns in namespaces(meta):
        blobs, snapshots = ns.bucket(K.CONTENT, K.BLOB), ns.bucket(K.SNAPSHOTS)
        if blobs is None or snapshots is None or not lost_in(ns_name):
            continue
        #: config -> the manifests labelling it
        configs: dict[bytes, list[bytes]] = {}
        for digest, record in blobs.entries.items():
            value = (record.bucket(K.LABELS) or BucketTree()).entries.get(key_bytes(GC_CONTENT + ".config")) \
                if isinstance(record, BucketTree) else None
            if isinstance(value, bytes):
                configs.setdefault(value, []).append(digest)
        stores = [sn for sn in K.TREE_SNAPSHOTTERS if snapshots.bucket(sn.encode()) is not None]
        for config in sorted(configs):
            record = blobs.entries.get(config)
            if not isinstance(record, BucketTree):
                continue
            present = record.bucket(K.LABELS)
            if present is not None and all(key_bytes(GC_SNAPSHOT + sn) in present.entries for sn in stores):
                continue  # (labelled for every store the namespace has: its config is not read)
            try:
                doc = parse_json_bytes(content.read_small(text(config), read_blob_size(record) or 0))
                diff_ids = doc["rootfs"]["diff_ids"]
                top = chain_ids(diff_ids)[-1]
            except (CtrconvError, ValueError, KeyError, TypeError, IndexError):
                continue
            counts = {n for m in configs[config] if (n := _layer_count(content, blobs, m)) is not None}
            if counts and len(diff_ids) not in counts:
                continue  # no manifest unpacks to that chain (a mismatched image: verify says so)
            for sn in stores:
                bucket = snapshots.bucket(sn.encode())
                chain = bucket.entries.get(key_bytes(top)) if bucket is not None else None
                if not isinstance(chain, BucketTree):
                    continue
                labels = record.bucket(K.LABELS, create=True)
                assert labels is not None
                name = key_bytes(GC_SNAPSHOT + sn)
                if name not in labels.entries:
                    labels.entries[name] = key_bytes(top)
                    report.restore("gc-label", f"label {GC_SNAPSHOT}{sn} of content {ns_name}/{text(config)}",
                                   f"its image is unpacked there (snapshot {top}): the label was lost")
