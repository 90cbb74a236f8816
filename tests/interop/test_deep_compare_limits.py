"""Comparing snapshots with their layers (``verify --deep``, rebuild's default check) when the
scratch filesystem is full, and at many entries (a red-team run at size):

* a layer that cannot be applied for lack of room said nothing about the snapshot, yet verify
  called it ``snapshot-differs`` (exit 1) and rebuild in place deleted it (on a node that keeps
  no layer blobs, the only copy of the layer); now verify says it was not compared and rebuild
  stops before it writes anything;
* the two trees were listed whole before comparing (~1.7 KB per entry: 523 MB at 300,000
  entries); they are walked side by side now, each inode hashed once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]


class _Full:
    f_bavail = 0
    f_frsize = 4096


@pytest.fixture
def scratch_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scratch tree the comparison applies a layer into has no room left."""
    from ctrconv.layers import apply

    real = os.statvfs
    monkeypatch.setattr(apply, "_CHECK_SPACE_ABOVE", -1)
    monkeypatch.setattr(apply.os, "statvfs", lambda p: _Full() if ".ctrconv-verify-" in os.fspath(p) else real(p))


def _state(root: Path) -> dict[str, str]:
    """Every path under the root with its type and (files) content digest."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "dir" if path.is_dir() else "other"
    return found


def test_verify_deep_without_scratch_room_compares_nothing_and_blames_nothing(tmp_root_copy, cli, scratch_full):
    result = cli("verify", "--root", str(tmp_root_copy), "--deep", "-A", "--json")
    assert result.code == 0, result.json["problems"]
    kinds = {i["kind"] for i in result.json["info"]}
    assert "snapshot-not-compared" in kinds
    assert not [p for p in result.json["problems"] if p["kind"] == "snapshot-differs"]


def test_rebuild_without_scratch_room_stops_before_changing_anything(tmp_root_copy, cli, scratch_full):
    snapshots = tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    newest = max((p for p in snapshots.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(newest)  # something to repair (unpacked again), the other snapshots compared first
    before = _state(tmp_root_copy)
    result = cli("rebuild", "--root", str(tmp_root_copy))
    assert result.code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ctrconv: error: no room in ") and "nothing was changed" in line, line
    assert "--trust-snapshots" in line
    assert _state(tmp_root_copy) == before


def test_comparing_many_entries_keeps_memory_flat(tmp_path: Path) -> None:
    """Two trees of 40,000 files compared in a fresh process: the peak RSS grows by far less
    than the ~70 MB two whole listings took."""
    for side in ("a", "b"):
        top = tmp_path / side
        for d in range(40):
            sub = top / f"d{d:02d}"
            sub.mkdir(parents=True)
            for f in range(1000):
                (sub / f"f{f:04d}").write_bytes(b"x")
                os.utime(sub / f"f{f:04d}", ns=(0, 0))
    (tmp_path / "b" / "d07" / "f0005").write_bytes(b"y")
    os.utime(tmp_path / "b" / "d07" / "f0005", ns=(0, 0))
    script = (
        "import resource, sys\n"
        "from ctrconv.layers.listing import compare_walks, walk_entries\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "problems, total = compare_walks(walk_entries(sys.argv[1]), walk_entries(sys.argv[2]))\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base\n"
        "print(total, problems[0] if problems else '', grown)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a"), str(tmp_path / "b")],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    total, grown_kib = int(out[0]), int(out[-1])
    assert total == 1 and out[1] == "/d07/f0005:"  # the one file that differs, found
    assert grown_kib < 20 * 1024, grown_kib


def test_the_deep_check_walks_the_trees_and_never_lists_them_whole(tmp_root_copy, cli, monkeypatch):
    """``verify --deep`` compares with the side-by-side walk (the flat-memory one above), not
    with whole listings of both trees."""
    from ctrconv.layers import listing
    from ctrconv.verify import deep

    walked = []

    def whole(*_a, **_k):
        raise AssertionError("a whole tree listing was taken")

    def counted(top):
        walked.append(top)
        return listing.walk_entries(top)

    monkeypatch.setattr(listing, "tree_listing", whole)
    monkeypatch.setattr(deep, "walk_entries", counted)
    result = cli("verify", "--root", str(tmp_root_copy), "--deep", "-A", "--json")
    assert result.code == 0, result.json["problems"]
    compared = result.json["stats"].get("snapshots compared", 0)
    assert compared > 0 and len(walked) == 2 * compared  # (the snapshot's tree and the scratch one)
