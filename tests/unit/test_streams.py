"""Verifying reads: the inline and the background-hashing paths give the same verdicts."""

from __future__ import annotations

import hashlib
import io
import threading

import pytest

from ctrconv.digest import Digest
from ctrconv.errors import DigestMismatchError, SizeMismatchError
from ctrconv.streams import BACKGROUND_HASH_MIN, CHUNK, VerifyingReader

SIZES = [1000, BACKGROUND_HASH_MIN + 12345]


def _read_all(reader: VerifyingReader) -> bytes:
    out = bytearray()
    while chunk := reader.read(CHUNK):
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("size", SIZES)
def test_good_blob_passes(size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    reader = VerifyingReader(io.BytesIO(data), Digest.from_bytes(data), len(data))
    assert _read_all(reader) == data


@pytest.mark.parametrize("size", SIZES)
def test_flipped_byte_is_a_digest_mismatch(size):
    data = b"a" * size
    bad = bytearray(data)
    bad[size // 2] ^= 1
    reader = VerifyingReader(io.BytesIO(bytes(bad)), Digest.from_bytes(data), size)
    with pytest.raises(DigestMismatchError, match=hashlib.sha256(bytes(bad)).hexdigest()):
        _read_all(reader)


@pytest.mark.parametrize("size", SIZES)
def test_truncated_and_overlong_blobs(size):
    data = b"b" * size
    digest = Digest.from_bytes(data)
    with pytest.raises(SizeMismatchError, match="truncated"):
        _read_all(VerifyingReader(io.BytesIO(data[:-1]), digest, size))
    with pytest.raises(SizeMismatchError, match="longer"):
        _read_all(VerifyingReader(io.BytesIO(data + b"!"), digest, size))


def test_background_hasher_threads_end(monkeypatch):
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def counting_start(self):
        if self.name == "blob-hash":
            started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    before = threading.active_count()
    data = b"c" * (BACKGROUND_HASH_MIN + 1)
    for _ in range(3):
        _read_all(VerifyingReader(io.BytesIO(data), Digest.from_bytes(data), len(data)))
    assert len(started) == 3, "large blobs are hashed on a helper thread"
    assert not any(t.is_alive() for t in started)
    assert threading.active_count() == before


def test_an_abandoned_reader_does_not_leak_its_thread():
    import gc
    import time

    before = threading.active_count()
    data = b"d" * (BACKGROUND_HASH_MIN + 1)
    reader = VerifyingReader(io.BytesIO(data), Digest.from_bytes(data), len(data))
    reader.read(CHUNK)
    del reader
    gc.collect()
    for _ in range(50):
        if threading.active_count() == before:
            break
        time.sleep(0.02)
    assert threading.active_count() == before


# -- zero-copy: copy_file_range + hashing the same region through mmap -------------------------

ZERO_COPY_SIZES = [1000, BACKGROUND_HASH_MIN + 12345, 3 * (8 << 20) + 7]


def _blob_file(tmp_path, size: int, name: str = "blob"):
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("size", ZERO_COPY_SIZES)
def test_zero_copy_copies_and_verifies(tmp_path, size):
    path, data = _blob_file(tmp_path, size)
    steps = []
    with open(path, "rb") as src, open(tmp_path / "out", "wb") as out:
        out.write(b"HEAD")
        out.flush()
        reader = VerifyingReader(src, Digest.from_bytes(data), size)
        assert reader.copy_to_fd(out.fileno(), steps.append) is True
        assert reader.read(CHUNK) == b""  # done, verdict given
    assert (tmp_path / "out").read_bytes() == b"HEAD" + data
    assert sum(steps) == size


@pytest.mark.parametrize("size", ZERO_COPY_SIZES)
def test_zero_copy_refuses_a_flipped_byte(tmp_path, size):
    path, data = _blob_file(tmp_path, size)
    digest = Digest.from_bytes(data)
    bad = bytearray(data)
    bad[size // 2] ^= 1
    path.write_bytes(bytes(bad))
    with open(path, "rb") as src, open(tmp_path / "out", "wb") as out:
        with pytest.raises(DigestMismatchError):
            VerifyingReader(src, digest, size).copy_to_fd(out.fileno())


@pytest.mark.parametrize("extra", [-1, 1])
def test_zero_copy_leaves_lying_sizes_to_the_read_path(tmp_path, extra):
    """A file shorter or longer than the descriptor: nothing copied, reading reports it."""
    path, data = _blob_file(tmp_path, BACKGROUND_HASH_MIN + 10)
    claimed = len(data) - extra
    with open(path, "rb") as src, open(tmp_path / "out", "wb") as out:
        reader = VerifyingReader(src, Digest.from_bytes(data[:claimed]), claimed)
        assert reader.copy_to_fd(out.fileno()) is False
        assert out.tell() == 0
        with pytest.raises(SizeMismatchError):
            _read_all(reader)


def test_zero_copy_into_a_pipe_falls_back_and_reading_still_works(tmp_path):
    """copy_file_range cannot write a pipe; the refusal must leave the reader (and its hash
    thread) usable for the normal path."""
    import os

    path, data = _blob_file(tmp_path, BACKGROUND_HASH_MIN + 99)
    read_fd, write_fd = os.pipe()
    try:
        with open(path, "rb") as src:
            reader = VerifyingReader(src, Digest.from_bytes(data), len(data))
            assert reader.copy_to_fd(write_fd) is False
            assert _read_all(reader) == data
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_zero_copy_only_from_the_start(tmp_path):
    path, data = _blob_file(tmp_path, 5000)
    with open(path, "rb") as src, open(tmp_path / "out", "wb") as out:
        reader = VerifyingReader(src, Digest.from_bytes(data), len(data))
        head = reader.read(100)
        assert reader.copy_to_fd(out.fileno()) is False
        assert head + _read_all(reader) == data


def test_zero_copy_needs_a_regular_file(tmp_path):
    data = b"x" * 5000
    with open(tmp_path / "out", "wb") as out:
        reader = VerifyingReader(io.BytesIO(data), Digest.from_bytes(data), len(data))
        assert reader.copy_to_fd(out.fileno()) is False
        assert _read_all(reader) == data


@pytest.mark.parametrize("size", [1000, BACKGROUND_HASH_MIN + 5])
def test_zero_copy_from_inside_a_larger_file(tmp_path, size):
    """A blob that starts at an unaligned offset of its file (the rest of the file is it)."""
    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    path = tmp_path / "container"
    path.write_bytes(b"P" * 1234 + data)
    with open(path, "rb") as src, open(tmp_path / "out", "wb") as out:
        src.seek(1234)
        reader = VerifyingReader(src, Digest.from_bytes(data), size)
        assert reader.copy_to_fd(out.fileno()) is True
    assert (tmp_path / "out").read_bytes() == data


#: the child's own peak RSS: ``VmHWM`` belongs to the exec'd process, while ``ru_maxrss`` starts
#: from the parent's high-water mark when the child is spawned with vfork (as subprocess does)
_PEAK_RSS = (
    "def peak_kib():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1])\n"
)


def test_zero_copy_keeps_memory_flat(tmp_path):
    """Windows are unmapped once hashed: copying a 160 MiB blob raises the peak RSS of a
    fresh process by far less than the blob (measured in a child, so nothing else counts)."""
    import subprocess
    import sys

    path = tmp_path / "blob"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(160):
            chunk = bytes([i]) * (1 << 20)
            h.update(chunk)
            f.write(chunk)
    script = (
        "import resource, sys\n"
        "from ctrconv.digest import Digest\n"
        "from ctrconv.streams import VerifyingReader\n"
        + _PEAK_RSS +
        "base = peak_kib()\n"
        "if sys.argv[1] == 'copy':\n"
        "    with open(sys.argv[2], 'rb') as src, open(sys.argv[3], 'wb') as out:\n"
        "        assert VerifyingReader(src, Digest.parse(sys.argv[4]), 160 << 20).copy_to_fd(out.fileno())\n"
        "print(peak_kib() - base)\n"
    )
    args = [str(path), str(tmp_path / "out"), "sha256:" + h.hexdigest()]
    grown_kib = int(subprocess.run([sys.executable, "-c", script, "copy", *args],
                                   capture_output=True, text=True, check=True).stdout)
    assert grown_kib < 64 * 1024, f"peak RSS grew by {grown_kib / 1024:.0f} MiB"


# -- deferred verdicts: the next blob's copy starts while this one's last regions are hashed --


def _copy_deferred(tmp_path, blobs: list[tuple[bytes, bytes]], verdicts) -> bytes:
    """Copy each (content, claimed content) blob into one file with ``verdicts``; the bytes."""
    out_path = tmp_path / "out"
    with open(out_path, "wb") as out:
        for i, (content, claimed) in enumerate(blobs):
            path = tmp_path / f"blob{i}"
            path.write_bytes(content)
            with open(path, "rb") as src:
                reader = VerifyingReader(src, Digest.from_bytes(claimed), len(claimed))
                assert reader.copy_to_fd(out.fileno(), verdicts=verdicts) is True
    return out_path.read_bytes()


def _blob_hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "blob-hash" and t.is_alive()]


def test_deferred_verdicts_of_good_blobs_settle(tmp_path):
    from ctrconv.streams import PendingVerdicts

    blobs = [(bytes([i]) * (BACKGROUND_HASH_MIN + 1000 * i),) * 2 for i in range(3)]
    verdicts = PendingVerdicts(limit=2)
    assert _copy_deferred(tmp_path, blobs, verdicts) == b"".join(b for b, _ in blobs)
    verdicts.settle()
    assert not _blob_hash_threads()


def test_a_deferred_mismatch_is_raised_when_settled(tmp_path):
    """The copy returns before the verdict; :meth:`settle` (a sink's commit) raises it, naming
    the blob, and ends the other hashes."""
    from ctrconv.streams import PendingVerdicts

    good = b"g" * (BACKGROUND_HASH_MIN + 7)
    bad = bytearray(good)
    bad[-1] ^= 1
    verdicts = PendingVerdicts(limit=2)
    _copy_deferred(tmp_path, [(bytes(bad), good), (b"h" * len(good),) * 2], verdicts)
    with pytest.raises(DigestMismatchError, match=Digest.from_bytes(good).hex):
        verdicts.settle()
    assert not _blob_hash_threads()


def test_past_the_limit_the_oldest_verdict_comes_first(tmp_path):
    """With one blob allowed pending, the second copy settles the first: a bad first blob
    fails there, before a third blob is copied."""
    from ctrconv.streams import PendingVerdicts

    good = b"k" * (BACKGROUND_HASH_MIN + 3)
    bad = bytearray(good)
    bad[0] ^= 1
    verdicts = PendingVerdicts(limit=1)
    with pytest.raises(DigestMismatchError):
        _copy_deferred(tmp_path, [(bytes(bad), good), (good, good), (good, good)], verdicts)
    assert (tmp_path / "blob1").exists() and not (tmp_path / "blob2").exists()
    assert not _blob_hash_threads()


def test_cancelled_verdicts_end_their_threads(tmp_path):
    from ctrconv.streams import PendingVerdicts

    verdicts = PendingVerdicts(limit=3)
    _copy_deferred(tmp_path, [(b"m" * (3 * (8 << 20) + 1),) * 2] * 2, verdicts)
    verdicts.cancel()
    assert not _blob_hash_threads()
    verdicts.settle()  # nothing left to settle


def test_small_blobs_are_verified_at_once_even_with_verdicts(tmp_path):
    """Below the helper-thread size the hash is done inline: nothing is deferred."""
    from ctrconv.streams import PendingVerdicts

    data = b"s" * 5000
    bad = b"S" + data[1:]
    with pytest.raises(DigestMismatchError):
        _copy_deferred(tmp_path, [(bad, data)], PendingVerdicts())


def test_deferred_verdicts_keep_memory_flat(tmp_path):
    """Copies running ahead of their hashes queue windows that are mapped but not yet read:
    four 40 MiB blobs with three verdicts pending raise the peak RSS of a fresh process by
    far less than the 160 MiB they hold (each hash thread touches one window at a time)."""
    import subprocess
    import sys

    digests = []
    for i in range(4):
        data = bytes([i + 1]) * (40 << 20)
        (tmp_path / f"blob{i}").write_bytes(data)
        digests.append(str(Digest.from_bytes(data)))
    script = (
        "import resource, sys\n"
        "from ctrconv.digest import Digest\n"
        "from ctrconv.streams import PendingVerdicts, VerifyingReader\n"
        + _PEAK_RSS +
        "base = peak_kib()\n"
        "verdicts = PendingVerdicts(limit=3)\n"
        "with open(sys.argv[1] + '/out', 'wb') as out:\n"
        "    for i, digest in enumerate(sys.argv[2:]):\n"
        "        with open(f'{sys.argv[1]}/blob{i}', 'rb') as src:\n"
        "            assert VerifyingReader(src, Digest.parse(digest), 40 << 20).copy_to_fd(out.fileno(), verdicts=verdicts)\n"
        "    verdicts.settle()\n"
        "print(peak_kib() - base)\n"
    )
    grown_kib = int(subprocess.run([sys.executable, "-c", script, str(tmp_path), *digests],
                                   capture_output=True, text=True, check=True).stdout)
    assert (tmp_path / "out").stat().st_size == 160 << 20
    assert grown_kib < 64 * 1024, f"peak RSS grew by {grown_kib / 1024:.0f} MiB"


def test_an_unaligned_blob_keeps_the_short_queue(tmp_path):
    """A blob inside another file at an unaligned offset is hashed from copies of its regions,
    not from windows: with a verdict deferred it must not queue more than the usual few copies
    (peak RSS of a fresh process stays far below the 160 MiB blob)."""
    import subprocess
    import sys

    data = bytes(range(256)) * (160 << 12)
    (tmp_path / "container").write_bytes(b"P" * 1234 + data)
    # the helper starts hashing only once its queue is full or the copy is done, so the queue
    # really fills to whatever depth it has (a slow hash, without any clock in the verdict)
    script = (
        "import resource, sys, threading\n"
        "from ctrconv import streams\n"
        "from ctrconv.digest import Digest\n"
        "done = threading.Event()\n"
        "real = streams._hash_chunks\n"
        "def lagging(chunks, hasher, cancelled):\n"
        "    while not chunks.full() and not done.is_set():\n"
        "        done.wait(0.001)\n"
        "    real(chunks, hasher, cancelled)\n"
        "streams._hash_chunks = lagging\n"
        + _PEAK_RSS +
        "base = peak_kib()\n"
        "verdicts = streams.PendingVerdicts(limit=1)\n"
        "with open(sys.argv[1] + '/container', 'rb') as src, open(sys.argv[1] + '/out', 'wb') as out:\n"
        "    src.seek(1234)\n"
        "    reader = streams.VerifyingReader(src, Digest.parse(sys.argv[2]), 160 << 20)\n"
        "    assert reader.copy_to_fd(out.fileno(), verdicts=verdicts)\n"
        "    done.set()\n"
        "    verdicts.settle()\n"
        "print(peak_kib() - base)\n"
    )
    grown_kib = int(subprocess.run([sys.executable, "-c", script, str(tmp_path), str(Digest.from_bytes(data))],
                                   capture_output=True, text=True, check=True).stdout)
    assert (tmp_path / "out").read_bytes() == data
    assert grown_kib < 96 * 1024, f"peak RSS grew by {grown_kib / 1024:.0f} MiB"


def test_a_hasher_an_interrupt_left_half_made_is_collected_quietly():
    """As for EarlyWriteback: ``__del__`` of an object whose ``__init__`` was interrupted."""
    from ctrconv.streams import _BackgroundHasher

    _BackgroundHasher.__new__(_BackgroundHasher).__del__()
