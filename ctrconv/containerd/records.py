"""containerd's records: the typed values, and their bolt encoding read and written side by side.

containerd keeps each record's reader next to its writer (``readImage``/``writeImage`` in
``core/metadata/images.go``, ``readInfo``/``writeInfo`` in ``content.go``, the snapshotter's
``storage/bolt.go``); so does this module, and it is the only one that turns record bytes into
values or values into bytes. Readers take any :class:`~ctrconv.bolt.tree.ReadBucket` (a bucket
of an open file, or an in-memory :class:`BucketTree`), so ``ls``/``export``/``verify`` (files)
and ``import``/``rebuild`` (trees) decode alike; writers fill a :class:`BucketTree` with the
bytes containerd writes. Each ``read_x``/``write_x`` works on the record's own bucket
(``images/<name>``, ``content/blob/<digest>``, ...); its caller knows where that bucket sits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from sys import intern
from typing import Any, Callable, Iterator, Mapping, TypeVar, overload

from ctrconv.bolt.tree import BucketTree, ReadBucket
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import (
    GoTime,
    decode_time,
    decode_uvarint,
    decode_uvarint_exact,
    decode_varint,
    encode_go_time,
    encode_uvarint,
    encode_varint,
)
from ctrconv.errors import FormatError

T = TypeVar("T")

#: containerd's limit on one label (key + value), ``labels.Validate``
MAX_LABEL_BYTES = 4096
KIND_VIEW = 1
KIND_ACTIVE = 2
KIND_COMMITTED = 3
_KIND_CODES = {name: code for code, name in K.SNAPSHOT_KINDS.items()}


@dataclass(frozen=True)
class Target:
    media_type: str
    digest: str
    size: int

    def descriptor(self) -> dict[str, Any]:
        """The target as an OCI descriptor (meta.db stores media type, digest and size only)."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ImageRecord:
    namespace: str
    name: str
    target: Target
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None


@dataclass(frozen=True)
class BlobRecord:
    namespace: str
    digest: str
    size: int
    labels: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None


@dataclass(frozen=True)
class IngestRecord:
    namespace: str
    ref: str
    backend_ref: str | None
    expire_at: GoTime | None
    expected: str | None


@dataclass(frozen=True)
class SnapshotRecord:
    """A meta.db snapshot record: ``key`` is the client key (chain ID for image layers)."""

    namespace: str
    snapshotter: str
    key: str
    name: str
    parent: str | None
    children: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None


@dataclass(frozen=True)
class LeaseRecord:
    namespace: str
    id: str
    created_at: GoTime | None
    labels: dict[str, str]
    content: tuple[str, ...]
    snapshots: dict[str, tuple[str, ...]]
    ingests: tuple[str, ...]
    images: tuple[str, ...]


@dataclass(frozen=True)
class ContainerRecord:
    """A container's meta.db record, the fields ctrconv reads (spec and runtime stay opaque)."""

    namespace: str
    id: str
    image: str
    snapshotter: str
    snapshot_key: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None
    #: ``runtime/name`` (``io.containerd.runc.v2``)
    runtime: str = ""


@dataclass(frozen=True)
class BackendSnapshot:
    """A snapshotter metadata.db record: ``key`` is the backend name ``ns/<seq>/<key>``."""

    key: str
    id: int
    kind: str
    parent: str | None
    labels: dict[str, str] = field(default_factory=dict)
    created_at: GoTime | None = None
    updated_at: GoTime | None = None
    inodes: int | None = None
    size: int | None = None


# -- fields ----------------------------------------------------------------------------------


@overload
def text(raw: bytes) -> str: ...
@overload
def text(raw: None) -> None: ...
@overload
def text(raw: bytes | None) -> str | None: ...
def text(raw: bytes | None) -> str | None:
    """A stored string; undecodable bytes survive a round trip (surrogateescape)."""
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


@overload
def name_text(raw: bytes) -> str: ...
@overload
def name_text(raw: None) -> None: ...
@overload
def name_text(raw: bytes | None) -> str | None: ...
def name_text(raw: bytes | None) -> str | None:
    """:func:`text` of a name other records repeat (a digest, a snapshot's key, its backend name
    and its parent, a child link), as one string for all its mentions (interned): a 10,000-image
    root's 34,500 snapshots are named ~7 times each, ~20 MiB of copies when each was its own."""
    return None if raw is None else intern(raw.decode("utf-8", "surrogateescape"))


