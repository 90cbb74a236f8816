"""BlobFetcher: blobs written into the content store side by side, read while they arrive.

A fake source hands out streams the test controls (``Gate``): so the test sees a reader get
bytes of a blob that is not complete yet, two downloads under way at once, a blob that fails
its digest raising in the reader with nothing committed. No timing is asserted: every wait
has a generous limit and fails the test when it runs out.
"""

from __future__ import annotations

import hashlib
import io
import threading

import pytest

from ctrconv.digest import Digest
from ctrconv.errors import ContentError
from ctrconv.sinks.containerd_root.content_writer import ContentWriter
from ctrconv.sinks.containerd_root.fetch import BlobFetcher

LIMIT = 60.0


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Gate(io.RawIOBase):
    """A blob stream that gives its first ``half`` bytes at once and the rest once ``opened`` is set."""

    def __init__(self, data: bytes, half: int, release: threading.Event) -> None:
        super().__init__()
        self._data, self._half, self._release, self._pos = data, half, release, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._half and not self._release.wait(LIMIT):
            raise TimeoutError("the test never released the rest of the blob")
        end = self._half if self._pos < self._half else len(self._data)
        chunk = self._data[self._pos:min(end, self._pos + (n if n and n > 0 else 1 << 20))]
        self._pos += len(chunk)
        return chunk

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class FakeSource:
    """Blobs by digest; ``open`` says which were opened (and when two were open at once)."""

    def __init__(self, blobs: dict[str, bytes], half: dict[str, int] | None = None) -> None:
        self.blobs = blobs
        self.half = half or {}
        self.release = threading.Event()
        self.opened: list[str] = []
        self.both_open = threading.Barrier(2, timeout=LIMIT)

    def exists(self, digest: str) -> bool:
        return str(digest) in self.blobs

    def open(self, digest: str):  # type: ignore[no-untyped-def]
        key = str(digest)
        self.opened.append(key)
        data = self.blobs[key]
        return Gate(data, self.half.get(key, len(data)), self.release)


def store(tmp_path) -> ContentWriter:  # type: ignore[no-untyped-def]
    return ContentWriter(tmp_path / "content")


def test_a_reader_gets_bytes_before_the_blob_is_complete(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    d = digest_of(data)
    source = FakeSource({d: data}, half={d: 300_000})
    content = store(tmp_path)
    seen: list[int] = []
    fetcher = BlobFetcher(content, source, [(d, len(data))], frozenset(), jobs=2, advance=seen.append)
    reader = fetcher.open_blob(d)
    got = bytearray()
    while len(got) < 300_000:  # the first half arrives while the rest is held back
        got += reader.read(1 << 16)
    assert not content.blob_path(d).exists()  # not committed: the blob is not complete
    source.release.set()
    while chunk := reader.read(1 << 20):
        got += chunk
    reader.close()
    assert bytes(got) == data
    assert fetcher.finish() == (1, 0, len(data))
    assert content.blob_path(d).read_bytes() == data and sum(seen) == len(data)
    content.close()


def test_a_blob_that_fails_its_digest_raises_in_the_reader_and_is_not_committed(tmp_path):
    data = b"layer bytes" * 50_000
    d = digest_of(data + b"!")  # the source serves other bytes than the digest names
    source = FakeSource({d: data})
    source.release.set()
    content = store(tmp_path)
    fetcher = BlobFetcher(content, source, [(d, len(data))], frozenset(), jobs=2)
    reader = fetcher.open_blob(d)
    with pytest.raises(ContentError):
        while reader.read(1 << 20):
            pass
    reader.close()
    with pytest.raises(ContentError):
        fetcher.finish()
    with pytest.raises(ContentError):
        fetcher.blob_path(d)
    fetcher.stop()
    assert not content.blob_path(d).exists()
    content.close()


def test_blobs_download_side_by_side_and_present_ones_are_not_fetched(tmp_path):
    a, b, c = b"a" * 200_000, b"b" * 300_000, b"present" * 10
    da, db, dc = digest_of(a), digest_of(b), digest_of(c)
    content = store(tmp_path)
    path = content.blob_path(dc)
    path.parent.mkdir(parents=True)
    path.write_bytes(c)
    source = FakeSource({da: a, db: b, dc: c}, half={da: 1000, db: 1000})
    fetcher = BlobFetcher(content, source, [(da, len(a)), (db, len(b)), (dc, len(c))], frozenset({dc}), jobs=2)
    # both big blobs are read up to their held half at the same time: two readers get bytes
    # while neither blob is complete (with one download at a time the second would never start)
    ra, rb = fetcher.open_blob(da), fetcher.open_blob(db)
    assert ra.read(1000) == a[:1000] and rb.read(1000) == b[:1000]
    assert not content.blob_path(da).exists() and not content.blob_path(db).exists()
    source.release.set()
    assert fetcher.blob_path(da).read_bytes() == a and fetcher.blob_path(db).read_bytes() == b
    with fetcher.open_blob(dc) as present:  # already there: read from the store, never fetched
        assert present.read(1 << 20) == c and present.read(1 << 20) == b""
    ra.close()
    rb.close()
    assert fetcher.finish() == (2, 1, len(a) + len(b))
    assert dc not in source.opened
    assert Digest.parse(dc).hex == path.name
    content.close()


def test_arriving_names_the_temp_file_while_it_grows_and_check_raises_a_failed_fetch(tmp_path):
    data = bytes(range(256)) * 4096
    good, bad = digest_of(data), digest_of(b"other")
    source = FakeSource({good: data, bad: b"not other"}, half={good: 300_000})
    content = store(tmp_path)
    fetcher = BlobFetcher(content, source, [(good, len(data)), (bad, 9)], frozenset(), jobs=2)
    temp, final, size = fetcher.arriving(good)  # the first bytes are there, the rest held back
    assert (temp, final, size) == (content.temp_path(good), content.blob_path(good), len(data))
    assert temp.stat().st_size >= 1 and not final.exists()
    fetcher.check()  # nothing failed yet
    source.release.set()
    with pytest.raises(ContentError):
        fetcher.blob_path(bad)  # waits for the bad blob's end: its digest fails
    with pytest.raises(ContentError):
        fetcher.check()
    with pytest.raises(ContentError):
        fetcher.arriving(bad)
    assert fetcher.blob_path(good) == final and final.read_bytes() == data
    assert fetcher.arriving(good)[0] == final  # done: the committed file
    fetcher.stop()
    content.close()
