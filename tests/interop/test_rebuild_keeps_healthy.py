"""What ``rebuild -o`` must not change on a healthy root (found by a red-team run that built
healthy roots the way nodes are made): an image ``ctr -n k8s.io images import`` preloaded has no
``io.cri-containerd.image=managed`` label and gets none; an image unpacked only by the native
snapshotter is not unpacked into overlayfs as well."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ctrconv.bolt.reader import BoltFile, read_tree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import schema as K

pytestmark = pytest.mark.interop

META = ("io.containerd.metadata.v1.bolt", "meta.db")
REPO = Path(__file__).resolve().parents[2]
MANAGED = b"io.cri-containerd.image"


def _labels(root: Path, namespace: bytes) -> dict[bytes, bool]:
    tree = read_tree(root.joinpath(*META))
    images = tree.bucket(K.V1, namespace, K.IMAGES)
    return {name: bool(rec.bucket(K.LABELS) and rec.bucket(K.LABELS).get(MANAGED)) for name, rec in images.entries.items()}


def test_an_image_preloaded_without_cri_s_label_gets_none(realnode_set_for, cli, tmp_path):
    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    meta = root.joinpath(*META)
    with BoltFile(meta) as db:
        page_size = db.page_size
    tree = read_tree(meta)
    images = tree.bucket(K.V1, b"k8s.io", K.IMAGES)
    preloaded = next(name for name in sorted(images.entries) if b"@" not in name and not name.startswith(b"sha256:"))
    images.entries[preloaded].bucket(K.LABELS).entries.pop(MANAGED)  # as ctr -n k8s.io images import leaves it
    write_bolt(meta, tree, page_size=page_size)
    before = _labels(root, b"k8s.io")
    assert before[preloaded] is False
    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q")
    assert result.code == 0, result.stderr
    assert _labels(tmp_path / "new", b"k8s.io") == before


def test_an_image_unpacked_by_native_only_is_not_unpacked_into_overlayfs(small_root, cli, tmp_path):
    archive = tmp_path / "x.tar"
    subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(small_root), "--all", "-q", "-o",
                    str(archive)], cwd=REPO, check=True)
    root = tmp_path / "native"
    assert cli("import", "--root", str(root), "-i", str(archive), "--snapshotter", "native", "-q").code == 0
    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
    assert result.code == 0, result.stderr
    assert result.json["snapshots_unpacked"] == 0, result.json
    overlay = tmp_path / "new" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    assert not overlay.is_dir() or not any(overlay.iterdir())
    assert cli("verify", "--root", str(tmp_path / "new"), "-A", "-q").code == 0


def test_content_missing_for_the_host_names_the_platform_present(realnode_set_for, cli, tmp_path):
    """A namespace that pulled only a foreign platform of an index (the corpus' ``other``): the
    line said only what is missing; it names what is here and the --platform that exports it."""
    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    result = cli("export", "--root", str(root), "-n", "other", "--all", "-o", str(tmp_path / "x.tar"))
    assert result.code == 1 and "here: linux/arm64 (--platform linux/arm64)" in result.stderr, result.stderr
    assert cli("export", "--root", str(root), "-n", "other", "--all", "--platform", "linux/arm64", "-q",
               "-o", str(tmp_path / "x.tar")).code == 0


def test_an_image_unpacked_by_both_snapshotters_is_made_again_in_the_one_whose_store_is_gone(small_root, cli,
                                                                                             tmp_path):
    """An image unpacked into overlayfs and native, the native store then deleted: rebuild
    unpacked it into overlayfs only and kept meta.db's native records, which named nothing
    (``ctr run --snapshotter native``: "missing parent ... bucket: not found"; a red-team run).
    The records of the lost store go, and the image is unpacked again in both."""
    import shutil

    archive = tmp_path / "x.tar"
    subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(small_root), "--all", "-q", "-o",
                    str(archive)], cwd=REPO, check=True)
    root = tmp_path / "both"
    for snapshotter in ("overlayfs", "native"):
        assert cli("import", "--root", str(root), "-i", str(archive), "--snapshotter", snapshotter, "-q").code == 0
    shutil.rmtree(root / "io.containerd.snapshotter.v1.native")
    assert cli("verify", "--root", str(root), "-A", "-q").code == 1
    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
    assert result.code == 0, result.stderr
    assert result.json["snapshots_unpacked"] > 0
    native = tmp_path / "new" / "io.containerd.snapshotter.v1.native" / "snapshots"
    assert native.is_dir() and any(native.iterdir())
    assert cli("verify", "--root", str(tmp_path / "new"), "-A", "-q").code == 0


def test_records_of_a_snapshotter_whose_store_lives_outside_the_root_are_kept(small_root, cli, tmp_path):
    """A proxy snapshotter (stargz, nydus, soci) keeps its store outside the root: its meta.db
    records name snapshots that are whole there. Dropping the records of snapshotters whose db
    the root lacks (what a deleted native store needs) must not take these."""
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(small_root), str(root)], check=True)
    meta = root.joinpath(*META)
    with BoltFile(meta) as db:
        page_size = db.page_size
    tree = read_tree(meta)
    stargz = tree.bucket(K.V1, b"default", K.SNAPSHOTS, b"stargz", create=True)
    record = stargz.bucket(b"sha256:" + b"7" * 64, create=True)
    record.put(b"name", b"default/1/sha256:" + b"7" * 64)
    write_bolt(meta, tree, page_size=page_size)
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0  # (its store is not the root's to check)
    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q")
    assert result.code == 0, result.stderr
    kept = read_tree((tmp_path / "new").joinpath(*META)).bucket(K.V1, b"default", K.SNAPSHOTS, b"stargz")
    assert kept is not None and list(kept.entries) == [b"sha256:" + b"7" * 64]


def test_a_removed_container_s_layer_awaiting_gc_is_information_named_as_such(realnode_set_for, cli, tmp_path):
    """A container removed (its records gone, as ``ctr containers rm`` leaves them) while its
    writable snapshot awaits containerd's GC, which cannot be told from one whose records an
    older meta.db put back has lost: verify calls it information (no false alarm on a healthy
    node) but says it holds a container's files and where; rebuild -o leaves it out and says so
    (a red-team run: "nothing to repair", with the files gone from the new root unsaid)."""
    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    meta = root.joinpath(*META)
    with BoltFile(meta) as db:
        page_size = db.page_size
    tree = read_tree(meta)
    default = tree.bucket(K.V1, b"default")
    container = default.bucket(K.CONTAINERS).entries.pop(b"rn-stopped")
    key = container.get(K.SNAPSHOT_KEY)
    default.bucket(K.SNAPSHOTS, b"overlayfs").entries.pop(key)
    write_bolt(meta, tree, page_size=page_size)

    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert result.code == 0, result.json["problems"]
    [info] = [i for i in result.json["info"] if i["kind"] == "unreferenced-backend-snapshot"
              and i["object"].endswith("/rn-stopped")]
    assert "a writable snapshot holding files" in info["message"], info
    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
    assert result.code == 0, result.stderr
    [cleaned] = [c for c in result.json["cleaned"] if c["object"].endswith("/rn-stopped")]
    assert "it is writable and holds files" in cleaned["reason"] and "the source keeps it" in cleaned["reason"]


def test_a_directory_no_record_names_that_holds_files_is_named_when_a_new_root_leaves_it_out(realnode_set_for, cli,
                                                                                              tmp_path):
    """A snapshot directory without any record that holds files (a container's layer after an
    older snapshotter db was put back): in place it goes to the quarantine, reported; rebuild -o
    left it out of the new root without a word (a red-team run)."""
    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    orphan = root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots" / "998"
    (orphan / "fs" / "data").mkdir(parents=True)
    (orphan / "work").mkdir()
    (orphan / "fs" / "data" / "important.txt").write_text("container data")
    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
    assert result.code == 0, result.stderr
    [cleaned] = [c for c in result.json["cleaned"] if c["object"] == "overlayfs/snapshots/998"]
    assert "left out of the new root; the source keeps it" in cleaned["reason"], cleaned
    assert (orphan / "fs" / "data" / "important.txt").read_text() == "container data"
