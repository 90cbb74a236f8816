"""containerd's meta.db and a snapshotter's metadata.db opened read-only: where each record sits.

Bucket layout in :mod:`ctrconv.containerd.schema`; the records themselves are decoded by
:mod:`ctrconv.containerd.records`, whose errors name the record.
"""

from __future__ import annotations

from typing import Iterator

from ctrconv.bolt.reader import BoltFile, Bucket
from ctrconv.containerd import blobrecords, imagerecords
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import (
    BackendSnapshot,
    BlobRecord,
    ContainerRecord,
    ImageRecord,
    IngestRecord,
    LeaseRecord,
    SnapshotRecord,
    read_blob,
    read_container,
    read_image,
    read_ingest,
    read_lease,
    read_map,
    read_parent_links,
    read_schema_version,
    key_bytes,
    read_snapshot,
    name_text,
    text,
)
from ctrconv.errors import FormatError


class MetadataDB:
    """containerd's meta.db, read-only. Wraps an open :class:`BoltFile`."""

    def __init__(self, db: BoltFile) -> None:
        self.db = db
        self.v1 = db.root.bucket(K.V1)

    @property
    def schema_version(self) -> int | None:
        return read_schema_version(self.v1)

    @property
    def writer_line(self) -> str:
        """The oldest containerd line ("1.6", "1.7", "2.x") that writes a meta.db like this one.

        ``v1/version`` 4 can only come from 2.x; a newest meta page without a persisted freelist
        from 1.7+ (``NoFreelistSync``); anything else is reported as 1.6, which also covers a
        1.7 that has only read the file (a read never commits, so the freelist stays synced).
        A malformed version is ignored, as containerd ignores it.
        """
        try:
            version = self.schema_version
        except FormatError:
            version = None
        if version is not None and version >= K.DB_VERSION_2X:
            return "2.x"
        return "1.6" if self.db.meta.freelist_synced else "1.7"

    def namespaces(self) -> list[str]:
        if self.v1 is None:
            return []
        return [text(k) for k, _ in self.v1.buckets()]

    def _ns(self, namespace: str, *path: bytes) -> Bucket | None:
        return self.v1.bucket(key_bytes(namespace), *path) if self.v1 else None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        """The namespace's own labels (``v1/<ns>/labels``: ``ctr namespaces label``)."""
        return read_map(self._ns(namespace, K.LABELS))

    def plain_keys(self, namespace: str) -> list[bytes]:
        """Keys holding plain values directly in the namespace bucket (containerd keeps only
        buckets there: such a key is damage hiding what it held)."""
        bucket = self._ns(namespace)
        return [] if bucket is None else [k for k, _ in bucket.values()]

    # -- images ----------------------------------------------------------------------------

    def images(self, namespace: str) -> Iterator[ImageRecord]:
        images = self._ns(namespace, K.IMAGES)
        if images is None:
            return
        yield from imagerecords.images(self.db, images, namespace)

    def stored_images(self, namespace: str) -> imagerecords.StoredImages:
        """The namespace's image records undecoded (``ls`` splits them before decoding)."""
        return imagerecords.stored(self.db, self._ns(namespace, K.IMAGES), namespace)

    def image(self, namespace: str, name: str) -> ImageRecord | None:
        bucket = self._ns(namespace, K.IMAGES, key_bytes(name))
        return None if bucket is None else read_image(bucket, namespace, name)

    # -- content ---------------------------------------------------------------------------

    def blobs(self, namespace: str) -> Iterator[BlobRecord]:
        blobs = self._ns(namespace, K.CONTENT, K.BLOB)
        if blobs is None:
            return
        yield from blobrecords.blobs(self.db, blobs, namespace)

    def content_digests(self, namespace: str) -> frozenset[str]:
        """Keys of ``v1/<namespace>/content/blob``: the content this namespace owns.

        containerd shows a namespace only blobs it holds a record for, whatever is on disk
        (blob files are shared by every namespace; records are not)."""
        blobs = self._ns(namespace, K.CONTENT, K.BLOB)
        if blobs is None:
            return frozenset()
        return frozenset(map(text, blobs.bucket_keys()))

    def blob(self, namespace: str, digest: str) -> BlobRecord | None:
        bucket = self._ns(namespace, K.CONTENT, K.BLOB, key_bytes(digest))
        return None if bucket is None else read_blob(bucket, namespace, digest)

    def ingests(self, namespace: str) -> Iterator[IngestRecord]:
        ingests = self._ns(namespace, K.CONTENT, K.INGESTS)
        if ingests is None:
            return
        for key, bucket in ingests.buckets():
            yield read_ingest(bucket, namespace, text(key))

    # -- snapshots -------------------------------------------------------------------------

    def snapshotters(self, namespace: str) -> list[str]:
        snaps = self._ns(namespace, K.SNAPSHOTS)
        return [] if snaps is None else [text(k) for k, _ in snaps.buckets()]

    def snapshot_sequence(self, namespace: str, snapshotter: str) -> int:
        bucket = self._ns(namespace, K.SNAPSHOTS, key_bytes(snapshotter))
        return 0 if bucket is None else bucket.sequence

    def snapshots(self, namespace: str, snapshotter: str, *, times: bool = True) -> Iterator[SnapshotRecord]:
        """``times=False``: timestamps checked, not kept (:func:`~ctrconv.containerd.records.read_snapshot`)."""
        bucket = self._ns(namespace, K.SNAPSHOTS, key_bytes(snapshotter))
        if bucket is None:
            return
        for key, sb in bucket.buckets():
            yield read_snapshot(sb, namespace, snapshotter, name_text(key), times=times)

    def snapshot(self, namespace: str, snapshotter: str, key: str) -> SnapshotRecord | None:
        bucket = self._ns(namespace, K.SNAPSHOTS, key_bytes(snapshotter), key_bytes(key))
        return None if bucket is None else read_snapshot(bucket, namespace, snapshotter, key)

    # -- leases ----------------------------------------------------------------------------

    def leases(self, namespace: str) -> Iterator[LeaseRecord]:
        leases = self._ns(namespace, K.LEASES)
        if leases is None:
            return
        for key, lb in leases.buckets():
            yield read_lease(lb, namespace, text(key))

    def containers(self, namespace: str) -> list[str]:
        """Container ids (writers pass container records through untouched)."""
        bucket = self._ns(namespace, K.CONTAINERS)
        return [] if bucket is None else [text(k) for k, _ in bucket.buckets()]

    def container(self, namespace: str, container_id: str) -> ContainerRecord | None:
        """One container's record (``commit`` reads its image and snapshot key)."""
        bucket = self._ns(namespace, K.CONTAINERS, key_bytes(container_id))
        return None if bucket is None else read_container(bucket, namespace, container_id)


class SnapshotterDB:
    """A snapshotter's own metadata.db (overlayfs, native, ...), read-only."""

    def __init__(self, db: BoltFile) -> None:
        self.db = db
        self.v1 = db.root.bucket(K.V1)

    @property
    def sequence(self) -> int:
        snaps = self.v1.bucket(K.SNAPSHOTS) if self.v1 else None
        return 0 if snaps is None else snaps.sequence

    def snapshots(self, *, times: bool = True) -> Iterator[BackendSnapshot]:
        snaps = self.v1.bucket(K.SNAPSHOTS) if self.v1 else None
        if snaps is None:
            return
        yield from blobrecords.backend_snapshots(self.db, snaps, times=times)

    def parent_links(self) -> Iterator[tuple[int, int, str]]:
        """(parent id, child id, child key) from the ``v1/parents`` index."""
        yield from read_parent_links(self.v1.bucket(K.PARENTS) if self.v1 else None)
