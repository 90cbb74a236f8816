"""``hashed_blobs``: every blob's hash in order, small blobs on the calling thread while they come
fast, large ones (and, once small ones come slowly, all) on the pool."""

from __future__ import annotations

import hashlib
import threading

import pytest

from ctrconv.digest import Digest
from ctrconv.verify import blobs


def _blobs(tmp_path, sizes):
    found = []
    for i, size in enumerate(sizes):
        data = bytes([i % 251]) * size
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        path = tmp_path / f"{i:03}"
        path.write_bytes(data)
        found.append((digest, str(path)))
    return found


@pytest.mark.parametrize("waiting", [0.0, 1e9])
def test_every_hash_in_order_on_the_thread_its_size_and_pace_say(tmp_path, monkeypatch, waiting):
    monkeypatch.setattr(blobs, "_WINDOW_PER_WORKER", 3)  # windows of six blobs
    monkeypatch.setattr(blobs, "SMALL", 1000)
    monkeypatch.setattr(blobs, "WAITING", waiting)
    sizes = [0, 10, 5000, 999, 1000, 1001, 200_000, 7, 3] * 4
    items = _blobs(tmp_path, sizes)
    missing = Digest("sha256", "0" * 64)
    items.insert(5, (missing, str(tmp_path / "absent")))
    (tmp_path / "003").write_bytes(b"changed")  # a small blob whose bytes changed
    where: dict[str, str] = {}
    real = blobs.hash_blob
    main = threading.current_thread()

    def recording(digest, path, *args, **kwargs):
        where[path] = "here" if threading.current_thread() is main else "pool"
        return real(digest, path, *args, **kwargs)

    monkeypatch.setattr(blobs, "hash_blob", recording)
    results = list(blobs.hashed_blobs(items, jobs=2))
    assert results == [real(d, p) for d, p in items]  # (in order, missing and changed blobs included)
    assert results[5] == (missing, None, 0)
    assert results[3][1] == hashlib.sha256(b"changed").hexdigest() != items[3][0].hex
    sizes_by_path = {p: (tmp_path / p).stat().st_size if (tmp_path / p).exists() else 0 for _, p in items}
    large = {p for p, size in sizes_by_path.items() if size > 1000}
    assert {p for p, at in where.items() if at == "pool"} >= large
    if waiting:  # a warm cache: every small blob here
        assert {p for p, at in where.items() if at == "here"} == set(sizes_by_path) - large
    else:  # the first window's small blobs here, then every blob on the pool
        here = {p for p, at in where.items() if at == "here"}
        assert here and here <= {p for _, p in items[:6]}


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_no_more_hashing_threads_than_jobs(tmp_path, monkeypatch, jobs):
    """``--jobs N`` hashes on N threads counting the calling one (which hashes the small
    blobs): one job hashes everything here, N jobs use at most N - 1 pool threads while the
    small blobs come fast."""
    monkeypatch.setattr(blobs, "_WINDOW_PER_WORKER", 4)
    monkeypatch.setattr(blobs, "SMALL", 1000)
    monkeypatch.setattr(blobs, "WAITING", 1e9)
    items = _blobs(tmp_path, [10, 5000, 20_000, 30, 4000, 9000] * 5)
    threads: set[int] = set()
    real = blobs.hash_blob
    main = threading.get_ident()

    def recording(digest, path, *args, **kwargs):
        threads.add(threading.get_ident())
        return real(digest, path, *args, **kwargs)

    monkeypatch.setattr(blobs, "hash_blob", recording)
    assert list(blobs.hashed_blobs(items, jobs=jobs)) == [real(d, p) for d, p in items]
    assert main in threads and len(threads) <= jobs
    if jobs == 1:
        assert threads == {main}