def key_bytes(value: str) -> bytes:
    """The inverse of :func:`text`, for keys and string values."""
    return value.encode("utf-8", "surrogateescape")


def _time(bucket: ReadBucket, key: bytes) -> GoTime | None:
    raw = bucket.get(key)
    return None if raw is None else decode_time(raw)


def kept_time(when: GoTime | None, times: bool) -> GoTime | None:
    """A decoded timestamp, or None when the reader does not keep them (``verify`` holds every
    snapshot record for its checks and reads no time: 138,000 of them at 34,500 snapshots
    were ~13 MiB)."""
    return when if times else None


def _put_time(bucket: BucketTree, key: bytes, when: GoTime | None) -> None:
    if when is not None:
        bucket.put(key, encode_go_time(when))


def newest_update(tree: ReadBucket) -> int:
    """The newest ``createdat``/``updatedat`` (Unix ns) of any record below ``tree``, 0 if
    none decodes: which of several candidate trees of a damaged file was committed last."""
    newest = 0
    stack = [tree]
    while stack:
        for key, value in stack.pop().items():
            if not isinstance(value, bytes):
                stack.append(value)
            elif key in (K.CREATED_AT, K.UPDATED_AT):
                try:
                    newest = max(newest, decode_time(value).unix_ns)
                except FormatError:
                    continue
    return newest


def go_time(unix_ns: int) -> GoTime:
    """A UTC timestamp as containerd stores every time it sets (``time.Now().UTC()``)."""
    return GoTime(unix_ns, None)


def write_timestamps(bucket: BucketTree, created: GoTime | None, updated: GoTime | None) -> None:
    """``boltutil.WriteTimestamps``: ``createdat``/``updatedat`` (a ``None`` one is left alone)."""
    _put_time(bucket, K.CREATED_AT, created)
    _put_time(bucket, K.UPDATED_AT, updated)


def write_updated_at(bucket: BucketTree, when: GoTime) -> None:
    """What every ``Update(..., fieldpaths)`` does besides the fields it changes."""
    _put_time(bucket, K.UPDATED_AT, when)


def read_map(bucket: ReadBucket | None) -> dict[str, str]:
    """A ``labels``/``annotations`` bucket as a dict (absent bucket = empty map)."""
    if bucket is None:
        return {}
    return {text(k): text(v) for k, v in bucket.values()}


def write_map(bucket: BucketTree, name: bytes, mapping: Mapping[str, str], *, labels: bool = True) -> None:
    """containerd ``writeMap``: replace the bucket; omit it when the map is empty; skip empty
    values (a map of only empty values leaves an empty bucket, as in containerd: the unpack
    of a config-only image labels its config with ``gc.ref.snapshot.<sn>=""``). ``labels``:
    held to containerd's label size limit (annotations are not: containerd checks labels only,
    and an image annotation of 5,000 bytes imports with ``ctr``)."""
    bucket.entries.pop(name, None)
    if not mapping:
        return
    sub = bucket.bucket(name, create=True)
    assert sub is not None
    for key, value in mapping.items():
        if not value:
            continue
        if labels and len(key) + len(value) > MAX_LABEL_BYTES:
            raise FormatError(f"label {key[:100]!r} is longer than {MAX_LABEL_BYTES} bytes")
        sub.put(key_bytes(key), key_bytes(value))


def _names(bucket: ReadBucket | None) -> tuple[str, ...]:
    """Keys of a set-like bucket (``children``, a lease's resources), in key order."""
    return () if bucket is None else tuple(name_text(k) for k, _ in bucket.items())


def _write_names(bucket: BucketTree, name: bytes, names: tuple[str, ...]) -> None:
    """A set-like bucket: each name with an empty value (containerd ``Put(key, nil)``)."""
    if names:
        sub = bucket.bucket(name, create=True)
        assert sub is not None
        for entry in names:
            sub.put(key_bytes(entry), b"")


