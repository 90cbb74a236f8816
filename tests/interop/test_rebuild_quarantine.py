"""What an in-place rebuild moves to its quarantine (``ctrconv-quarantine/<stamp>/``) is never
lost and never in the way of a later run."""

from __future__ import annotations

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
