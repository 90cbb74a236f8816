"""An image's unpacked snapshot removed by hand (``ctr snapshots rm`` of its top snapshot, then
a GC): its config still labels the snapshot. containerd unpacks the image again on first use
(``ctr run``; CRI's ``WithNewSnapshot`` catches NotFound and unpacks) while its layers are
there, so verify reports the label as information; on a node whose layer blobs are discarded
(CRI ``discard_unpacked_layers``) the snapshot was the only copy, and it is a problem (found by
a red-team run: verify exited 1 on the first, a healthy node)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.daemon import parse_table

pytestmark = pytest.mark.interop


def _remove_top_snapshot(daemon, namespace: str, gc: bool = True) -> str:
    rows = parse_table(daemon.ctr("snapshots", "ls", namespace=namespace).stdout)
    parents = {r["PARENT"] for r in rows}
    containers = {r["CONTAINER"] for r in parse_table(daemon.ctr("containers", "ls", namespace=namespace).stdout)}
    top = sorted(r["KEY"] for r in rows if r["KEY"] not in parents and r["KIND"] == "Committed"
                 and r["KEY"] not in containers)[0]
    daemon.ctr("snapshots", "rm", top, namespace=namespace)
    if gc:
        daemon.force_gc(namespace)
    return top


def _not_unpacked(daemon, namespace: str) -> str:
    return next(r.ref for r in daemon.images_check(namespace) if not r.unpacked and r.complete
                and not r.ref.startswith("sha256:"))


@pytest.mark.parametrize("root_name,gc", [("node", True), ("node", False), ("discarded", True)])
def test_a_removed_image_snapshot_is_damage_only_where_it_cannot_be_made_again(root_name, gc, realnode_set_for, cli,
                                                                               tmp_path, private_containerd):
    """(Without a GC since, the snapshotter still holds the removed snapshot: it is no lost
    record either, as its parent no longer lists it, which a lost record's parent does.)"""
    namespace = "k8s.io"
    root = realnode_set_for("1.6").copy_root(root_name, tmp_path / "root")
    daemon = private_containerd(root=root)
    top = _remove_top_snapshot(daemon, namespace, gc)
    daemon.stop()

    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    found = [p for p in result.json["problems"] + result.json["info"]
             if p["kind"] == "dangling-gc-label" and top in p["message"]]
    assert len(found) == 1, json.dumps(result.json["problems"])[:2000]

    if root_name == "node":
        assert result.code == 0 and found[0] in result.json["info"], json.dumps(result.json["problems"])[:2000]
        assert "unpack it again on first use" in found[0]["message"]
        rebuilt = cli("rebuild", "--root", str(root), "-q")
        assert rebuilt.code == 0 and "nothing to repair" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
        # -o unpacks it again, as containerd would on first use: no damage either (it said so)
        copied = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
        assert copied.code == 0 and not copied.json["damage_found"], copied.stdout
        assert copied.json["snapshots_unpacked"] == copied.json["snapshots_unpacked_removed"] >= 1, copied.json
        daemon = private_containerd(root=root)
        # the oracle: containerd runs the image, unpacking it again
        ref = _not_unpacked(daemon, namespace)
        run = daemon.ctr("run", "--rm", ref, "again", "/bin/busybox", "true", namespace=namespace, check=False)
        assert run.returncode == 0, run.stderr
        daemon.stop()
    else:
        assert result.code == 1 and found[0] in result.json["problems"], json.dumps(result.json["info"])[:2000]
        assert "not all here" in found[0]["message"]
