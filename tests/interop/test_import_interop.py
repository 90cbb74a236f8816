"""A real containerd on roots written by ``ctrconv import``: lists, checks, runs, survives GC.

Every bolt file written also passes Go bbolt's ``tx.Check``; unpacked snapshot trees are
compared with the trees containerd itself made from the same inputs (fixture listings).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ctrconv import api
from ctrconv.bolt.reader import read_tree
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_uvarint_exact
from ctrconv.sinks.containerd_root import copy_images_to_root
from ctrconv.layers.listing import compare_listings, tree_listing
from support.interop_checks import META, assert_go_clean, check_all, expected_file, gc_and_restart
from support.layouts import LayoutBuilder, LayoutSource, assert_superset

pytestmark = pytest.mark.interop

def input_names(fixture_set: Any, key: str) -> list[str]:
    return list(fixture_set.input(key)["names"])


@pytest.mark.parametrize("key", ["oci-layout", "bbx-docker"])
def test_no_unpack_root_is_listed_checked_and_kept(fixture_set, private_containerd, tmp_path, key) -> None:
    root = tmp_path / "root"
    report = api.import_images(fixture_set.file(fixture_set.input(key)["path"]), root, unpack=False)
    names = input_names(fixture_set, key)
    assert sorted(i.name for i in report.images) == sorted(names)
    assert_go_clean(root)
    daemon = private_containerd(root=root)
    assert sorted(daemon.image_names()) == sorted(names)
    daemon.stop()
    gc_and_restart(private_containerd, root, "default", names, unpacked=False)


def _our_snapshot_dirs(root: Path, namespace: str, snapshotter: str) -> dict[str, Path]:
    """chain ID -> snapshot directory, through meta.db name and backend id."""
    meta = read_tree(root / META)
    backend = read_tree(root / K.snapshotter_dir(snapshotter) / "metadata.db")
    records = meta.bucket(K.V1, namespace.encode(), K.SNAPSHOTS, snapshotter.encode())
    out = {}
    for key, rec in records.entries.items():
        brec = backend.bucket(K.V1, K.SNAPSHOTS, rec.get(K.NAME))
        sid = decode_uvarint_exact(brec.get(K.ID))
        out[key.decode()] = root / K.snapshotter_dir(snapshotter) / "snapshots" / str(sid)
    return out


def test_unpacked_overlayfs_matches_containerd_and_runs(fixture_set, private_containerd, tmp_path) -> None:
    root = tmp_path / "root"
    api.import_images(fixture_set.file(fixture_set.input("oci-layout")["path"]), root)
    assert_go_clean(root)

    ours = _our_snapshot_dirs(root, "default", "overlayfs")
    reference = [s for s in fixture_set.info["snapshots"]["default"] if s["listing"]]
    assert reference and set(ours) == {s["key"] for s in reference}
    for snap in reference:
        want = json.loads(fixture_set.file(snap["listing"]).read_text())["entries"]
        assert compare_listings(want, tree_listing(ours[snap["key"]] / "fs")) == [], snap["key"]

    names = input_names(fixture_set, "oci-layout")
    gc_and_restart(private_containerd, root, "default", names, unpacked=True)

    daemon = private_containerd(root=root)
    before = daemon.ctr("snapshots", "ls").stdout
    out = daemon.ctr("run", "--rm", "docker.io/library/bbx:oci", "t1", "/bin/busybox", "cat", "/data/modify.txt").stdout
    assert hashlib.sha256(out.encode()).hexdigest() == expected_file(fixture_set, "docker.io/library/bbx:oci", "/data/modify.txt")
    assert daemon.ctr("snapshots", "ls").stdout == before  # nothing was unpacked by ctr run
    daemon.stop()


def test_native_snapshotter_is_unpacked_and_runs(fixture_set, private_containerd, tmp_path) -> None:
    root = tmp_path / "root"
    api.import_images(fixture_set.file(fixture_set.input("bbx-oci")["path"]), root, snapshotter="native")
    assert_go_clean(root)
    daemon = private_containerd(root=root)
    ready = daemon.ctr("images", "check", "-q", "--snapshotter", "native").stdout.split()
    assert sorted(ready) == sorted(input_names(fixture_set, "bbx-oci"))
    daemon.force_gc()
    ready = daemon.ctr("images", "check", "-q", "--snapshotter", "native").stdout.split()
    assert sorted(ready) == sorted(input_names(fixture_set, "bbx-oci"))
    out = daemon.ctr("run", "--snapshotter", "native", "--rm", "docker.io/library/bbx:oci", "t2",
                     "/bin/busybox", "cat", "/data/modify.txt").stdout
    assert hashlib.sha256(out.encode()).hexdigest() == expected_file(fixture_set, "docker.io/library/bbx:oci", "/data/modify.txt")
    daemon.stop()


def test_merge_into_populated_root_keeps_everything(fixture_set, tmp_root_copy, private_containerd, tmp_path) -> None:
    root = tmp_root_copy
    old_meta = read_tree(root / META)
    old_backend = read_tree(root / K.snapshotter_dir("overlayfs") / "metadata.db")
    builder = LayoutBuilder(tmp_path / "layout")
    builder.image("docker.io/library/extra:1", [{"bin/busybox": Path("/bin/busybox").read_bytes()},
                                                {"etc/extra": b"extra\n"}])
    added: dict[str, list[str]] = {}
    for ns in ("default", "k8s.io"):
        report = copy_images_to_root(LayoutSource(builder.path), root, ns)
        assert report.images[0].status == "added" and report.images[0].snapshots_created == 2
        added[ns] = report.images[0].names
    # k8s.io gets the names a CRI pull records (tag, repo@digest, image ID)
    assert added["default"] == ["docker.io/library/extra:1"] and len(added["k8s.io"]) == 3
    assert_superset(old_meta, read_tree(root / META), allowed={
        (b"v1", b"default", b"snapshots", b"overlayfs"), (b"v1", b"k8s.io", b"snapshots", b"overlayfs")})
    assert_superset(old_backend, read_tree(root / K.snapshotter_dir("overlayfs") / "metadata.db"),
                    allowed={(b"v1", b"snapshots")})
    assert_go_clean(root)

    for ns in ("default", "k8s.io"):
        names = [i["name"] for i in fixture_set.images(ns)] + added[ns]
        old_check = {r.ref: r for r in _check_rows(fixture_set, ns)}
        daemon = private_containerd(root=root)
        rows = {r.ref: r for r in daemon.images_check(ns)}
        assert sorted(rows) == sorted(set(names))
        for name, row in rows.items():
            if name in old_check:
                assert (row.status, row.unpacked) == (old_check[name].status, old_check[name].unpacked)
        assert rows["docker.io/library/extra:1"].complete and rows["docker.io/library/extra:1"].unpacked
        daemon.force_gc(ns)
        assert {r.ref: (r.status, r.unpacked) for r in daemon.images_check(ns)} == {
            k: (v.status, v.unpacked) for k, v in rows.items()}
        out = daemon.ctr("run", "--rm", "docker.io/library/extra:1", f"x-{ns.replace('.', '')}",
                         "/bin/busybox", "cat", "/etc/extra", namespace=ns).stdout
        assert out == "extra\n"
        daemon.stop()


def _check_rows(fixture_set: Any, ns: str) -> list[Any]:
    from support.daemon import CheckRow, parse_table

    text = fixture_set.file(f"refs/images-check/{ns}.txt").read_text()
    return [CheckRow(r["REF"], r["TYPE"], r["DIGEST"], r["STATUS"], r["SIZE"], r["UNPACKED"] == "true")
            for r in parse_table(text)]


def test_cli_import_from_stdin(fixture_set, private_containerd, tmp_path, cli) -> None:
    root = tmp_path / "root"
    tar = fixture_set.file(fixture_set.input("bbx-docker")["path"])
    proc = subprocess.run(
        ["python3", "-m", "ctrconv", "import", "--root", str(root), "-i", "-", "--json", "-q"],
        stdin=open(tar, "rb"), capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [i["name"] for i in doc["images"]] == ["docker.io/library/bbx:docker"]
    again = cli("import", "--root", str(root), "-i", str(tar))
    assert again.code == 0 and "already present" in again.stdout
    gc_and_restart(private_containerd, root, "default", ["docker.io/library/bbx:docker"], unpacked=True)


def _snapshot_trees(daemon: Any, root: Path) -> dict[str, Any]:
    """chain ID -> tree listing of every committed overlayfs snapshot containerd lists (its key),
    found through the snapshotter's own metadata.db (key -> id -> ``snapshots/<id>/fs``)."""
    from ctrconv.bolt.reader import BoltFile
    from ctrconv.containerd.metadata import SnapshotterDB

    keys = [line.split()[0] for line in daemon.ctr("snapshots", "ls").stdout.splitlines()[1:]]
    with BoltFile(root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db") as db:
        ids = {s.key.rsplit("/", 1)[-1]: s.id for s in SnapshotterDB(db).snapshots()}
    return {key: tree_listing(root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots" / str(ids[key]) / "fs")
            for key in keys}


def test_one_foreign_platform_is_unpacked_like_ctr(fixture_set, private_containerd, tmp_path, cli) -> None:
    """``--platform linux/arm64`` on this amd64 host: the arm64 image is imported *and unpacked*
    (a node disk image for arm64 built here), as ``ctr images import --platform`` does: the
    same content, the same snapshot chain, the same trees; containerd keeps them over GC."""
    archive = fixture_set.file(fixture_set.input("bbx-multi")["path"])
    reference = private_containerd()
    reference.ctr("images", "import", "--platform", "linux/arm64", str(archive))
    # the import's lease is gone when ctr returns, but the GC that follows runs on its own
    # schedule: wait for it, or the listing races it (the unselected platforms' blobs may or
    # may not still be there)
    reference.force_gc("default")
    want_content = reference.ctr("content", "ls", "-q").stdout.split()
    want_trees = _snapshot_trees(reference, reference.root)
    reference.stop()
    assert len(want_trees) >= 1

    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-i", str(archive), "--platform", "linux/arm64", "-q")
    assert result.code == 0, result.stderr
    assert_go_clean(root)
    daemon = private_containerd(root=root)
    assert sorted(daemon.ctr("content", "ls", "-q").stdout.split()) == sorted(want_content)
    got_trees = _snapshot_trees(daemon, root)
    assert sorted(got_trees) == sorted(want_trees)
    for key, tree in want_trees.items():
        assert compare_listings(got_trees[key], tree) == [], key
    before = daemon.ctr("snapshots", "ls").stdout
    daemon.force_gc("default")
    daemon.stop()
    daemon = private_containerd(root=root)
    assert daemon.ctr("snapshots", "ls").stdout == before
    assert sorted(daemon.ctr("content", "ls", "-q").stdout.split()) == sorted(want_content)
    daemon.stop()
