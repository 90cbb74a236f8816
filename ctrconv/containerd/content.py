"""The content store: ``io.containerd.content.v1.content/blobs/<alg>/<hex>``.

Paths are only ever built from a :class:`~ctrconv.digest.Digest`, which validates the
algorithm and exact hex length, so a hostile digest cannot become a path.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, BinaryIO, Iterator, Mapping

from ctrconv.digest import ALGORITHMS, Digest, is_canonical
from ctrconv.errors import InvalidDigestError, MissingContentError, UnreadableContentError
from ctrconv.streams import VerifyingReader

if TYPE_CHECKING:
    from ctrconv.containerd.metadata import MetadataDB


#: algorithm -> hashlib constructor (``hashlib.new`` looks the name up on every call)
_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


class ContentStore:
    """Read access to the blobs of one containerd root."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        #: the path as text, for the paths of blobs made by the ten thousand (formatting a
        #: ``Path`` into an f-string costs six times formatting its text)
        self._text = os.fspath(self._path)

    @property
    def path(self) -> Path:
        return self._path

    def blob_path(self, digest: Digest | str) -> Path:
        d = Digest.parse(digest)
        return self.path / "blobs" / d.algorithm / d.hex

    def blob_file(self, digest: Digest | str) -> str:
        """:meth:`blob_path` as a string: presence checks of many blobs (``ls``, ``verify``)
        need no ``Path`` object each, nor a :class:`Digest` for a canonical digest text.
        Raises :class:`InvalidDigestError` for what :meth:`Digest.parse` refuses."""
        if type(digest) is str and is_canonical(digest):
            algorithm, _, hex_ = digest.partition(":")
            return f"{self._text}/blobs/{algorithm}/{hex_}"
        d = Digest.parse(digest)
        return f"{self._text}/blobs/{d.algorithm}/{d.hex}"

    def exists(self, digest: Digest | str) -> bool:
        try:
            return os.path.isfile(self.blob_file(digest))
        except InvalidDigestError:
            return False

    def size(self, digest: Digest | str) -> int | None:
        """The blob file's size; None when there is none (a directory in its place is none)."""
        try:
            st = os.stat(self.blob_file(digest))
        except (OSError, InvalidDigestError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open(self, digest: Digest | str) -> BinaryIO:
        """Open a blob unverified (callers wrap it in :meth:`open_verified` when it matters)."""
        path = self.blob_path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise MissingContentError(f"blob {digest} not found in the content store") from None
        except OSError as exc:
            raise UnreadableContentError(f"blob {digest} cannot be read: {exc.strerror or exc}") from None

    def open_verified(self, digest: Digest | str, size: int) -> VerifyingReader:
        d = Digest.parse(digest)
        return VerifyingReader(self.open(d), d, size, what=f"blob {d}")

    def read_small(self, digest: Digest | str, size: int, limit: int = 16 << 20) -> bytes:
        """Read and verify a small JSON blob (manifest, index, config)."""
        if size > limit:
            raise MissingContentError(f"blob {digest} claims {size} bytes; too large for JSON")
        d = Digest.parse(digest)
        data = self.read_exact(d, size)
        if data is not None:
            return data
        # absent, unreadable, of another size or another digest: the verifying reader says which
        with self.open(d) as f:
            reader = VerifyingReader(f, d, size, what=f"blob {d}")
            chunks = []
            while True:
                chunk = reader.read(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    def read_exact(self, digest: Digest | str, size: int) -> bytes | None:
        """The blob's bytes when its file holds exactly ``size`` bytes that hash to ``digest``,
        else None (the caller then reads it through :class:`VerifyingReader`, which words the
        problem; a digest text that does not parse is None too). One ``open``/``read``/``close``
        and one hash: ``ls`` of 10,000 images reads 20,000 documents, and the reader's file
        object, ``Path`` and wrapper cost more than that."""
        if type(digest) is str:
            if not is_canonical(digest):
                return None
            algorithm, _, hex_ = digest.partition(":")
        else:
            algorithm, hex_ = digest.algorithm, digest.hex  # type: ignore[union-attr]
        try:
            fd = os.open(f"{self._text}/blobs/{algorithm}/{hex_}", _READ_FLAGS)
        except OSError:
            return None
        return _read_whole(fd, size, algorithm, hex_)

    def walk(self) -> Iterator[tuple[Digest, Path]]:
        """Every well-named blob file on disk (invalid names are skipped, like containerd). A
        symlink to a regular file is a blob, as containerd's ``os.Stat``/``os.Open`` of the path
        make it one (a node restored from a backup may hold them): verify hashed none of them,
        and ``rebuild -o`` dropped every image using one while containerd ran them."""
        for alg, directory, names in self._blob_names():
            for name in names:
                try:
                    digest = Digest(alg, name)
                except InvalidDigestError:
                    continue
                yield digest, directory / name

    def blob_digests(self) -> list[str]:
        """The digests of :meth:`walk`'s blobs, in its order, as text: no ``Digest`` and
        ``Path`` made for each of 32,000 files only to be looked up in a set."""
        return list(self.iter_blob_digests())

    def iter_blob_digests(self) -> Iterator[str]:
        """:meth:`blob_digests` one at a time (a pass that keeps none of them)."""
        for alg, _directory, names in self._blob_names():
            for name in names:
                digest = f"{alg}:{name}"
                if is_canonical(digest):
                    yield digest

    def _blob_names(self) -> Iterator[tuple[str, Path, list[str]]]:
        """Each algorithm's blob directory that exists, with the sorted names of its regular
        files (or symlinks to one). Names only: the ``os.DirEntry`` objects, each holding its
        whole path, were ~70 MiB of ``verify``'s peak at 167,700 blobs."""
        blobs = self.path / "blobs"
        for alg in sorted(ALGORITHMS):
            d = blobs / alg
            if not d.is_dir():
                continue
            with os.scandir(d) as entries:
                names = sorted(e.name for e in entries if _is_file(e))
            yield alg, d, names


_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC


def _read_whole(fd: int, size: int, algorithm: str, hex_: str) -> bytes | None:
    """:meth:`ContentStore.read_exact` once its blob's file is open as ``fd`` (closed here)."""
    try:
        data = os.read(fd, size + 1)  # one byte more: a longer file is not this blob
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) != size or _HASHES[algorithm](data).hexdigest() != hex_:
        return None
    return data


class NamespaceContent:
    """The content one namespace can see: containerd's rule, in one place.

    A blob is present in a namespace when that namespace holds its record
    (``v1/<ns>/content/blob/<digest>``) *and* the blob file is on disk. A file another
    namespace brought is absent here, exactly as ``ctr -n <ns>`` and the CRI see it; ``ls``,
    ``export``, ``verify``, ``rebuild`` and import's "already present" all ask this.
    """

    def __init__(self, store: ContentStore, namespace: str, recorded: frozenset[str] | set[str]) -> None:
        self.store = store
        self.namespace = namespace
        self.recorded: AbstractSet[str] = frozenset(recorded)
        self.path = store.path

    @classmethod
    def of(cls, meta: "MetadataDB", store: ContentStore, namespace: str) -> "NamespaceContent":
        """The view of ``namespace`` in ``meta`` over ``store``."""
        return cls(store, namespace, meta.content_digests(namespace))

    def has_record(self, digest: Digest | str) -> bool:
        return str(digest) in self.recorded

    def on_disk_elsewhere(self, digest: Digest | str) -> bool:
        """The file exists but this namespace has no record of it (another namespace's, or an orphan)."""
        return not self.has_record(digest) and self.store.exists(digest)

    def blob_path(self, digest: Digest | str) -> Path:
        return self.store.blob_path(digest)

    def exists(self, digest: Digest | str) -> bool:
        return self.has_record(digest) and self.store.exists(digest)

    def size(self, digest: Digest | str) -> int | None:
        return self.store.size(digest) if self.has_record(digest) else None

    def _require(self, digest: Digest | str) -> None:
        if not self.has_record(digest):
            raise MissingContentError(f"blob {digest} not found in namespace {self.namespace}")

    def open(self, digest: Digest | str) -> BinaryIO:
        self._require(digest)
        return self.store.open(digest)

    def open_verified(self, digest: Digest | str, size: int) -> VerifyingReader:
        self._require(digest)
        return self.store.open_verified(digest, size)

    def read_small(self, digest: Digest | str, size: int, limit: int = 16 << 20) -> bytes:
        self._require(digest)
        return self.store.read_small(digest, size, limit)


class ListingContent(NamespaceContent):
    """A :class:`NamespaceContent` for one read-only pass over many images (``ls``): each blob's
    presence is looked up on disk once, however many images share it (its record set is
    already read once), instead of once per image and walk. A namespace of at least
    :attr:`LIST_FROM` records has its blob directories listed once (``os.scandir``: the names
    of regular files, a symlink followed as ``isfile`` follows it) instead of one ``stat`` per
    blob: 32,000 blobs are listed in a few milliseconds and stat-ed in a third of a second."""

    #: record count from which listing the directories is cheaper than a stat per record
    LIST_FROM = 512

    def __init__(self, store: ContentStore, namespace: str, recorded: frozenset[str] | set[str]) -> None:
        super().__init__(store, namespace, recorded)
        self._present: dict[str, bool] = {}
        self._files: dict[str, frozenset[str] | None] = {}
        #: each algorithm's blob directory, open while the listing reads documents (None: not openable)
        self._directories: dict[str, int | None] = {}

    def __enter__(self) -> "ListingContent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the blob directories :meth:`read_exact` opened (it opens them again if asked)."""
        directories, self._directories = self._directories, {}
        for fd in directories.values():
            if fd is not None:
                os.close(fd)

    def read_exact(self, digest: Digest | str, size: int) -> bytes | None:
        """:meth:`ContentStore.read_exact` (no record needed: callers ask after :meth:`exists`),
        each file opened relative to its algorithm's blob directory, held open: one name looked
        up instead of the nine of its path (~1.8 us of ~7 per document; a 10,000-image listing
        reads 20,000). The directory is opened once, on the first document read."""
        if type(digest) is not str or not is_canonical(digest):  # (the name is a canonical hex)
            return self.store.read_exact(digest, size)
        algorithm, _, hex_ = digest.partition(":")
        try:
            directory = self._directories[algorithm]
        except KeyError:
            directory = self._directories[algorithm] = _open_directory(f"{self.path}/blobs/{algorithm}")
        if directory is None:
            return self.store.read_exact(digest, size)
        try:
            fd = os.open(hex_, _READ_FLAGS, dir_fd=directory)
        except OSError:
            return None
        return _read_whole(fd, size, algorithm, hex_)

    def exists(self, digest: Digest | str) -> bool:
        """Answered by the listing when there is one, with nothing remembered per digest (a
        cache keyed by the digest strings of every manifest kept each of them: 33 MiB of a
        167,700-blob ``ls``); by a ``stat``, remembered, otherwise."""
        key = str(digest)
        if key not in self.recorded:
            return False
        if len(self.recorded) >= self.LIST_FROM:
            if not is_canonical(key):  # (what Digest.parse refuses)
                return False
            algorithm, _, hex_ = key.partition(":")
            if algorithm not in self._files:
                self._files[algorithm] = _regular_files(f"{self.path}/blobs/{algorithm}")
            files = self._files[algorithm]
            if files is not None:
                return hex_ in files
        present = self._present.get(key)
        if present is None:
            present = self._present[key] = self.store.exists(key)
        return present

    def list_now(self, listing: bytes | None = None) -> None:
        """List the blob directories now, if this namespace is large enough to list them at all
        (before a fork: both processes then share one listing). ``listing``: the directories
        listed already, as :func:`blob_listing` gives them (by another process)."""
        if len(self.recorded) >= self.LIST_FROM:
            listed = read_blob_listing(listing) if listing is not None else {}
            for algorithm in sorted(ALGORITHMS):
                if algorithm not in self._files:
                    self._files[algorithm] = (listed[algorithm] if algorithm in listed
                                              else _regular_files(f"{self.path}/blobs/{algorithm}"))


class StatedContent(ListingContent):
    """A :class:`ListingContent` whose recorded blobs were all stat-ed already (``verify`` checks
    every record's size against its file): presence and size are those answers. Nothing is
    listed and no answer is remembered per digest string: at 167,700 blobs the listing and a
    cache keyed by the digests of every manifest held ~60 MiB."""

    def __init__(self, store: ContentStore, namespace: str, sizes: Mapping[str, int | None]) -> None:
        """``sizes``: each recorded digest -> :meth:`ContentStore.size` of its blob."""
        super().__init__(store, namespace, ())
        self.recorded = sizes.keys()
        self._sizes = sizes

    def exists(self, digest: Digest | str) -> bool:
        return self._sizes.get(str(digest)) is not None

    def size(self, digest: Digest | str) -> int | None:
        return self._sizes.get(str(digest))

    def list_now(self, listing: bytes | None = None) -> None:
        """Nothing to list: every recorded blob's answer is known."""


def _open_directory(directory: str) -> int | None:
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _regular_files(directory: str) -> frozenset[str] | None:
    """Names of the regular files (or symlinks to them) in ``directory``; None when it cannot
    be listed (then each blob is stat-ed, as without a listing)."""
    names = _regular_file_names(directory)
    return None if names is None else frozenset(names)


def _regular_file_names(directory: str) -> list[str] | None:
    try:
        with os.scandir(directory) as entries:
            return [e.name for e in entries if _is_file(e)]
    except OSError:
        return None


#: per algorithm in :func:`blob_listing`: whether its directory was listed, and its length
_LISTED = struct.Struct("<?Q")
#: how ``os.fsencode``/``os.fsdecode`` turn names into bytes and back (one call for them all)
_FS_CODEC = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def blob_listing(store: ContentStore) -> bytes:
    """What :meth:`ListingContent.list_now` lists (the regular files of each algorithm's blob
    directory) as bytes another process can hand over: for each algorithm in sorted order,
    whether its directory could be listed and the names, each ended by NUL (no file name holds
    one), in the file system's encoding."""
    parts = []
    for algorithm in sorted(ALGORITHMS):
        names = _regular_file_names(f"{store.path}/blobs/{algorithm}")
        text = ("\0".join(names) + "\0").encode(*_FS_CODEC) if names else b""
        parts += [_LISTED.pack(names is not None, len(text)), text]
    return b"".join(parts)


def read_blob_listing(data: bytes) -> dict[str, frozenset[str] | None]:
    """The listing :func:`blob_listing` encoded, by algorithm (None: not listable)."""
    listed: dict[str, frozenset[str] | None] = {}
    at = 0
    for algorithm in sorted(ALGORITHMS):
        found, length = _LISTED.unpack_from(data, at)
        at += _LISTED.size
        text = data[at:at + length].decode(*_FS_CODEC)
        at += length
        listed[algorithm] = frozenset(text.split("\0")[:-1]) if found else None
    return listed


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False
