"""An import killed after it replaced the snapshotter's metadata.db but before meta.db leaves
backend snapshots meta.db never named, under sequences meta.db never advanced past. The next
import (of another image sharing a base layer) took the same backend names again: it exited 0,
but the leftovers' parent links crossed into its snapshots and verify found ``snapshot-chain``
problems (found by a red-team kill -9 run on 1.6 and 2.x). New names now start above every one
in use, and a real containerd keeps everything across its GC."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from support.daemon import PrivateContainerd, parse_table

pytestmark = pytest.mark.interop


def _import_killed_before_meta_db(root: Path, archive: Path) -> None:
    pid = os.fork()
    if pid == 0:  # the child imports and is killed (SIGKILL: no clean-up) right before meta.db
        try:
            from ctrconv import api
            from ctrconv.sinks.containerd_root import transaction

            def killed() -> None:
                os.kill(os.getpid(), signal.SIGKILL)

            transaction.committing = killed  # entered just before the meta.db write
            api.import_images(str(archive), str(root))
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def test_an_import_after_a_killed_one_leaves_a_consistent_root(realnode_set_for, cli, tmp_path) -> None:
    refs = realnode_set_for("1.6").refs / "export"
    root = tmp_path / "root"
    first = cli("import", "--root", str(root), "-q", "-i", str(refs / "oci.tar"))
    assert first.code == 0, first.stderr
    _import_killed_before_meta_db(root, refs / "shared-a.tar")
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0  # (the old state)

    second = cli("import", "--root", str(root), "-q", "-i", str(refs / "shared-b.tar"))
    assert second.code == 0, second.stderr
    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert result.code == 0, result.json["problems"]

    with PrivateContainerd(root=root, workdir=tmp_path) as daemon:
        daemon.force_gc()
        rows = {r["REF"]: r for r in parse_table(daemon.ctr("images", "check").stdout)}
        assert all(r["STATUS"].startswith("complete") and r["UNPACKED"] == "true" for r in rows.values()), rows
        assert len(rows) == 2
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0