def guarded(what: str, decode: Callable[[], T]) -> T:
    """Run ``decode``, naming the record in its error (which record of thousands is bad)."""
    try:
        return decode()
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None


# -- v1/version --------------------------------------------------------------------------------


def read_schema_version(v1: ReadBucket | None) -> int | None:
    """``v1/version`` (3 for 1.6/1.7, 4 for 2.x); ``None`` when absent."""
    raw = v1.get(K.VERSION) if v1 is not None else None
    return None if raw is None else decode_varint(raw)


def write_schema_version(v1: BucketTree, version: int) -> None:
    v1.put(K.VERSION, encode_varint(version))


# -- images (core/metadata/images.go) ----------------------------------------------------------


def read_target(bucket: ReadBucket) -> Target | None:
    """An image record's ``target``; ``None`` when it has none (an absent size reads as 0)."""
    tb = bucket.bucket(K.TARGET)
    if tb is None:
        return None
    size_raw = tb.get(K.SIZE)
    return Target(
        media_type=text(tb.get(K.MEDIATYPE)) or "",
        digest=text(tb.get(K.DIGEST)) or "",
        size=decode_varint(size_raw) if size_raw is not None else 0,
    )


def target_digest(bucket: ReadBucket) -> str | None:
    """Only the target's digest ("" when it has none, ``None`` without a target): enough to
    match an image with its content, and readable when the rest of a damaged record is not."""
    tb = bucket.bucket(K.TARGET)
    return None if tb is None else text(tb.get(K.DIGEST)) or ""


def _target_tree(target: Target) -> BucketTree:
    tb = BucketTree()
    tb.put(K.DIGEST, key_bytes(target.digest))
    tb.put(K.MEDIATYPE, key_bytes(target.media_type))
    tb.put(K.SIZE, encode_varint(target.size))
    return tb


def write_target(bucket: BucketTree, target: Target) -> None:
    """Replace the record's ``target`` (``Update(img, "target")``)."""
    bucket.entries[K.TARGET] = _target_tree(target)


def same_target(bucket: ReadBucket, target: Target) -> bool:
    """Whether the record already stores exactly these target bytes."""
    current, wanted = bucket.bucket(K.TARGET), _target_tree(target)
    return current is not None and all(current.get(k) == wanted.get(k) for k in (K.DIGEST, K.MEDIATYPE, K.SIZE))


def read_image(bucket: ReadBucket, namespace: str, name: str) -> ImageRecord:
    """containerd ``readImage``; an image without a target is unreadable, as there."""

    def decode() -> ImageRecord:
        target = read_target(bucket)
        if target is None:
            raise FormatError("no target")
        return ImageRecord(
            namespace=namespace,
            name=name,
            target=target,
            labels=read_map(bucket.bucket(K.LABELS)),
            annotations=read_map(bucket.bucket(K.ANNOTATIONS)),
            created_at=_time(bucket, K.CREATED_AT),
            updated_at=_time(bucket, K.UPDATED_AT),
        )

    return guarded(f"image {namespace}/{name}", decode)


def write_image(bucket: BucketTree, image: ImageRecord) -> None:
    """containerd ``writeImage`` into ``images/<name>``."""
    write_timestamps(bucket, image.created_at, image.updated_at)
    write_map(bucket, K.LABELS, image.labels)
    write_map(bucket, K.ANNOTATIONS, image.annotations, labels=False)
    write_target(bucket, image.target)


# -- content (core/metadata/content.go) --------------------------------------------------------


def read_blob(bucket: ReadBucket, namespace: str, digest: str) -> BlobRecord:
    """containerd ``readInfo`` of ``content/blob/<digest>`` (an absent size reads as 0)."""

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

    return guarded(f"content {namespace}/{digest}", decode)


def write_blob(bucket: BucketTree, blob: BlobRecord) -> None:
    """containerd ``writeInfo`` plus the size ``Commit`` stores."""
    write_timestamps(bucket, blob.created_at, blob.updated_at)
    bucket.put(K.SIZE, encode_varint(blob.size))
    write_map(bucket, K.LABELS, blob.labels)


