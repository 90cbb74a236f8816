"""Naming who holds a root's lock when refusing (:mod:`ctrconv.containerd.rootlock`)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ctrconv.containerd import rootlock
from ctrconv.containerd.rootlock import Holder


def test_a_holder_seen_exiting_is_looked_at_again_until_its_command_line_shows(tmp_path: Path, monkeypatch) -> None:
    """A process that exits lets go of its memory before its files: for a moment ``/proc/locks``
    still lists its lock while its command line reads empty. The refusal named it as a bare
    "pid N" then (a CI run, under load); it looks again, and names what it finds after."""
    seen = iter([[Holder(41, "")], [Holder(41, "")], [Holder(42, "ctrconv import --root R")]])
    monkeypatch.setattr(rootlock, "holders", lambda path: next(seen))
    monkeypatch.setattr(rootlock.time, "sleep", lambda s: None)
    fd = os.open(tmp_path, os.O_RDONLY)
    other = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)  # (held: each look-up is followed by a failing try)
        found = rootlock._holders_unless_free(fd, fcntl.LOCK_EX, tmp_path)
    finally:
        os.close(other)
        os.close(fd)
    assert found == [Holder(42, "ctrconv import --root R")]


def test_the_lock_let_go_meanwhile_is_taken(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rootlock, "holders", lambda path: [Holder(41, "")])
    monkeypatch.setattr(rootlock.time, "sleep", lambda s: None)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert rootlock._holders_unless_free(fd, fcntl.LOCK_EX, tmp_path) is None  # (nobody held it)
    finally:
        os.close(fd)
