"""``blob_sizes``: ContentStore.size of every digest, looked up on threads a chunk at a time,
with only the named documents read ahead."""

from __future__ import annotations

import hashlib
import os

import pytest

from ctrconv.containerd.content import ContentStore
from ctrconv.verify import prefetch
from ctrconv.verify.prefetch import blob_sizes


def _store(tmp_path, count):
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    digests = []
    for i in range(count):
        data = b"x" * i
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        digests.append(f"sha256:{hexd}")
    return ContentStore(tmp_path), digests


@pytest.mark.parametrize("waiting", [0.0, 1e9])
def test_sizes_equal_the_stores_answers_across_chunks(tmp_path, monkeypatch, waiting):
    """The same answers whether the chunks are looked up here (a warm cache) or the first slow
    chunk hands the rest to the threads (``WAITING`` 0: every chunk is slow)."""
    monkeypatch.setattr(prefetch, "CHUNK", 7)  # many chunks
    monkeypatch.setattr(prefetch, "WAITING", waiting)
    pooled = []
    real_pool = prefetch.ThreadPoolExecutor

    def recording_pool(*args, **kwargs):
        pooled.append(True)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(prefetch, "ThreadPoolExecutor", recording_pool)
    store, digests = _store(tmp_path, 40)
    os.unlink(store.blob_path(digests[3]))  # recorded, no file
    os.mkdir(store.path / "blobs" / "sha256" / ("ab" * 32))  # a directory where a blob belongs
    asked = digests + ["sha256:" + "ab" * 32, "sha256:../../etc", "md5:abc", "sha256:" + "cd" * 32]
    read_ahead = []
    monkeypatch.setattr(prefetch, "_read_ahead", lambda content, d: read_ahead.append(d))
    sizes = blob_sizes(store, asked, documents={digests[5], digests[3], digests[6]})
    assert sizes == {d: store.size(d) for d in asked}
    assert sizes[digests[3]] is None and sizes[digests[9]] == 9 and sizes["sha256:../../etc"] is None
    assert sorted(read_ahead) == sorted([digests[5], digests[6]])  # present documents only
    assert pooled == ([True] if waiting == 0.0 else [])


def test_read_ahead_of_a_present_and_a_missing_blob(tmp_path):
    store, digests = _store(tmp_path, 3)
    prefetch._read_ahead(store, digests[2])  # opens, advises, closes
    prefetch._read_ahead(store, "sha256:" + "ef" * 32)  # absent: nothing happens
    prefetch._read_ahead(store, "not a digest")
    assert sorted(os.listdir(tmp_path / "blobs" / "sha256")) == sorted(d.split(":")[1] for d in digests)
