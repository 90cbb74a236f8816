"""Temp outputs are recorded before a signal can interrupt their creator, and removed after."""

from __future__ import annotations

import os
import signal

import pytest

from ctrconv import tempfiles


@pytest.fixture(autouse=True)
def _clean_registry():
    tempfiles.remove_leftovers()
    yield
    tempfiles.remove_leftovers()


def test_leftovers_are_removed_and_forgotten_ones_kept(tmp_path):
    fd, kept = tempfiles.temp_file(tmp_path, ".x.", ".tmp")
    os.close(fd)
    final = tmp_path / "x"
    os.replace(kept, final)
    tempfiles.forget(kept)
    fd, lost_file = tempfiles.temp_file(tmp_path, ".y.", ".tmp")
    os.close(fd)
    lost_dir = tempfiles.temp_dir(tmp_path, ".z-")
    (lost_dir / "inner").write_text("x")
    removed = tempfiles.remove_leftovers()
    assert sorted(removed) == sorted([str(lost_file), str(lost_dir)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert tempfiles.remove_leftovers() == []


def test_a_signal_during_creation_is_delivered_after_it_is_recorded(tmp_path):
    """SIGINT raised while the temp file is being created arrives only once it is recorded."""
    seen = []

    def handler(signum, frame):
        seen.append(list(tempfiles._tracked))
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    real_mkstemp = tempfiles.tempfile.mkstemp

    def mkstemp_then_signal(*args, **kwargs):
        result = real_mkstemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # lands inside the deferred section
        return result

    try:
        tempfiles.tempfile.mkstemp = mkstemp_then_signal
        with pytest.raises(KeyboardInterrupt):
            tempfiles.temp_file(tmp_path, ".s.", ".tmp")
    finally:
        tempfiles.tempfile.mkstemp = real_mkstemp
        signal.signal(signal.SIGINT, previous)
    assert len(seen) == 1 and len(seen[0]) == 1, seen
    assert tempfiles.remove_leftovers() == seen[0]
    assert list(tmp_path.iterdir()) == []
