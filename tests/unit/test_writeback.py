"""Early writeback (``ctrconv.writeback``): every new range is handed to the kernel in order,
from a helper thread that ends when the file is about to be fsynced (no clock involved)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ctrconv import writeback
from ctrconv.writeback import EarlyWriteback


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "writeback"]


def test_ranges_are_started_in_order_on_a_helper_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[int, int, int, str]] = []
    made = threading.Semaphore(0)

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((offset, length, flags, threading.current_thread().name))
        made.release()
        return 0

    monkeypatch.setattr(writeback, "_sync_file_range", recording)
    with open(tmp_path / "out", "wb") as f:
        wb = EarlyWriteback(f.fileno(), step=100)
        for position, new_range in ((50, False), (120, True), (150, False), (260, True), (399, True)):
            wb.wrote(position)
            if new_range:  # wait for the helper's call (close drops ranges not yet started)
                assert made.acquire(timeout=60)
        wb.close()
        assert not _threads()
    # ranges at least one step long, contiguous from 0, started from the helper thread only
    assert [(o, n) for o, n, _, _ in calls] == [(0, 120), (120, 140), (260, 139)]
    assert {flags for _, _, flags, _ in calls} == {2}  # SYNC_FILE_RANGE_WRITE: start, never wait
    assert {name for *_, name in calls} == {"writeback"}


def test_close_drops_ranges_not_yet_started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fsync after ``close`` writes them anyway; waiting for each first would only delay it."""
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def blocking(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append(offset)
        entered.set()
        assert release.wait(60)
        return 0

    monkeypatch.setattr(writeback, "_sync_file_range", blocking)
    with open(tmp_path / "out", "wb") as f:
        wb = EarlyWriteback(f.fileno(), step=10)
        wb.wrote(10)
        assert entered.wait(60)  # the helper is inside its first call (a congested disk)
        wb.wrote(20)
        wb.wrote(30)  # queued behind it
        closer = threading.Thread(target=wb.close)
        closer.start()
        while not wb._stop.is_set():  # close has said stop (it then waits for the call in flight)
            closer.join(0.001)
        release.set()
        closer.join(60)
        assert not closer.is_alive() and not _threads()
    assert calls == [0]


def test_the_real_call_leaves_the_data_alone(tmp_path: Path) -> None:
    path = tmp_path / "out"
    data = os.urandom(1 << 20)
    with open(path, "wb", buffering=0) as f:
        wb = EarlyWriteback(f.fileno(), step=64 << 10)
        for i in range(0, len(data), 100_000):
            f.write(data[i:i + 100_000])
            wb.wrote(f.tell())
        wb.close()
        os.fsync(f.fileno())
    assert path.read_bytes() == data
    assert not _threads()


def test_without_sync_file_range_nothing_is_started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(writeback, "_sync_file_range", False)
    with open(tmp_path / "out", "wb") as f:
        wb = EarlyWriteback(f.fileno(), step=1)
        wb.wrote(10)
        assert not _threads()
        wb.close()


def test_libc_is_found_without_a_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ctypes.util.find_library`` runs ``ldconfig -p``: start-up must not pay for it."""
    import subprocess

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a subprocess was started to find libc")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(writeback, "_sync_file_range", None)
    assert writeback._lookup()


def test_preallocate_reserves_blocks_and_keeps_the_size(tmp_path: Path) -> None:
    from ctrconv.writeback import preallocate

    path = tmp_path / "out"
    with open(path, "wb") as f:
        f.write(b"h" * 512)
        f.flush()
        if not preallocate(f.fileno(), 512, 8 << 20):
            pytest.skip("this filesystem cannot preallocate")
        st = os.fstat(f.fileno())
        assert st.st_size == 512  # FALLOC_FL_KEEP_SIZE: nothing visible
        assert st.st_blocks * 512 >= 8 << 20  # but the region is allocated
        data = os.urandom(8 << 20)
        f.write(data)
    assert path.read_bytes() == b"h" * 512 + data


def test_preallocate_is_advisory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Where fallocate is missing or refuses (a pipe here), nothing happens and False says so."""
    from ctrconv.writeback import preallocate

    read_fd, write_fd = os.pipe()
    try:
        assert preallocate(write_fd, 0, 1 << 20) is False
    finally:
        os.close(read_fd)
        os.close(write_fd)
    monkeypatch.setattr(writeback, "_fallocate", False)
    with open(tmp_path / "out", "wb") as f:
        assert preallocate(f.fileno(), 0, 1 << 20) is False
        assert os.fstat(f.fileno()).st_blocks == 0


def test_an_object_an_interrupt_left_half_made_is_collected_quietly():
    """SIGINT can land inside ``__init__`` (the crash test saw it): ``__del__`` then runs on an
    object without its attributes and must not print 'Exception ignored ... AttributeError'."""
    from ctrconv.writeback import EarlyWriteback

    EarlyWriteback.__new__(EarlyWriteback).__del__()


# -- FileWriteback: whole files of an unpack ---------------------------------------------------


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_large_files_are_started_on_the_helper_and_small_ones_skipped(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    from ctrconv.writeback import FileWriteback

    calls: list[tuple[int, int, int, int, str]] = []
    made = threading.Semaphore(0)

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((os.fstat(fd).st_ino, offset, length, flags, threading.current_thread().name))
        made.release()
        return 0

    monkeypatch.setattr(writeback, "_sync_file_range", recording)
    before = _open_fds()
    wb = FileWriteback(min_size=1000)
    inodes = []
    for name, size in (("small", 999), ("big", 1000), ("bigger", 5000)):
        with open(tmp_path / name, "wb") as f:
            f.write(b"x" * size)
            f.flush()
            wb.written(f.fileno(), size)  # the caller closes its own descriptor right after
            inodes.append(os.fstat(f.fileno()).st_ino)
    for _ in range(2):
        assert made.acquire(timeout=60)
    wb.close()
    # whole files (offset 0, length 0 = to the end), started and never waited for, off this thread
    assert calls == [(inodes[1], 0, 0, 2, "file-writeback"), (inodes[2], 0, 0, 2, "file-writeback")]
    assert wb.started == 2
    assert not [t for t in threading.enumerate() if t.name == "file-writeback"]
    assert _open_fds() == before  # every duplicate closed


def _congested(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A FileWriteback whose helper is held inside its first ``sync_file_range`` (a congested
    disk) with two more files queued behind it: (writeback, the three files' inodes, the inodes
    started so far, the event that releases the helper, the open descriptors before)."""
    from ctrconv.writeback import FileWriteback

    started: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def blocking(fd: int, offset: int, length: int, flags: int) -> int:
        started.append(os.fstat(fd).st_ino)
        entered.set()
        assert release.wait(60)
        return 0

    monkeypatch.setattr(writeback, "_sync_file_range", blocking)
    before = _open_fds()
    wb = FileWriteback(min_size=1)
    inodes = []
    for i in range(3):
        with open(tmp_path / f"f{i}", "wb") as f:
            f.write(b"x")
            wb.written(f.fileno(), 1)
            inodes.append(os.fstat(f.fileno()).st_ino)
        if i == 0:
            assert entered.wait(60)
    return wb, inodes, started, release, before


def test_file_writeback_close_drops_files_not_started_and_closes_them(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    wb, inodes, started, release, before = _congested(monkeypatch, tmp_path)
    closer = threading.Thread(target=wb.close)
    closer.start()
    while not wb._stop.is_set():
        closer.join(0.001)
    release.set()
    closer.join(60)
    assert not closer.is_alive()
    assert started == inodes[:1]
    assert _open_fds() == before


def test_file_writeback_without_sync_file_range_does_nothing(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    from ctrconv.writeback import FileWriteback

    monkeypatch.setattr(writeback, "_sync_file_range", False)
    before = _open_fds()
    wb = FileWriteback(min_size=1)
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x")
        wb.written(f.fileno(), 1)
    assert wb.started == 0 and not [t for t in threading.enumerate() if t.name == "file-writeback"]
    wb.close()
    assert _open_fds() == before


def test_file_writeback_close_with_finish_starts_every_queued_file(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    wb, inodes, started, release, before = _congested(monkeypatch, tmp_path)
    release.set()
    wb.close(finish=True)
    assert started == inodes
    assert _open_fds() == before