def read_blob_size(bucket: ReadBucket) -> int | None:
    """The recorded size; ``None`` when absent or undecodable (a salvaged record may be both)."""
    raw = bucket.get(K.SIZE)
    try:
        return decode_varint(raw) if raw is not None else None
    except FormatError:
        return None


def write_blob_size(bucket: BucketTree, size: int) -> bool:
    """Store ``size``; whether the stored bytes changed."""
    raw = encode_varint(size)
    if bucket.get(K.SIZE) == raw:
        return False
    bucket.put(K.SIZE, raw)
    return True


def read_ingest(bucket: ReadBucket, namespace: str, ref: str) -> IngestRecord:
    """``content/ingests/<ref>``: the backend ref, the expiry and the expected digest."""
    return guarded(f"ingest {namespace}/{ref}", lambda: IngestRecord(
        namespace=namespace,
        ref=ref,
        backend_ref=text(bucket.get(K.REF)),
        expire_at=_time(bucket, K.EXPIRE_AT),
        expected=text(bucket.get(K.EXPECTED)),
    ))


def write_ingest(bucket: BucketTree, ingest: IngestRecord) -> None:
    """The fields containerd's content writer sets (``ref``, ``expireat``, ``expected``)."""
    if ingest.backend_ref is not None:
        bucket.put(K.REF, key_bytes(ingest.backend_ref))
    _put_time(bucket, K.EXPIRE_AT, ingest.expire_at)
    if ingest.expected is not None:
        bucket.put(K.EXPECTED, key_bytes(ingest.expected))


# -- leases (core/metadata/leases.go) ----------------------------------------------------------


def read_lease(bucket: ReadBucket, namespace: str, lease_id: str) -> LeaseRecord:
    """``leases/<id>``: creation time, labels and the resources it holds."""
    snaps = bucket.bucket(K.SNAPSHOTS)
    return LeaseRecord(
        namespace=namespace,
        id=lease_id,
        created_at=_time(bucket, K.CREATED_AT),
        labels=read_map(bucket.bucket(K.LABELS)),
        content=_names(bucket.bucket(K.CONTENT)),
        snapshots={text(k): _names(b) for k, b in snaps.buckets()} if snaps else {},
        ingests=_names(bucket.bucket(K.INGESTS)),
        images=_names(bucket.bucket(K.IMAGES)),
    )


def write_lease(bucket: BucketTree, lease: LeaseRecord) -> None:
    """``leases/<id>`` as ``Create`` and ``AddResource`` leave it (resource buckets are made
    when the first resource is added, so an empty one is not written)."""
    _put_time(bucket, K.CREATED_AT, lease.created_at)
    write_map(bucket, K.LABELS, lease.labels)
    _write_names(bucket, K.CONTENT, lease.content)
    for snapshotter, keys in lease.snapshots.items():
        sub = bucket.bucket(K.SNAPSHOTS, create=True)
        assert sub is not None
        _write_names(sub, key_bytes(snapshotter), keys)
    _write_names(bucket, K.INGESTS, lease.ingests)
    _write_names(bucket, K.IMAGES, lease.images)


# -- containers (core/metadata/containers.go) ------------------------------------------------


def read_container(bucket: ReadBucket, namespace: str, container_id: str) -> ContainerRecord:
    """containerd ``readContainer``: ``image``, ``snapshotter``, ``snapshotKey`` (each may be
    absent: a container created without an image or rootfs), labels and timestamps."""

    def decode() -> ContainerRecord:
        return ContainerRecord(
            namespace=namespace,
            id=container_id,
            image=text(bucket.get(K.IMAGE)) or "",
            snapshotter=text(bucket.get(K.SNAPSHOTTER)) or "",
            snapshot_key=text(bucket.get(K.SNAPSHOT_KEY)) or "",
            labels=read_map(bucket.bucket(K.LABELS)),
            created_at=_time(bucket, K.CREATED_AT),
            updated_at=_time(bucket, K.UPDATED_AT),
            runtime=text((runtime.get(K.NAME) if (runtime := bucket.bucket(b"runtime")) is not None else None)) or "",
        )

    return guarded(f"container {namespace}/{container_id}", decode)


# -- snapshots, meta.db side (core/metadata/snapshot.go) ---------------------------------------


