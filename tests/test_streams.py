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


def test_background_hasher_threads_end():
    before = threading.active_count()
    data = b"c" * (BACKGROUND_HASH_MIN + 1)
    for _ in range(3):
        _read_all(VerifyingReader(io.BytesIO(data), Digest.from_bytes(data), len(data)))
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
