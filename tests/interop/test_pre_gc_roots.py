"""A 1.7 or 2.x root stopped right after ``ctr images import`` of a multi-platform archive,
before its garbage collector ran: the platforms the import did not select (their manifests,
configs and layers) and the archive's own index.json are still there, waiting for the GC. That
root is healthy, and containerd runs it. Found by a red-team run: ``verify`` called it broken
(``missing-gc-label`` problems for those platforms) and ``rebuild -o`` made an image of the
index.json blob. Now verify is clean (they are information) and the rebuild changes no name.
Marked interop (the 1.7 and 2.x packages, ``fixture_set``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("line", ["1.7", "2.x"])
def test_a_root_stopped_before_its_gc_is_healthy(line, fixture_set, private_containerd, cli, tmp_path: Path) -> None:
    from support.versions import bin_dir_for

    daemon = private_containerd(binary_dir=str(bin_dir_for(line)))
    daemon.ctr("images", "import", str(fixture_set.inputs / "bbx-multi.tar"))
    daemon.stop()  # (at once: the GC after the import's lease has not run)
    root = daemon.root
    verify = cli("verify", "--root", str(root), "-A", "--json")
    assert verify.code == 0, json.dumps(verify.json["problems"], indent=1)[:3000]
    names = cli("ls", "--root", str(root), "-A", "-q").stdout
    new = tmp_path / "new"
    rebuilt = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert rebuilt.code == 0, rebuilt.stderr
    assert [i for i in rebuilt.json["images"] if i["origin"] != "kept"] == []
    assert cli("ls", "--root", str(new), "-A", "-q").stdout == names