def read_snapshot(bucket: ReadBucket, namespace: str, snapshotter: str, key: str, *, times: bool = True) -> SnapshotRecord:
    """``snapshots/<snapshotter>/<key>``: the backend name, parent key, children and labels;
    ``times=False``: the timestamps are checked (decoded) but not kept (:func:`kept_time`)."""

    def decode() -> SnapshotRecord:
        return SnapshotRecord(
            namespace=namespace,
            snapshotter=snapshotter,
            key=key,
            name=name_text(bucket.get(K.NAME)) or "",
            parent=name_text(bucket.get(K.PARENT)),
            children=_names(bucket.bucket(K.CHILDREN)),
            labels=read_map(bucket.bucket(K.LABELS)),
            created_at=kept_time(_time(bucket, K.CREATED_AT), times),
            updated_at=kept_time(_time(bucket, K.UPDATED_AT), times),
        )

    return guarded(f"snapshot {namespace}/{snapshotter}/{key}", decode)


def write_snapshot(bucket: BucketTree, snapshot: SnapshotRecord) -> None:
    """``createSnapshot``/``Commit``: ``name``, ``parent`` (when there is one), ``children``
    (each ``key = ""``), labels and timestamps."""
    bucket.put(K.NAME, key_bytes(snapshot.name))
    if snapshot.parent:
        bucket.put(K.PARENT, key_bytes(snapshot.parent))
    _write_names(bucket, K.CHILDREN, snapshot.children)
    write_map(bucket, K.LABELS, snapshot.labels)
    write_timestamps(bucket, snapshot.created_at, snapshot.updated_at)


def backend_name(namespace: str, seq: int, key: str) -> str:
    """The backend snapshot a meta.db record names: containerd ``createKey``,
    ``<namespace>/<seq>/<key>`` with ``seq`` from the snapshotter bucket's sequence."""
    return f"{namespace}/{seq}/{key}"


