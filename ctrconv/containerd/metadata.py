"""Decoding of containerd's meta.db and snapshotter metadata.db into typed records.

Bucket layout in :mod:`ctrconv.containerd.schema`. Every decode error names the record's path.
"""

from __future__ import annotations

from typing import Callable, Iterator, TypeVar

from ctrconv.bolt.reader import BoltFile, Bucket
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import (
    GoTime,
    decode_time,
    decode_uvarint,
    decode_uvarint_exact,
    decode_varint,
)
from ctrconv.containerd.records import (
    BackendSnapshot,
    BlobRecord,
    ImageRecord,
    IngestRecord,
    LeaseRecord,
    SnapshotRecord,
    Target,
)
from ctrconv.errors import FormatError

T = TypeVar("T")


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


def _time(bucket: Bucket, key: bytes) -> GoTime | None:
    raw = bucket.get(key)
    return None if raw is None else decode_time(raw)


def read_map(bucket: Bucket | None) -> dict[str, str]:
    """A labels/annotations bucket as a dict (absent bucket = empty map)."""
    if bucket is None:
        return {}
    return {_text(k): _text(v) for k, v in bucket.values()}  # type: ignore[misc]


def _guard(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None


class MetadataDB:
    """containerd's meta.db, read-only. Wraps an open :class:`BoltFile`."""

    def __init__(self, db: BoltFile) -> None:
        self.db = db
        self.v1 = db.root.bucket(K.V1)

    @property
    def schema_version(self) -> int | None:
        raw = self.v1.get(K.VERSION) if self.v1 else None
        return None if raw is None else decode_varint(raw)

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
        return [_text(k) for k, _ in self.v1.buckets()]  # type: ignore[misc]

    def _ns(self, namespace: str, *path: bytes) -> Bucket | None:
        node = self.v1.bucket(namespace.encode()) if self.v1 else None
        for name in path:
            if node is None:
                return None
            node = node.bucket(name)
        return node

    # -- images ----------------------------------------------------------------------------

    def images(self, namespace: str) -> Iterator[ImageRecord]:
        images = self._ns(namespace, K.IMAGES)
        if images is None:
            return
        for key, bucket in images.buckets():
            yield self._image(namespace, _text(key), bucket)  # type: ignore[arg-type]

    def image(self, namespace: str, name: str) -> ImageRecord | None:
        images = self._ns(namespace, K.IMAGES)
        bucket = images.bucket(name.encode()) if images else None
        return None if bucket is None else self._image(namespace, name, bucket)

    def _image(self, namespace: str, name: str, bucket: Bucket) -> ImageRecord:
        def decode() -> ImageRecord:
            tb = bucket.bucket(K.TARGET)
            if tb is None:
                raise FormatError("no target")
            size_raw = tb.get(K.SIZE)
            target = Target(
                media_type=_text(tb.get(K.MEDIATYPE)) or "",
                digest=_text(tb.get(K.DIGEST)) or "",
                size=decode_varint(size_raw) if size_raw is not None else 0,
            )
            return ImageRecord(
                namespace=namespace,
                name=name,
                target=target,
                labels=read_map(bucket.bucket(K.LABELS)),
                annotations=read_map(bucket.bucket(K.ANNOTATIONS)),
                created_at=_time(bucket, K.CREATED_AT),
                updated_at=_time(bucket, K.UPDATED_AT),
            )

        return _guard(f"image {namespace}/{name}", decode)

    # -- content ---------------------------------------------------------------------------

    def blobs(self, namespace: str) -> Iterator[BlobRecord]:
        blobs = self._ns(namespace, K.CONTENT, K.BLOB)
        if blobs is None:
            return
        for key, bucket in blobs.buckets():
            yield self._blob(namespace, _text(key), bucket)  # type: ignore[arg-type]

    def content_digests(self, namespace: str) -> frozenset[str]:
        """Keys of ``v1/<namespace>/content/blob``: the content this namespace owns.

        containerd shows a namespace only blobs it holds a record for, whatever is on disk
        (blob files are shared by every namespace; records are not)."""
        blobs = self._ns(namespace, K.CONTENT, K.BLOB)
        if blobs is None:
            return frozenset()
        return frozenset(_text(key) for key, _ in blobs.buckets())  # type: ignore[misc]

    def blob(self, namespace: str, digest: str) -> BlobRecord | None:
        blobs = self._ns(namespace, K.CONTENT, K.BLOB)
        bucket = blobs.bucket(digest.encode()) if blobs else None
        return None if bucket is None else self._blob(namespace, digest, bucket)

    def _blob(self, namespace: str, digest: str, bucket: Bucket) -> BlobRecord:
        def decode() -> BlobRecord:
            size_raw = bucket.get(K.SIZE)
            return BlobRecord(
                namespace=namespace,
                digest=digest,
                size=decode_varint(size_raw) if size_raw is not None else 0,
                labels=read_map(bucket.bucket(K.LABELS)),
                created_at=_time(bucket, K.CREATED_AT),
                updated_at=_time(bucket, K.UPDATED_AT),
            )

        return _guard(f"content {namespace}/{digest}", decode)

    def ingests(self, namespace: str) -> Iterator[IngestRecord]:
        ingests = self._ns(namespace, K.CONTENT, K.INGESTS)
        if ingests is None:
            return
        for key, bucket in ingests.buckets():
            ref = _text(key)
            yield _guard(
                f"ingest {namespace}/{ref}",
                lambda: IngestRecord(
                    namespace=namespace,
                    ref=ref,  # type: ignore[arg-type]
                    backend_ref=_text(bucket.get(K.REF)),
                    expire_at=_time(bucket, K.EXPIRE_AT),
                    expected=_text(bucket.get(K.EXPECTED)),
                ),
            )

    # -- snapshots -------------------------------------------------------------------------

    def snapshotters(self, namespace: str) -> list[str]:
        snaps = self._ns(namespace, K.SNAPSHOTS)
        return [] if snaps is None else [_text(k) for k, _ in snaps.buckets()]  # type: ignore[misc]

    def snapshot_sequence(self, namespace: str, snapshotter: str) -> int:
        bucket = self._ns(namespace, K.SNAPSHOTS, snapshotter.encode())
        return 0 if bucket is None else bucket.sequence

    def snapshots(self, namespace: str, snapshotter: str) -> Iterator[SnapshotRecord]:
        bucket = self._ns(namespace, K.SNAPSHOTS, snapshotter.encode())
        if bucket is None:
            return
        for key, sb in bucket.buckets():
            skey = _text(key)

            def decode() -> SnapshotRecord:
                children = sb.bucket(K.CHILDREN)
                return SnapshotRecord(
                    namespace=namespace,
                    snapshotter=snapshotter,
                    key=skey,  # type: ignore[arg-type]
                    name=_text(sb.get(K.NAME)) or "",
                    parent=_text(sb.get(K.PARENT)),
                    children=tuple(_text(k) for k, _ in children.items()) if children else (),  # type: ignore[misc]
                    labels=read_map(sb.bucket(K.LABELS)),
                    created_at=_time(sb, K.CREATED_AT),
                    updated_at=_time(sb, K.UPDATED_AT),
                )

            yield _guard(f"snapshot {namespace}/{snapshotter}/{skey}", decode)

    # -- leases ----------------------------------------------------------------------------

    def leases(self, namespace: str) -> Iterator[LeaseRecord]:
        leases = self._ns(namespace, K.LEASES)
        if leases is None:
            return
        for key, lb in leases.buckets():
            def names(b: Bucket | None) -> tuple[str, ...]:
                return () if b is None else tuple(_text(k) for k, _ in b.items())  # type: ignore[misc]

            snaps = lb.bucket(K.SNAPSHOTS)
            yield LeaseRecord(
                namespace=namespace,
                id=_text(key),  # type: ignore[arg-type]
                created_at=_time(lb, K.CREATED_AT),
                labels=read_map(lb.bucket(K.LABELS)),
                content=names(lb.bucket(K.CONTENT)),
                snapshots={_text(k): names(b) for k, b in snaps.buckets()} if snaps else {},  # type: ignore[misc]
                ingests=names(lb.bucket(K.INGESTS)),
                images=names(lb.bucket(K.IMAGES)),
            )

    def containers(self, namespace: str) -> list[str]:
        """Container ids only: container records are passed through untouched, never decoded."""
        bucket = self._ns(namespace, K.CONTAINERS)
        return [] if bucket is None else [_text(k) for k, _ in bucket.buckets()]  # type: ignore[misc]


class SnapshotterDB:
    """A snapshotter's own metadata.db (overlayfs, native, ...), read-only."""

    def __init__(self, db: BoltFile) -> None:
        self.db = db
        self.v1 = db.root.bucket(K.V1)

    @property
    def sequence(self) -> int:
        snaps = self.v1.bucket(K.SNAPSHOTS) if self.v1 else None
        return 0 if snaps is None else snaps.sequence

    def snapshots(self) -> Iterator[BackendSnapshot]:
        snaps = self.v1.bucket(K.SNAPSHOTS) if self.v1 else None
        if snaps is None:
            return
        for key, sb in snaps.buckets():
            name = _text(key)

            def decode() -> BackendSnapshot:
                id_raw = sb.get(K.ID)
                kind_raw = sb.get(K.KIND)
                inodes = sb.get(K.INODES)
                size = sb.get(K.SIZE)
                if id_raw is None:
                    raise FormatError("no id")
                return BackendSnapshot(
                    key=name,  # type: ignore[arg-type]
                    id=decode_uvarint_exact(id_raw),
                    kind=K.SNAPSHOT_KINDS.get(kind_raw[0], f"kind-{kind_raw[0]}") if kind_raw else "unknown",
                    parent=_text(sb.get(K.PARENT)),
                    labels=read_map(sb.bucket(K.LABELS)),
                    created_at=_time(sb, K.CREATED_AT),
                    updated_at=_time(sb, K.UPDATED_AT),
                    inodes=decode_varint(inodes) if inodes is not None else None,
                    size=decode_varint(size) if size is not None else None,
                )

            yield _guard(f"backend snapshot {name}", decode)

    def parent_links(self) -> Iterator[tuple[int, int, str]]:
        """(parent id, child id, child key) from the ``v1/parents`` index."""
        parents = self.v1.bucket(K.PARENTS) if self.v1 else None
        if parents is None:
            return
        for key, value in parents.values():
            pid, n = decode_uvarint(key)
            if n >= len(key) or key[n] != 0:
                raise FormatError(f"parents key {key.hex()} has no separator")
            cid = decode_uvarint_exact(key[n + 1 :])
            yield pid, cid, _text(value)  # type: ignore[misc]
