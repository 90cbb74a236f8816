"""A view of the native snapshotter on a committed snapshot has no directory: containerd
bind-mounts its parent's directory read-only (``native.go`` makes a directory only for an
active snapshot or one without a parent). verify called such a view on a healthy root a
missing directory, and rebuild dropped it, or failed copying it (a red-team run)."""

from __future__ import annotations

import pytest

from support.daemon import parse_table
from support.versions import bin_dir_for

pytestmark = pytest.mark.interop


def _native(daemon) -> dict[str, str]:  # type: ignore[no-untyped-def]
    rows = parse_table(daemon.ctr("snapshots", "--snapshotter", "native", "ls").stdout)
    return {r["KEY"]: r["KIND"] for r in rows}


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_a_native_view_without_a_directory_is_healthy_and_kept(line, fixture_set, cli, tmp_path, private_containerd):
    root = tmp_path / "root"
    daemon = private_containerd(root=root, binary_dir=None if line == "1.6" else str(bin_dir_for(line)))
    local = ["--local"] if line == "2.x" else []
    daemon.ctr("images", "import", *local, "--snapshotter", "native", str(fixture_set.file(fixture_set.input("bbx-oci")["path"])))
    committed = [key for key, kind in _native(daemon).items() if kind == "Committed"]
    parents = {r["PARENT"] for r in parse_table(daemon.ctr("snapshots", "--snapshotter", "native", "ls").stdout)}
    top = next(key for key in committed if key not in parents)
    daemon.ctr("snapshots", "--snapshotter", "native", "view", "kept-view", top)
    daemon.ctr("snapshots", "--snapshotter", "native", "label", "kept-view", "containerd.io/gc.root=keep")
    before = _native(daemon)
    assert before["kept-view"] == "View"
    daemon.stop()
    ids = sorted(int(p.name) for p in (root / "io.containerd.snapshotter.v1.native" / "snapshots").iterdir())
    assert len(ids) == len(before) - 1  # (the oracle: the view has no directory of its own)

    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert result.code == 0, result.json["problems"]
    out = tmp_path / "new"
    rebuilt = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert rebuilt.code == 0 and not rebuilt.json["damage_found"], rebuilt.stdout + rebuilt.stderr
    in_place = cli("rebuild", "--root", str(root), "-q")
    assert in_place.code == 0 and "nothing to repair" in in_place.stdout, in_place.stdout + in_place.stderr
    daemon = private_containerd(root=out, binary_dir=None if line == "1.6" else str(bin_dir_for(line)))
    daemon.force_gc("default")
    assert _native(daemon) == before