def backend_name_seq(name: str) -> int | None:
    """The ``<seq>`` of a backend name; ``None`` when the name is not one ``createKey`` makes."""
    parts = name.split("/", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def add_child(bucket: BucketTree, child: str) -> bool:
    """Link ``child`` in the record's ``children`` (``key = ""``); False if it was linked."""
    children = bucket.bucket(K.CHILDREN, create=True)
    assert children is not None
    if children.get(key_bytes(child)) == b"":
        return False
    children.put(key_bytes(child), b"")
    return True


# -- snapshots, snapshotter metadata.db side (core/snapshots/storage/bolt.go) -------------------


def kind_name(raw: bytes | None) -> str:
    """A snapshot record's ``kind`` byte as its name (``unknown`` when absent)."""
    return K.SNAPSHOT_KINDS.get(raw[0], f"kind-{raw[0]}") if raw else "unknown"


def _kind_code(name: str) -> int:
    if name in _KIND_CODES:
        return _KIND_CODES[name]
    if name.startswith("kind-") and name[5:].isdigit():
        return int(name[5:])
    raise FormatError(f"unknown snapshot kind {name!r}")


def read_backend_id(bucket: ReadBucket) -> int | None:
    """The snapshot's id (its ``snapshots/<id>`` directory); ``None`` when absent or empty."""
    raw = bucket.get(K.ID)
    return decode_uvarint_exact(raw) if raw else None


def is_committed(bucket: ReadBucket) -> bool:
    return bucket.get(K.KIND) == bytes([KIND_COMMITTED])


def read_backend_snapshot(bucket: ReadBucket, key: str, *, times: bool = True) -> BackendSnapshot:
    """``v1/snapshots/<key>`` of a snapshotter's metadata.db; a record without an id is
    unreadable (the snapshotter could not find its directory). ``times``: as :func:`read_snapshot`."""

    def decode() -> BackendSnapshot:
        id_raw = bucket.get(K.ID)
        if id_raw is None:
            raise FormatError("no id")
        inodes, size = bucket.get(K.INODES), bucket.get(K.SIZE)
        return BackendSnapshot(
            key=key,
            id=decode_uvarint_exact(id_raw),
            kind=kind_name(bucket.get(K.KIND)),
            parent=name_text(bucket.get(K.PARENT)),
            labels=read_map(bucket.bucket(K.LABELS)),
            created_at=kept_time(_time(bucket, K.CREATED_AT), times),
            updated_at=kept_time(_time(bucket, K.UPDATED_AT), times),
            inodes=decode_varint(inodes) if inodes is not None else None,
            size=decode_varint(size) if size is not None else None,
        )

    return guarded(f"backend snapshot {key}", decode)


def write_backend_snapshot(bucket: BucketTree, snapshot: BackendSnapshot) -> None:
    """``CreateSnapshot`` (id, kind, parent, labels, timestamps) plus the usage ``CommitActive``
    stores (``inodes``, ``size``)."""
    bucket.put(K.ID, encode_uvarint(snapshot.id))
    bucket.put(K.KIND, bytes([_kind_code(snapshot.kind)]))
    if snapshot.parent:
        bucket.put(K.PARENT, key_bytes(snapshot.parent))
    write_map(bucket, K.LABELS, snapshot.labels)
    write_timestamps(bucket, snapshot.created_at, snapshot.updated_at)
    if snapshot.inodes is not None:
        bucket.put(K.INODES, encode_varint(snapshot.inodes))
    if snapshot.size is not None:
        bucket.put(K.SIZE, encode_varint(snapshot.size))


def parents_key(parent_id: int, child_id: int) -> bytes:
    """``v1/parents`` key: ``uvarint(parent) 0x00 uvarint(child)`` (``bolt.go`` ``parentKey``)."""
    return encode_uvarint(parent_id) + b"\x00" + encode_uvarint(child_id)


def split_parents_key(key: bytes) -> tuple[int, int]:
    """(parent id, child id) of a ``v1/parents`` key."""
    pid, n = decode_uvarint(key)
    if n >= len(key) or key[n] != 0:
        raise FormatError(f"parents key {key.hex()} has no separator")
    return pid, decode_uvarint_exact(key[n + 1:])


def read_parent_links(parents: ReadBucket | None) -> Iterator[tuple[int, int, str]]:
    """(parent id, child id, child key) of every ``v1/parents`` entry."""
    if parents is None:
        return
    for key, value in parents.values():
        pid, cid = split_parents_key(key)
        yield pid, cid, name_text(value)


def write_parent_link(parents: BucketTree, parent_id: int, child_id: int, child_key: str) -> None:
    parents.put(parents_key(parent_id, child_id), key_bytes(child_key))


# -- any value by where it sits (``dump``) ------------------------------------------------------

_TIME_KEYS = {K.CREATED_AT, K.UPDATED_AT, K.EXPIRE_AT}
_VARINT_KEYS = {K.SIZE, K.INODES}


def text_or_none(raw: bytes) -> str | None:
    """``raw`` as text when it is printable UTF-8 (a name), else ``None`` (opaque bytes)."""
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return decoded if decoded.isprintable() else None


def _in_parents_index(path: tuple[bytes, ...]) -> bool:
    return path[-1:] == (K.PARENTS,) and path[:1] == (K.V1,)


def decode_value(path: tuple[bytes, ...], key: bytes, value: bytes) -> object:
    """Best-effort decoded form of ``value`` at ``path/key`` in any containerd bolt file, for
    people reading a dump; ``None`` if it is opaque."""
    try:
        if key in _TIME_KEYS:
            return decode_time(value).isoformat()
        if key in _VARINT_KEYS or (key == K.VERSION and path == (K.V1,)):
            return decode_varint(value)
        if _in_parents_index(path):
            return text_or_none(value)
        if key == K.ID and K.SNAPSHOTS in path:
            return decode_uvarint_exact(value)
        if key == K.KIND and len(value) == 1:
            return K.SNAPSHOT_KINDS.get(value[0], value[0])
    except FormatError:
        return None
    return text_or_none(value)


def decode_key(path: tuple[bytes, ...], key: bytes) -> str | None:
    """Readable form of a key; snapshotter ``parents`` keys become ``<parent id>/<child id>``."""
    if _in_parents_index(path):
        try:
            pid, n = decode_uvarint(key)
            if n < len(key) and key[n] == 0:
                return f"{pid}/{decode_uvarint_exact(key[n + 1:])}"
        except FormatError:
            return None
    return text_or_none(key)
