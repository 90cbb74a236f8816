"""An in-place rebuild's own traces: what it moves to its quarantine (``ctrconv-quarantine/<stamp>/``)
is never lost and never in the way of a later run, and its record of the damage
(``ctrconv-rebuild.json``) stays only where the root may have been changed."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.interop


def test_a_re_run_within_the_same_second_never_moves_a_directory_onto_its_namesake(tmp_root_copy, monkeypatch):
    """An in-place rebuild killed after it moved snapshot directories to its quarantine, re-run
    within the same second (the same stamp): moving the next directory onto its namesake failed,
    "Directory not empty", after the commit point (a red-team run: the node's images were left
    not unpacked until a third run). Every directory goes to a name of its own; none is lost."""
    import time

    from ctrconv import api

    overlay = tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs"
    (overlay / "metadata.db").unlink()  # every snapshot directory goes to the quarantine
    ids = sorted(p.name for p in (overlay / "snapshots").iterdir())
    stamp = "20261207T000000Z"
    monkeypatch.setattr(time, "strftime", lambda *_a: stamp)
    earlier = tmp_root_copy / "ctrconv-quarantine" / stamp / "snapshots" / "overlayfs"
    for name in ids:  # what the killed run had put there
        (earlier / name / "fs").mkdir(parents=True)
        (earlier / name / "fs" / "earlier").write_text(name)
    api.rebuild_root(tmp_root_copy)
    for name in ids:
        assert (earlier / name / "fs" / "earlier").read_text() == name
        assert (earlier / f"{name}.2" / "fs").is_dir(), sorted(p.name for p in earlier.iterdir())


def test_a_signal_before_the_new_meta_db_leaves_no_record_of_an_interrupted_rebuild(tmp_root_copy, monkeypatch):
    """SIGTERM right after the record of the damage was written, before the new meta.db: the
    command exits 143 ("nothing was written"), and the record stayed, so ``verify`` then said
    an interrupted rebuild had changed the root (a red-team run). Nothing had: it goes. The
    record of an earlier, killed run stays (that run may have changed the root)."""
    import signal

    from ctrconv import commitpoint
    from ctrconv.interrupts import Stopped
    from ctrconv.recovery import journal, rebuild

    (tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db").unlink()  # damage to repair

    def stopped(*_a, **_k):
        assert (tmp_root_copy / journal.JOURNAL).exists()  # written before the first change
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(rebuild, "write_stores", stopped)
    commitpoint.reset()
    with pytest.raises(Stopped):
        rebuild.rebuild_root(tmp_root_copy)
    assert not (tmp_root_copy / journal.JOURNAL).exists()

    journal.write(tmp_root_copy, {()}, "20261207T000000Z")  # a killed run's
    commitpoint.reset()
    with pytest.raises(Stopped):
        rebuild.rebuild_root(tmp_root_copy)
    assert (tmp_root_copy / journal.JOURNAL).exists()


def test_a_rebuild_failing_after_its_first_change_names_what_it_kept(tmp_root_copy, monkeypatch):
    """An in-place rebuild that fails after replacing meta.db (a red-team run: a lost manifest
    failed the re-import the same way on every re-run) says where what it replaced is, so the
    operator can roll back when running it again cannot help."""
    from ctrconv import commitpoint
    from ctrconv.errors import CtrconvError
    from ctrconv.recovery import rebuild

    (tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db").unlink()

    def failing(*_a, **_k):
        raise CtrconvError("the re-import failed")

    monkeypatch.setattr(rebuild, "import_groups", failing)
    commitpoint.reset()
    with pytest.raises(CtrconvError) as caught:
        rebuild.rebuild_root(tmp_root_copy)
    message = str(caught.value)
    assert "what it replaced is kept: " in message and "meta.db.bak-" in message and "roll it back" in message, message
    backup = message.split("what it replaced is kept: ", 1)[1].split(",", 1)[0].split(")", 1)[0]
    assert os.path.isfile(backup), backup


def test_a_signal_before_the_new_meta_db_puts_back_the_corrupt_blobs_it_set_aside(tmp_root_copy, monkeypatch):
    """The content check moves corrupt blobs to the quarantine before the new meta.db; a
    SIGTERM then exited 143 ("nothing was written") with the blob moved and no record (a
    red-team run). The blob goes back where it was."""
    import signal

    from ctrconv import commitpoint
    from ctrconv.interrupts import Stopped
    from ctrconv.recovery import journal, rebuild

    blobs = tmp_root_copy / "io.containerd.content.v1.content" / "blobs" / "sha256"
    victim = max(blobs.iterdir(), key=lambda p: p.stat().st_size)
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    before = sorted(p.name for p in tmp_root_copy.iterdir())

    def stopped(*_a, **_k):
        assert not victim.exists()  # (set aside by the content check)
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(rebuild, "write_stores", stopped)
    commitpoint.reset()
    with pytest.raises(Stopped):
        rebuild.rebuild_root(tmp_root_copy)
    assert victim.read_bytes() == bytes(data)
    assert sorted(p.name for p in tmp_root_copy.iterdir()) == before
    assert not (tmp_root_copy / journal.JOURNAL).exists()
