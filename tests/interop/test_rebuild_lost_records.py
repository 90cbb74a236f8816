"""A damaged meta.db that lost a namespace's snapshot records, on a real node: rebuild writes them
again from the snapshotter's records instead of deleting the snapshots (found by a red-team run:
one zeroed leaf, or one flipped bit in a key, made rebuild clean up every snapshot of the
namespace, the containers' writable layers included, and on a node whose layer blobs are
discarded drop 21 of its 24 images). A real containerd then starts the containers."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from pathlib import Path

import pytest

from ctrconv.bolt import _structs as S
from ctrconv.bolt.reader import BoltFile
from ctrconv.containerd.records import read_backend_snapshot, split_parents_key

pytestmark = pytest.mark.interop

META = ("io.containerd.metadata.v1.bolt", "meta.db")
SNAPSHOTS = "io.containerd.snapshotter.v1.overlayfs/snapshots"


def _zero_snapshot_records(root: Path, namespace: str) -> int:
    """Zero the leaf page of ``v1/<namespace>/snapshots/overlayfs`` (the bucket must own one)."""
    return _zero_leaf(root, namespace.encode(), b"snapshots", b"overlayfs")


def _zero_leaf(root: Path, *bucket_path: bytes) -> int:
    """Zero the (first) leaf page of the bucket ``v1/<bucket_path>`` (it must own one)."""
    path = root.joinpath(*META)
    with BoltFile(path) as db:
        bucket = db.bucket(b"v1", *bucket_path)
        assert bucket is not None and bucket.inline is None, "the fixture's records are inline"
        leaf = next(p.pgid for p in bucket.pages() if p.flags == S.LEAF_PAGE)
        page_size = db.page_size
    with open(path, "r+b") as f:
        f.seek(leaf * page_size)
        f.write(bytes(page_size))
    return leaf


def _snapshot_dirs(root: Path) -> set[str]:
    return {p.name for p in (root / SNAPSHOTS).iterdir()}


@pytest.mark.parametrize("how", ["in-place", "output"])
def test_lost_snapshot_records_are_restored_and_the_containers_start(how, realnode_set_for, cli, tmp_path,
                                                                     private_containerd):
    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    healthy = cli("ls", "--root", str(root), "-A", "--json").json["images"]
    dirs = _snapshot_dirs(root)
    _zero_snapshot_records(root, "default")
    assert cli("verify", "--root", str(root), "-A", "-q").code == 1

    target = root if how == "in-place" else tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-q", "--json", *(["-o", str(target)] if how == "output" else []))
    assert result.code == 0, result.stderr
    report = result.json
    restored = {r["object"] for r in report["restored"]}
    containers = {name: c for name, c in corpus.info["roots"]["node"]["containers"].items() if c["namespace"] == "default"}
    for name, container in containers.items():
        assert f"snapshot default/overlayfs/{container['snapshot_key']}" in restored, restored
    assert not [c for c in report["cleaned"] if c["kind"] == "backend-snapshot"], report["cleaned"]
    assert report["damage_found"]
    assert dirs <= _snapshot_dirs(target)  # every directory kept
    verify = cli("verify", "--root", str(target), "-A", "-q", "--json")
    assert verify.code == 0, json.dumps(verify.json["problems"])[:2000]
    assert cli("ls", "--root", str(target), "-A", "--json").json["images"] == healthy
    again = cli("rebuild", "--root", str(target), "-q")
    assert again.code == 0 and "nothing to repair" in again.stdout, again.stdout

    daemon = private_containerd(root=target)
    for name in containers:
        started = daemon.ctr("tasks", "start", "-d", name, check=False, timeout=120)
        assert started.returncode == 0, (name, started.stderr)
        daemon.ctr("tasks", "delete", "--force", name, check=False, timeout=120)  # (runc state: gone)
    daemon.stop()


def test_a_discarded_layers_node_that_lost_its_snapshot_records_keeps_every_image(realnode_set_for, cli, tmp_path):
    """The images of a node whose layer blobs are discarded run from their snapshots only:
    cleaning those up lost 21 of its 24 images (the blobs to unpack them again are gone)."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for("1.6")
    root = corpus.copy_root(DISCARDED, tmp_path / "node")
    healthy = cli("ls", "--root", str(root), "-A", "--json").json["images"]
    dirs = _snapshot_dirs(root)
    _zero_snapshot_records(root, "k8s.io")
    result = cli("rebuild", "--root", str(root), "-q", "--json", "-o", str(tmp_path / "new"))
    assert result.code == 0, result.stderr
    assert not result.json["dropped"], result.json["dropped"]
    assert _snapshot_dirs(tmp_path / "new") == dirs
    assert cli("ls", "--root", str(tmp_path / "new"), "-A", "--json").json["images"] == healthy
    assert cli("verify", "--root", str(tmp_path / "new"), "-A", "-q").code == 0


@pytest.mark.parametrize("line", ["1.6", "1.7"])
def test_rebuilding_a_healthy_node_changes_no_namespace(line, realnode_set_for, cli, tmp_path):
    """A namespace that pulled one platform of an index (``other``) keeps what it had: the
    re-import took the other platform's manifest, on disk for another namespace, as its own,
    and ``ctr images check`` went from ``unavailable`` to ``incomplete`` (2.x records those
    manifests itself)."""
    corpus = realnode_set_for(line)
    new = tmp_path / "new"
    assert cli("rebuild", "--root", str(corpus.root("node")), "-o", str(new), "-q").code == 0
    assert (cli("ls", "--root", str(new), "-A", "--json").json["images"]
            == cli("ls", "--root", str(corpus.root("node")), "-A", "--json").json["images"])
    assert _content_records(new, "other") == _content_records(corpus.root("node"), "other")


def _content_records(root: Path, namespace: str) -> set[str]:
    with BoltFile(root.joinpath(*META)) as db:
        blobs = db.bucket(b"v1", namespace.encode(), b"content", b"blob")
        return {key.decode() for key, _ in blobs.buckets()} if blobs is not None else set()


def test_a_snapshot_that_is_not_made_again_leaves_no_label_behind(realnode_set_for, cli, tmp_path):
    """``other`` pulled (and unpacked) only the foreign platform of an index; its snapshot lost,
    the re-import does not unpack a foreign platform again, so its config's GC label pointed at
    nothing: the rebuilt root failed ``verify`` and a second rebuild changed nothing. The label
    goes (found by a red-team run); the rebuild is then clean and a second one writes nothing."""
    from ctrconv.containerd.metadata import SnapshotterDB

    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    with BoltFile(root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db") as db:
        top = max((s for s in SnapshotterDB(db).snapshots() if s.key.startswith("other/")), key=lambda s: s.id)
    shutil.rmtree(root / SNAPSHOTS / str(top.id) / "fs")
    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    assert any(c["kind"] == "gc-label" and c["object"].startswith("label containerd.io/gc.ref.snapshot.overlayfs")
               for c in result.json["cleaned"]), result.json["cleaned"]
    verify = cli("verify", "--root", str(new), "-A", "-q", "--json")
    assert verify.code == 0, json.dumps(verify.json["problems"])[:2000]
    again = cli("rebuild", "--root", str(new), "-q")
    assert again.code == 0 and "verified clean, nothing to repair" in again.stdout, again.stdout
    assert not list(new.rglob("*.bak-*"))


def _zero_page(path: Path, page: int, page_size: int) -> None:
    """One page of a bolt file zeroed, header and all (a lost write, a bad sector)."""
    with open(path, "r+b") as f:
        f.seek(page * page_size)
        f.write(bytes(page_size))


def _containers(root: Path, namespace: str) -> set[str]:
    with BoltFile(root.joinpath(*META)) as db:
        bucket = db.bucket(b"v1", namespace.encode(), b"containers")
        return {key.decode() for key, _ in bucket.buckets()} if bucket is not None else set()


def test_a_container_whose_snapshot_is_gone_is_a_problem_and_rebuild_drops_it(realnode_set_for, cli, tmp_path):
    """containerd's GC never removes a container, so nothing said that one could no longer
    start: ``verify`` called such a root clean (found by a red-team run). Now verify names it,
    and rebuild, which cannot make a writable layer again, drops it and says so."""
    from ctrconv.containerd.metadata import SnapshotterDB
    from support.damage import _rewrite_meta

    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    _rewrite_meta(root, lambda t: t.bucket(b"v1", b"default", b"snapshots", b"overlayfs").entries.pop(b"rn-created"))
    verify = cli("verify", "--root", str(root), "-A", "--json")
    assert verify.code == 1
    assert [p["object"] for p in verify.json["problems"] if p["kind"] == "missing-container-snapshot"] == [
        "container default/rn-created"], verify.json["problems"]

    root = corpus.copy_root("node", tmp_path / "node2")
    with BoltFile(root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db") as db:
        [active] = [s for s in SnapshotterDB(db).snapshots() if s.key.endswith("/rn-created")]
    shutil.rmtree(root / SNAPSHOTS / str(active.id) / "fs")
    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    assert {d["object"] for d in result.json["dropped"] if d["kind"] == "container"} == {"container default/rn-created"}
    assert _containers(new, "default") == _containers(root, "default") - {"rn-created"}
    assert cli("verify", "--root", str(new), "-A", "-q").code == 0


def _names(cli, root: Path, namespace: str) -> set[str]:
    return set(cli("ls", "--root", str(root), "-n", namespace, "-q").stdout.split())


def test_lost_image_records_come_back_with_their_namespace_s_names(realnode_set_for, cli, tmp_path):
    """Images re-derived from content get the names their namespace's conventions give them
    (found by a red-team run): in ``k8s.io`` the CRI names (tag, ``repo@digest``,
    ``sha256:<image id>``, labelled ``managed``), so pods naming an image by digest find it;
    in a ``ctr`` namespace the tags of other namespaces, never their CRI aliases. Without a tag
    anywhere, the repository a pull recorded names it (``repo@digest``), not a placeholder."""
    corpus = realnode_set_for("1.6")
    source = corpus.root("node")
    for namespace in ("k8s.io", "default"):
        root = corpus.copy_root("node", tmp_path / namespace)
        _zero_leaf(root, namespace.encode(), b"images")
        new = tmp_path / f"{namespace}-new"
        result = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
        assert result.code == 0, result.stderr
        before, after = _names(cli, source, namespace), _names(cli, new, namespace)
        assert not [n for n in after if n.startswith("recovered.ctrconv.invalid/")], after
        if namespace == "default":
            assert after == before
            continue
        # every tag another namespace still has, and every image's CRI aliases, come back;
        # a tag no other record holds is lost (only a digest name says what the image is)
        elsewhere = _names(cli, source, "default") | _names(cli, source, "other")
        assert {n for n in before if "@" in n or n.startswith("sha256:") or n in elsewhere} <= after, before - after
        assert after <= before
        records = cli("ls", "--root", str(new), "-n", namespace, "--json").json["images"]
        assert all(i["complete"] for i in records)
        assert cli("verify", "--root", str(new), "-A", "-q").code == 0
    with BoltFile(new.joinpath(*META)) as db:
        images = db.bucket(b"v1", b"k8s.io", b"images")
        labels = {key: images.bucket(key).bucket(b"labels") for key, _ in images.buckets()}
        assert all(b is not None and b.get(b"io.cri-containerd.image") == b"managed" for b in labels.values())


def test_a_damaged_containers_leaf_is_that_bucket_s_problem_only(realnode_set_for, cli, tmp_path):
    """One zeroed leaf of ``v1/default/containers``: verify read no image and no snapshot and
    called every blob garbage (the whole meta.db "unreadable", found by a red-team run); it is
    now that bucket's problem, and everything else is still verified."""
    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    _zero_leaf(root, b"default", b"containers")
    verify = cli("verify", "--root", str(root), "-A", "--json")
    assert verify.code == 1
    kinds = {p["kind"] for p in verify.json["problems"]}
    assert kinds == {"bolt", "unreadable-record"}, verify.json["problems"]
    assert verify.json["stats"]["images"] == len(cli("ls", "--root", str(root), "-A", "-q").stdout.split())
    assert not [i for i in verify.json["info"] if i["kind"] == "unreferenced-blob"]


@pytest.mark.parametrize("how", ["in-place", "output"])
def test_a_container_s_writable_layer_survives_a_lost_image_layer_below_it(how, realnode_set_for, cli, tmp_path,
                                                                           private_containerd):
    """Only the directory of an image layer below a stopped container was lost: the re-import
    unpacks that layer again from its blob, and the container's own writable snapshot, whole,
    is attached to it again. rebuild deleted the container and (in place) its writable layer
    (found by a red-team run, 1.6 to 2.x)."""
    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    active, files = _lose_the_layer_below_a_stopped_container(root)

    target = root if how == "in-place" else tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-q", "--json", *(["-o", str(target)] if how == "output" else []))
    assert result.code == 0, result.stderr
    assert not [d for d in result.json["dropped"] if d["kind"] == "container"], result.json["dropped"]
    assert "snapshot default/overlayfs/rn-stopped" in {r["object"] for r in result.json["restored"]}
    assert _containers(target, "default") == _containers(root if how == "output" else target, "default")
    kept = target / SNAPSHOTS / str(active.id) / "fs"
    assert sorted(p.relative_to(kept) for p in kept.rglob("*")) == files
    _assert_the_container_starts(target, cli, private_containerd)


def _lose_the_layer_below_a_stopped_container(root: Path):
    """Remove the directory of the image layer right below the stopped container ``rn-stopped``;
    returns its writable snapshot and the paths its tree holds."""
    from ctrconv.containerd.metadata import SnapshotterDB

    with BoltFile(root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db") as db:
        snaps = {s.key: s for s in SnapshotterDB(db).snapshots()}
    [active] = [s for s in snaps.values() if s.key.endswith("/rn-stopped")]
    upper = root / SNAPSHOTS / str(active.id) / "fs"
    files = sorted(p.relative_to(upper) for p in upper.rglob("*"))
    shutil.rmtree(root / SNAPSHOTS / str(snaps[active.parent].id))
    return active, files


def _assert_the_container_starts(target: Path, cli, private_containerd) -> None:
    verify = cli("verify", "--root", str(target), "-A", "-q", "--json")
    assert verify.code == 0, json.dumps(verify.json["problems"])[:2000]
    again = cli("rebuild", "--root", str(target), "-q")
    assert again.code == 0 and "nothing to repair" in again.stdout, again.stdout

    daemon = private_containerd(root=target)
    started = daemon.ctr("tasks", "start", "-d", "rn-stopped", check=False, timeout=120)
    assert started.returncode == 0, started.stderr
    daemon.ctr("tasks", "delete", "--force", "rn-stopped", check=False, timeout=120)
    daemon.stop()


@pytest.mark.parametrize("killed_in", ["import_groups", "settle_rebuilt_root"])
def test_a_rebuild_killed_before_its_last_step_keeps_the_container_s_writable_layer(killed_in, realnode_set_for, cli,
                                                                                      tmp_path, private_containerd):
    """An in-place rebuild killed after it wrote the bolt files but before the writable snapshot
    kept aside was attached again (before or after the re-import): the next rebuild finds it
    again and the container starts with its data. The kept-aside records were out of both
    written files, so the second run cleaned the directory up as a leftover."""
    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    active, files = _lose_the_layer_below_a_stopped_container(root)

    pid = os.fork()
    if pid == 0:  # the child rebuilds and is killed (SIGKILL: no clean-up runs) at that step
        try:
            from ctrconv.recovery import rebuild

            setattr(rebuild, killed_in, lambda *_a, **_k: os.kill(os.getpid(), signal.SIGKILL))
            rebuild.rebuild_root(root)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status

    result = cli("rebuild", "--root", str(root), "-q", "--json")
    assert result.code == 0, result.stderr
    assert not [d for d in result.json["dropped"] if d["kind"] == "container"], result.json["dropped"]
    assert "snapshot default/overlayfs/rn-stopped" in {r["object"] for r in result.json["restored"]}
    kept = root / SNAPSHOTS / str(active.id) / "fs"
    assert sorted(p.relative_to(kept) for p in kept.rglob("*")) == files
    _assert_the_container_starts(root, cli, private_containerd)


def test_a_writable_layer_whose_image_layers_are_gone_is_quarantined_never_deleted(realnode_set_for, cli, tmp_path):
    """The image layer below a stopped container lost with every layer blob: nothing makes the
    chain again, so the container cannot start and its record goes; in place its writable
    layer's directory is moved to the quarantine, not deleted."""
    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    active, files = _lose_the_layer_below_a_stopped_container(root)
    for blob in (root / "io.containerd.content.v1.content" / "blobs" / "sha256").iterdir():
        blob.unlink()
    result = cli("rebuild", "--root", str(root), "-q", "--json")
    assert result.code == 0, result.stderr
    assert "container default/rn-stopped" in {d["object"] for d in result.json["dropped"] if d["kind"] == "container"}
    [kept] = [Path(b) for b in result.json["backups"] if b.endswith(f"/snapshots/overlayfs/{active.id}")]
    assert sorted(p.relative_to(kept / "fs") for p in (kept / "fs").rglob("*")) == files
    assert not (root / SNAPSHOTS / str(active.id)).exists()
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0


@pytest.mark.parametrize("line", ["1.6", "1.7"])
def test_snapshot_dirs_whose_records_damage_lost_are_quarantined_never_deleted(line, realnode_set_for, cli, tmp_path):
    """The snapshotter's metadata.db cut mid-file (meta.db intact): the in-place rebuild deleted
    every directory no surviving record named, a stopped container's writable layer among them
    (found by a red-team run). With either bolt file damaged such a directory goes to the
    quarantine, unless its record is read back; nothing under snapshots/ is deleted."""
    from ctrconv.containerd.metadata import SnapshotterDB

    corpus = realnode_set_for(line)
    root = corpus.copy_root("node", tmp_path / "node")
    db_path = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    with BoltFile(db_path) as db:
        [active] = [s for s in SnapshotterDB(db).snapshots() if s.key.endswith("/rn-stopped")]
        cut = (db.meta.pgid // 2) * db.page_size + 1000
    (root / SNAPSHOTS / str(active.id) / "fs" / "important-data.txt").write_text("the container's own data\n")
    before = {str(p.relative_to(root / SNAPSHOTS)) for p in (root / SNAPSHOTS).rglob("*")}
    os.truncate(db_path, cut)

    result = cli("rebuild", "--root", str(root), "-q", "--json")
    assert result.code == 0, result.stderr
    quarantined = [Path(b) for b in result.json["backups"] if "/snapshots/overlayfs/" in b]
    data = Path("fs") / "important-data.txt"
    if (root / SNAPSHOTS / str(active.id) / data).is_file():
        # (its record was read back from the pages the cut left: the container keeps it)
        assert "rn-stopped" in _containers(root, "default")
    else:
        assert any(q.name == str(active.id) and (q / data).is_file() for q in quarantined), result.json["backups"]
    after = {str(p.relative_to(root / SNAPSHOTS)) for p in (root / SNAPSHOTS).rglob("*")}
    for q in quarantined:
        after |= {str(Path(q.name) / p.relative_to(q)) for p in q.rglob("*")} | {q.name}
    assert before <= after, sorted(before - after)[:10]
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_a_lost_snapshotter_db_leaves_no_directory_for_containerd_to_delete(line, realnode_set_for, cli, tmp_path):
    """The overlayfs metadata.db gone (meta.db whole): rebuild dropped the containers, unpacked
    the images again under new ids and left every old directory in snapshots/, named by no
    db, where containerd's cleanup deletes them: the containers' writable layers with them
    (found by a red-team run). Every old directory goes to the quarantine."""
    from ctrconv.containerd.metadata import SnapshotterDB

    corpus = realnode_set_for(line)
    root = corpus.copy_root("node", tmp_path / "node")
    db_path = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    with BoltFile(db_path) as db:
        [active] = [s for s in SnapshotterDB(db).snapshots() if s.key.endswith("/rn-stopped")]
    (root / SNAPSHOTS / str(active.id) / "fs" / "important-data.txt").write_text("the container's own data\n")
    old_dirs = set(os.listdir(root / SNAPSHOTS))
    db_path.unlink()

    result = cli("rebuild", "--root", str(root), "-q", "--json")
    assert result.code == 0, result.stderr
    quarantined = {Path(b).name: Path(b) for b in result.json["backups"] if "/snapshots/overlayfs/" in b}
    assert set(quarantined) == old_dirs
    assert (quarantined[str(active.id)] / "fs" / "important-data.txt").read_text() == "the container's own data\n"
    with BoltFile(db_path) as db:
        named = {str(s.id) for s in SnapshotterDB(db).snapshots()}
    assert set(os.listdir(root / SNAPSHOTS)) == named  # only what the new db names
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0


def test_an_in_place_rebuild_deletes_no_snapshot_directory(realnode_set_for, cli, tmp_path):
    """A directory no record names, with both bolt files whole, is most likely garbage; but a
    rebuild killed after writing them leaves whole files without the records the damage took,
    and the next run deleted a container's writable layer the first would have kept aside
    (found by a red-team run). In place nothing is deleted: it goes to the quarantine."""
    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    stray = root / SNAPSHOTS / "9999"
    (stray / "fs").mkdir(parents=True)
    (stray / "fs" / "data").write_text("not garbage after all\n")
    (root / SNAPSHOTS / "9998").write_text("a file where a directory goes\n")
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    os.truncate(meta, meta.stat().st_size - 4096)  # something to repair

    result = cli("rebuild", "--root", str(root), "-q", "--json")
    assert result.code == 0, result.stderr
    moved = {Path(b).name: Path(b) for b in result.json["backups"] if "/snapshots/overlayfs/" in b}
    assert {"9999", "9998"} <= set(moved)
    assert (moved["9999"] / "fs" / "data").read_text() == "not garbage after all\n"
    assert not stray.exists() and not (root / SNAPSHOTS / "9998").exists()


@pytest.mark.parametrize("line", ["1.7", "2.x"])
def test_a_meta_db_cut_short_keeps_its_namespaces(line, realnode_set_for, cli, tmp_path):
    """meta.db truncated (a copy or backup cut short) with its last pages the root and ``v1``:
    rebuild took one namespace's page for the root, kept at most one namespace and lost
    ``k8s.io`` (found by a red-team run). The namespace pages that survive are assembled into
    a ``v1`` again, each named by its snapshot records."""
    from ctrconv.bolt.reader import BoltFile as Bolt

    corpus = realnode_set_for(line)
    root = corpus.copy_root("node", tmp_path / "node")
    before = cli("ls", "--root", str(root), "-A", "--json").json["images"]
    meta = root.joinpath(*META)
    with Bolt(meta) as db:
        hwm, page_size, top = db.meta.pgid, db.page_size, db.meta.root
    assert top >= hwm - 20, "the root is among the last pages (a commit writes it last)"
    os.truncate(meta, (hwm - 20) * page_size + 2048)

    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
    assert result.code == 0, result.stderr
    after = cli("ls", "--root", str(tmp_path / "new"), "-A", "--json").json["images"]
    for namespace in ("default", "k8s.io"):
        # (records on the pages cut off are lost: each namespace keeps the rest of its names)
        want = {(i["name"], i["digest"]) for i in before if i["namespace"] == namespace}
        got = {(i["name"], i["digest"]) for i in after if i["namespace"] == namespace}
        assert len(want & got) >= 0.8 * len(want), (namespace, sorted(want - got)[:5])
    assert cli("verify", "--root", str(tmp_path / "new"), "-A", "-q").code == 0


def test_a_rebuild_removes_the_temp_a_killed_bolt_write_left(realnode_set_for, cli, tmp_path):
    """A rebuild killed right before its last meta.db rename leaves ``.meta.db.<x>.tmp`` (a
    whole copy); the re-run, finding the root healthy, left it for the next import (a red-team
    kill -9 run). It goes under the writers' lock, healthy root or not."""
    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    bolt = root / "io.containerd.metadata.v1.bolt"
    stale = [bolt / ".meta.db.abc123.tmp", root / "io.containerd.snapshotter.v1.overlayfs" / ".metadata.db.x.tmp"]
    for path in stale:
        path.write_bytes(b"a killed write's copy")
    keep = bolt / "meta.db.tmp-not-ours"
    keep.write_bytes(b"not ctrconv's")
    result = cli("rebuild", "--root", str(root), "-q")
    assert result.code == 0, result.stderr
    assert not any(p.exists() for p in stale) and keep.exists()


def _rebuild_killed_at(root: Path, step: str) -> None:
    """An in-place rebuild of ``root`` in a child killed (SIGKILL) when it reaches ``step``."""
    pid = os.fork()
    if pid == 0:
        try:
            from ctrconv.recovery import rebuild

            setattr(rebuild, step, lambda *_a, **_k: os.kill(os.getpid(), signal.SIGKILL))
            rebuild.rebuild_root(root)
        except BaseException:
            import traceback

            (root.parent / "child-error.txt").write_text(traceback.format_exc())
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    error = root.parent / "child-error.txt"
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, error.read_text() if error.exists() else status


def _outcome(cli, root: Path) -> tuple:
    images = cli("ls", "--root", str(root), "-A", "--json").json["images"]
    from ctrconv.containerd.metadata import MetadataDB

    with BoltFile(root / "io.containerd.metadata.v1.bolt" / "meta.db") as db:
        meta = MetadataDB(db)
        records = {ns: sorted(meta.content_digests(ns)) for ns in meta.namespaces()}
    return sorted((i["namespace"], i["name"], i["digest"], i.get("complete")) for i in images), records


@pytest.mark.parametrize("killed_in", ["import_groups", "settle_rebuilt_root"])
def test_a_rebuild_killed_after_its_first_write_is_taken_up_again_by_the_next(killed_in, realnode_set_for, cli,
                                                                              tmp_path):
    """meta.db cut short (a namespace lost): a rebuild killed after it wrote the salvaged bolt
    files left files that read whole, and the re-run repaired less than an uninterrupted run (an
    image not re-derived or unpacked, blobs of the lost namespace left without records for the
    GC: a red-team kill -9 run). The damage it found is kept in the root until it finishes."""
    corpus = realnode_set_for("1.6")
    whole, killed = corpus.copy_root("node", tmp_path / "whole"), corpus.copy_root("node", tmp_path / "killed")
    for root in (whole, killed):
        meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
        with BoltFile(meta) as db:
            cut = db.meta.pgid * 6 // 10 * db.page_size  # the newest pages (the root among them) lost
        os.truncate(meta, cut)
    first = cli("rebuild", "--root", str(whole), "-q", "--json")
    assert first.code == 0 and not first.json["healthy"], first.stderr
    _rebuild_killed_at(killed, killed_in)
    assert (killed / "ctrconv-rebuild.json").is_file()
    rerun = cli("rebuild", "--root", str(killed), "-q", "--json")
    assert rerun.code == 0, rerun.stderr
    assert "interrupted-rebuild" in {c["kind"] for c in rerun.json["cleaned"]}
    assert not (killed / "ctrconv-rebuild.json").exists() and not (whole / "ctrconv-rebuild.json").exists()
    assert _outcome(cli, killed) == _outcome(cli, whole)
    assert cli("verify", "--root", str(killed), "-A", "-q").code == 0


def test_a_rebuild_that_fails_after_it_began_writing_says_so_and_verify_too(realnode_set_for, cli, tmp_path,
                                                                             monkeypatch):
    """A rebuild in place that fails after its first write (a disk that fills during the
    unpack, say) left a root worse than the damaged one with only the cause's message, and
    containerd started on it deletes blobs the rebuild had not recorded yet (a red-team run).
    The error says the root was changed and to run the rebuild again; verify says so too, until
    a rebuild finishes."""
    from ctrconv.errors import CtrconvError
    from ctrconv.recovery import rebuild

    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    with BoltFile(meta) as db:
        cut = db.meta.pgid * 6 // 10 * db.page_size
    os.truncate(meta, cut)

    def fails(*_a, **_k):
        raise CtrconvError("layer entry 'big' needs 2147483648 bytes but only 1071308800 are free")

    with monkeypatch.context() as m:
        m.setattr(rebuild, "import_groups", fails)
        failed = cli("rebuild", "--root", str(root))
    assert failed.code == 1
    [line] = failed.stderr.strip().splitlines()
    assert "are free; the rebuild stopped after it began changing" in line and "run it again" in line, line
    checked = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert checked.code == 1 and "interrupted-rebuild" in {p["kind"] for p in checked.json["problems"]}
    assert cli("rebuild", "--root", str(root), "-q").code == 0
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0


def test_a_writable_layer_whose_container_record_was_lost_survives_containerd_s_gc(realnode_set_for, cli, tmp_path,
                                                                                   private_containerd):
    """The page holding a container's record lost (zeroed): the container's writable snapshot
    kept its record, which nothing held any more, and containerd's first GC deleted it with
    the container's data (a red-team run, which lost the page of a namespace's container
    records: those now come back named by their snapshot keys). It is labelled gc.root now."""
    from ctrconv.containerd.metadata import SnapshotterDB

    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    with BoltFile(meta) as db:
        record = db.bucket(b"v1", b"default", b"containers", b"rn-stopped")
        assert record is not None and record.inline is None, "a container record is a page of its own"
        page = record.root
        page_size = db.page_size
    with BoltFile(root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db") as db:
        [active] = [s for s in SnapshotterDB(db).snapshots() if s.key.endswith("/rn-stopped")]
    data = root / SNAPSHOTS / str(active.id) / "fs" / "important-data.txt"
    data.write_text("the container's own data\n")
    _zero_page(meta, page, page_size)

    result = cli("rebuild", "--root", str(root), "-q", "--json")
    assert result.code == 0, result.stderr
    held = [r for r in result.json["restored"] if r["object"] == "snapshot default/overlayfs/rn-stopped"]
    assert held and "containerd.io/gc.root" in held[0]["reason"], result.json["restored"]
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0
    daemon = private_containerd(root=root)
    daemon.force_gc("default")
    daemon.stop()
    daemon = private_containerd(root=root)
    assert "rn-stopped" in daemon.ctr("snapshots", "ls").stdout
    daemon.stop()
    assert data.read_text() == "the container's own data\n"


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_namespaces_only_the_snapshotter_still_names_come_back(line, realnode_set_for, cli, tmp_path,
                                                                private_containerd):
    from support.versions import bin_dir_for

    """meta.db cut to its first pages (the ``v1`` bucket and every namespace with it lost), the
    overlayfs metadata.db whole: every snapshot record was dropped with its namespace (only
    ``default`` came back, with images re-derived from blobs; ``k8s.io``, ``other`` and the
    containers' writable layers were gone from the result: a red-team run). The snapshotter's
    keys ``<ns>/<seq>/<key>`` name the namespaces: they come back with their snapshots, their
    images re-derived there, the writable layers held for containerd's GC."""
    root = realnode_set_for(line).copy_root("node", tmp_path / "node")
    snapshotter_keys = cli("dump", str(root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db")).stdout
    namespaces_before = {ns for ns in ("default", "k8s.io", "other") if f"{ns}/" in snapshotter_keys}
    assert namespaces_before == {"default", "k8s.io", "other"}
    meta = root.joinpath(*META)
    os.truncate(meta, 6 * 4096)
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    restored = {r["object"] for r in result.json["restored"] if r["kind"] == "namespace"}
    assert {"k8s.io", "other"} <= restored, result.json["restored"]
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0
    daemon = private_containerd(root=out, binary_dir=None if line == "1.6" else str(bin_dir_for(line)))
    for namespace in ("k8s.io", "other"):
        assert daemon.ctr("snapshots", "ls", namespace=namespace).stdout.count("\n") > 1, namespace
        assert daemon.image_names(namespace), namespace
    snapshots = {ns: daemon.ctr("snapshots", "ls", namespace=ns).stdout for ns in ("default", "k8s.io", "other")}
    assert "rn-stopped" in snapshots["default"] and "rn-created" in snapshots["default"]
    daemon.force_gc("default")
    daemon.stop()
    daemon.start()
    assert {ns: daemon.ctr("snapshots", "ls", namespace=ns).stdout for ns in snapshots} == snapshots
    daemon.stop()


@pytest.mark.parametrize("image", ["index", "nested"])
def test_the_manifests_of_an_image_whose_index_blob_was_lost_stay_images(image, realnode_set_for, cli, tmp_path,
                                                                         private_containerd):
    """An image's index blob left empty (the classic ext4 crash artefact): rebuild dropped the
    image in every namespace though its content record still listed the whole manifests, and
    containerd's GC then deleted them, their layers and their snapshot (a red-team run). Each
    whole manifest stays an image ``repo@sha256:<manifest>``, as recovery.md says; so does a
    whole nested index below it (recorded as ``gc.ref.content.0``: a second red-team run)."""
    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    images = cli("ls", "--root", str(root), "-n", "default", "--json").json["images"]
    [index] = [i for i in images if i["name"].endswith(f"/realnode/{image}:1")]
    blob = root / "io.containerd.content.v1.content" / "blobs" / "sha256" / index["digest"].split(":")[1]
    blob.chmod(0o644)
    blob.write_bytes(b"")
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    repository = index["name"].rsplit(":", 1)[0]
    kept = [i for i in cli("ls", "--root", str(out), "-n", "default", "--json").json["images"]
            if i["name"].startswith(repository + "@sha256:")]
    assert kept and all(i["complete"] for i in kept), kept
    daemon = private_containerd(root=out)
    before = daemon.ctr("snapshots", "ls").stdout, daemon.ctr("content", "ls", "-q").stdout
    daemon.force_gc("default")
    daemon.stop()
    daemon.start()
    assert (daemon.ctr("snapshots", "ls").stdout, daemon.ctr("content", "ls", "-q").stdout) == before
    assert all(row.complete for row in daemon.images_check("default"))
    daemon.stop()


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_an_image_whose_record_body_was_lost_keeps_its_name(line, realnode_set_for, cli, tmp_path):
    """A meta.db page that held one image record's body (its own page: target, labels) zeroed:
    the name survived in its parent page, and the image was dropped although its name held its
    digest (``repo@sha256:...``) or the same name had its target in another namespace (a
    red-team run: 24 single pages of a 2.x meta.db each cost one k8s.io name). The target
    comes back from either."""
    root = realnode_set_for(line).copy_root("node", tmp_path / "node")
    before = {(i["namespace"], i["name"]): i["digest"] for i in cli("ls", "--root", str(root), "-A", "--json").json["images"]}
    meta = root.joinpath(*META)
    zeroed: list[str] = []
    with BoltFile(meta) as db:
        page_size = db.page_size
        images = db.bucket(b"v1", b"k8s.io", b"images")
        own = {key: bucket.root for key, bucket in images.buckets() if bucket.inline is None}
    by_kind = {"digest": [k for k in own if b"@sha256:" in k],
               "elsewhere": [k for k in own if b"@" not in k and ("default", k.decode()) in before]}
    assert by_kind["digest"] and by_kind["elsewhere"], own
    with open(meta, "r+b") as f:
        for key in (by_kind["digest"][0], by_kind["elsewhere"][0]):
            f.seek(own[key] * page_size)
            f.write(bytes(page_size))
            zeroed.append(key.decode())
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    after = {(i["namespace"], i["name"]): i["digest"] for i in cli("ls", "--root", str(out), "-A", "--json").json["images"]}
    for name in zeroed:
        assert after.get(("k8s.io", name)) == before[("k8s.io", name)], (name, result.json["restored"])
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0


def test_a_regenerating_rebuild_killed_after_its_first_write_leaves_nothing_for_gc(realnode_set_for, cli, tmp_path,
                                                                                  private_containerd):
    """``rebuild --regenerate-layers`` killed after its first commit (a power cut), then
    containerd started (at boot) before the re-run: the retargeted images' new manifests had
    content records without GC labels, and containerd's GC deleted their configs, layers and
    snapshots; the re-run then dropped 6 of 7 images of ``default`` (a red-team run). New
    manifests are written with their labels: the images survive the GC between."""
    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    before = {(i["namespace"], i["name"]) for i in cli("ls", "--root", str(root), "-A", "--json").json["images"]}
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    shared = max(blobs.iterdir(), key=lambda p: p.stat().st_size)  # the layer every image shares
    shared.chmod(0o644)
    shared.write_bytes(shared.read_bytes()[: shared.stat().st_size // 2])
    pid = os.fork()
    if pid == 0:
        try:
            from ctrconv.recovery import rebuild

            rebuild.import_groups = lambda *_a, **_k: os.kill(os.getpid(), signal.SIGKILL)
            rebuild.rebuild_root(root, regenerate_layers=True)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), status
    daemon = private_containerd(root=root)  # its start-up GC runs on what the killed rebuild left
    daemon.force_gc("default")
    daemon.stop()
    rerun = cli("rebuild", "--root", str(root), "--regenerate-layers", "-q")
    assert rerun.code == 0, rerun.stderr
    after = {(i["namespace"], i["name"]) for i in cli("ls", "--root", str(root), "-A", "--json").json["images"]
             if i["complete"] or i["status"] != "incomplete"}
    assert {n for n in before if n[0] == "default"} <= after, sorted(before - after)
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_a_zeroed_v1_page_loses_no_namespace_record(realnode_set_for, cli, tmp_path, line):
    """The page of meta.db's ``v1`` bucket zeroed (header and all), every page below it whole
    (both metas share the root of the last commit): the namespaces' pages are orphans whose
    names went with it, and every image name and both containers were dropped (the snapshots
    came back from the snapshotter's keys; red-team runs). They are named from their records,
    as for a file cut short, and nothing is lost: with 1.6's persisted free list the orphans
    are known for what they are; 1.7+ persist none, and the stale copies of earlier commits
    that lie among them (a stale namespace page pointing at pages reused since) are told from
    the live pages by their shape, their damage and their newest record."""
    root = realnode_set_for(line).copy_root("node", tmp_path / "node")
    before = {(i["namespace"], i["name"], i["digest"]) for i in cli("ls", "--root", str(root), "-A", "--json").json["images"]}
    meta = root.joinpath(*META)
    with BoltFile(meta) as db:
        page, page_size = db.bucket(b"v1").root, db.page_size
    assert page, "v1 has a page of its own"
    _zero_page(meta, page, page_size)
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(out.parent / "node"), "-o", str(out), "-q")
    assert result.code == 0, result.stderr
    after = {(i["namespace"], i["name"], i["digest"]) for i in cli("ls", "--root", str(out), "-A", "--json").json["images"]}
    assert before <= after, sorted(before - after)[:5]
    assert _containers(out, "default") == {"rn-created", "rn-stopped"}
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0


@pytest.mark.parametrize("lost", ["root", "v1"])
@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_a_zeroed_top_page_of_the_snapshotter_db_keeps_the_newest_container(realnode_set_for, cli, tmp_path,
                                                                             line, lost):
    """The newest commit's root page (or its ``v1`` page) of the overlayfs metadata.db zeroed,
    every page below it whole: the older meta's tree was used and the container created by the
    last commit lost its snapshot record, so rebuild dropped it (red-team runs). The newest
    tree's pages are found by scanning (a snapshotter's ``v1`` holds no version key), or the
    lost ``v1``'s ``snapshots`` page is read back (its ``parents`` index is made again), and
    every container keeps its writable layer."""
    root = realnode_set_for(line).copy_root("node", tmp_path / "node")
    backend = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    with BoltFile(backend) as db:
        page = db.meta.root if lost == "root" else db.bucket(b"v1").root  # type: ignore[union-attr]
        page_size = db.page_size
    assert page, "the page is one of its own"
    _zero_page(backend, page, page_size)
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q")
    assert result.code == 0, result.stderr
    assert "dropped" not in result.stdout, result.stdout
    assert _containers(out, "default") == {"rn-created", "rn-stopped"}
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0


@pytest.mark.parametrize("line", ["1.7", "2.x"])
def test_a_zeroed_v1_page_brings_back_no_deleted_image_lease_or_namespace(line, fixture_set, cli, tmp_path):
    """Without a persisted freelist (1.7+) stale copies of namespace pages lie among the orphans
    a lost ``v1`` page leaves: a copy from before ``ctr images rm`` and a lease delete (the
    namespace's newest record, so the live copy looked older), the pages of a namespace emptied
    and removed, stale fragments named ``recovered-<page>``. They were taken (a red-team run):
    deleted images, leases and a whole namespace came back. The copy the snapshotter db and the
    blob files agree with is taken, and a copy they contradict whole is no namespace."""
    from support.daemon import PrivateContainerd
    from support.versions import bin_dir_for

    root = tmp_path / "root"
    archive = str(fixture_set.file(fixture_set.input("bbx-docker")["path"]))
    with PrivateContainerd(str(bin_dir_for(line)), root=root, workdir=tmp_path) as daemon:
        def ctr(*args: str, ns: str = "web") -> str:
            return daemon.ctr(*args, namespace=ns).stdout

        for ns in ("gone", "web"):
            ctr("images", "import", archive, ns=ns)
            for i in range(12):
                ctr("images", "tag", "docker.io/library/bbx:docker", f"registry.example/{ns}/app{i}:v1", ns=ns)
        ctr("leases", "create", "--id", "web-lease")
        for i in range(6):
            ctr("images", "rm", f"registry.example/web/app{i}:v1")
        ctr("leases", "delete", "web-lease")
        for name in ctr("images", "ls", "-q", ns="gone").split():
            ctr("images", "rm", name, ns="gone")
        for ns in ("gone", "web", "default"):
            daemon.force_gc(ns)
        ctr("namespaces", "rm", "gone", ns="default")
        truth = {ns: sorted(ctr("images", "ls", "-q", ns=ns).split()) for ns in ctr("namespaces", "ls", "-q").split()}
    assert "gone" not in truth and len(truth["web"]) == 7
    meta = root.joinpath(*META)
    with BoltFile(meta) as db:
        page, page_size = db.bucket(b"v1").root, db.page_size  # type: ignore[union-attr]
    _zero_page(meta, page, page_size)
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q")
    assert result.code == 0, result.stderr
    listed = cli("ls", "--root", str(out), "-A", "--json").json["images"]
    got: dict[str, list[str]] = {}
    for image in listed:
        got.setdefault(image["namespace"], []).append(image["name"])
    assert {ns: sorted(names) for ns, names in got.items()} == {ns: names for ns, names in truth.items() if names}
    with BoltFile(out.joinpath(*META)) as db:
        leases = {ns.decode(): [k for k, _ in b.buckets()] for ns, nsb in db.bucket(b"v1").buckets()  # type: ignore[union-attr]
                  if (b := nsb.bucket(b"leases")) is not None}
    assert not any(leases.values()), leases
    # (an empty copy of the removed namespace may come back from the older meta's tree: holding
    # nothing, it is no resurrection of data; no fragment makes a namespace of its own)
    assert not [ns for ns in leases if ns.startswith("recovered-")], sorted(leases)


@pytest.mark.parametrize("line", ["1.7", "2.x"])
def test_a_lost_snapshotter_v1_page_and_one_record_page_keep_every_container(realnode_set_for, cli, tmp_path, line):
    """The snapshotter db's ``v1`` page lost with the own page of one layer's record: the
    orphan ``snapshots`` page came back with that record empty, which disqualified it, and
    every snapshot record was dropped with every container on the node (a red-team run). The
    copy is taken, and the emptied record is written again from the ``parents`` index."""
    root = realnode_set_for(line).copy_root("node", tmp_path / "node")
    backend = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    with BoltFile(backend) as db:
        page_size = db.page_size
        snapshots = db.bucket(b"v1", b"snapshots")
        v1_page = db.bucket(b"v1").root  # type: ignore[union-attr]
        record_pages = {key: b.root for key, b in snapshots.buckets()  # type: ignore[union-attr]
                        if b.root and b"/sha256:" in key}
        parents = {split_parents_key(k)[0] for k, _ in db.bucket(b"v1", b"parents").values()}  # type: ignore[union-attr]
        ids = {key: read_backend_snapshot(b, key.decode()).id for key, b in snapshots.buckets()}  # type: ignore[union-attr]
    layer = next((k for k in sorted(record_pages) if ids[k] in parents), None)
    if layer is None:
        pytest.skip(f"{line} keeps its snapshot records inline: no record has a page of its own")
    for page in (v1_page, record_pages[layer]):
        _zero_page(backend, page, page_size)
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q")
    assert result.code == 0, result.stderr
    assert "dropped" not in result.stdout, result.stdout
    assert f"restored overlayfs/{layer.decode()}: its record's page was lost" in result.stdout, result.stdout
    assert _containers(out, "default") == {"rn-created", "rn-stopped"}
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0


@pytest.mark.parametrize("line", ["1.6", "1.7"])  # (2.x's corpus keeps its records on pages of their own)
def test_a_zeroed_leaf_of_snapshotter_records_keeps_the_containers_on_it(realnode_set_for, cli, tmp_path, line):
    """One zeroed leaf of the snapshotter db's ``snapshots`` bucket (1.6/1.7 keep several
    records inline on it): the containers whose writable snapshots, and the layers below them,
    had their records there were dropped with their data (a red-team sweep). meta.db's records
    and the ``parents`` index say what they were: the records are written again."""
    root = realnode_set_for(line).copy_root("node", tmp_path / "node")
    backend = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    with BoltFile(backend) as db:
        page_size = db.page_size
        snapshots = db.bucket(b"v1", b"snapshots")
        leaves = [page for page in snapshots.pages() if page.flags == S.LEAF_PAGE]  # type: ignore[union-attr]
        holding = [page.pgid for page in leaves if b"rn-created" in bytes(page.data)]
    if not holding or len(leaves) < 2:
        pytest.skip(f"{line}: rn-created's record is not on a leaf of its own among several")
    _zero_page(backend, holding[0], page_size)
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q")
    assert result.code == 0, result.stderr
    assert "its snapshotter record was lost: written again" in result.stdout, result.stdout
    assert _containers(out, "default") == {"rn-created", "rn-stopped"}
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0


def test_a_container_whose_snapshotter_record_is_lost_is_dropped_naming_where_its_files_are(realnode_set_for, cli,
                                                                                            tmp_path):
    """An older snapshotter db put back: a container's writable snapshot has no record there
    while its directory holds its files. The container cannot start and is dropped, and the
    drop said its snapshot "is lost" while the rebuild set the directory aside unlinked (a
    red-team run): it names the directory now."""
    from ctrconv.bolt.reader import read_tree
    from ctrconv.bolt.writer import write_bolt
    from ctrconv.containerd import schema as K

    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    db = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    with BoltFile(db) as f:
        page_size = f.page_size
    tree = read_tree(db)
    records = tree.bucket(K.V1, K.SNAPSHOTS)
    [name] = [k for k in records.entries if k.endswith(b"/rn-stopped")]
    snapshot_id = read_backend_snapshot(records.entries.pop(name), name.decode()).id
    parents = tree.bucket(K.V1, K.PARENTS)  # (an older db's index does not know it either)
    for key in [k for k in parents.entries if split_parents_key(k)[1] == snapshot_id]:
        del parents.entries[key]
    write_bolt(db, tree, page_size=page_size)
    upper = root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots" / str(snapshot_id) / "fs"
    (upper / "precious").write_text("data")

    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
    assert result.code == 0, result.stderr
    [drop] = [d for d in result.json["dropped"] if d["object"] == "container default/rn-stopped"]
    assert f"its files may be in overlayfs snapshots/{snapshot_id}" in drop["reason"], drop
    assert (upper / "precious").read_text() == "data"  # (the source keeps it)


def test_a_parent_record_without_its_children_index_is_a_problem_and_rebuild_links_them_again(
        realnode_set_for, cli, tmp_path, private_containerd):
    """A meta.db snapshot record written again (its page lost) had no ``children``: verify
    called the root clean, and containerd then let ``ctr snapshots rm`` remove a base layer
    that six snapshots stood on (it checks that index), its GC failing on it ever after (a
    red-team sweep on 1.6, 1.7 and 2.x)."""
    from ctrconv.bolt.reader import read_tree
    from ctrconv.bolt.writer import write_bolt
    from ctrconv.containerd import schema as K

    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    meta = root.joinpath(*META)
    with BoltFile(meta) as db:
        page_size = db.page_size
    tree = read_tree(meta)
    layers = tree.bucket(K.V1, b"default", K.SNAPSHOTS, b"overlayfs")
    base = max((k for k, r in layers.entries.items() if r.bucket(K.CHILDREN) is not None),
               key=lambda k: len(layers.entries[k].bucket(K.CHILDREN).entries))
    del layers.entries[base].entries[K.CHILDREN]
    write_bolt(meta, tree, page_size=page_size)
    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert result.code == 1 and any(p["kind"] == "snapshot-chain" and "does not list it among its children"
                                    in p["message"] for p in result.json["problems"]), result.json["problems"]
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    assert f"snapshot default/overlayfs/{base.decode()}" in {r["object"] for r in result.json["restored"]}
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0
    daemon = private_containerd(root=out)
    removed = daemon.ctr("snapshots", "rm", base.decode(), check=False)
    assert removed.returncode != 0 and "child" in removed.stderr, removed.stderr


def test_a_bare_record_of_a_platform_not_pulled_gets_its_labels_and_gc_keeps_its_config(realnode_set_for, cli,
                                                                                         tmp_path):
    """2.x records the manifests and configs of the platforms of an index it did not pull. A
    lost page took such a manifest record's labels: the rebuild wrote it back bare, and
    containerd's first GC then deleted the config it had held (a red-team sweep). The record
    gets the GC labels of its recorded children again."""
    from support.daemon import PrivateContainerd
    from support.versions import bin_dir_for

    corpus = realnode_set_for("2.x")
    root = corpus.copy_root("node", tmp_path / "node")
    arm = corpus.image("list")["platform_manifests"]["linux/arm64"]
    meta = root.joinpath(*META)
    with BoltFile(meta) as db:
        record = db.bucket(b"v1", b"default", b"content", b"blob", arm["manifest"].encode())
        assert record is not None and record.root, "the manifest's record has a page of its own"
        page, page_size = record.root, db.page_size
    _zero_page(meta, page, page_size)
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    assert f"content default/{arm['manifest']}" in {r["object"] for r in result.json["restored"]}
    with PrivateContainerd(str(bin_dir_for("2.x")), root=out, workdir=tmp_path) as daemon:
        daemon.force_gc("default")
        held = daemon.ctr("content", "ls", "-q", namespace="default").stdout.split()
    assert arm["config"] in held and arm["manifest"] in held


def _damage_page(root: Path, page: int, mode: str) -> None:
    path = root.joinpath(*META)
    with BoltFile(path) as db:
        page_size = db.page_size
    with open(path, "r+b") as f:
        f.seek(page * page_size)
        f.write(bytes(page_size) if mode == "zero" else random.Random(page).randbytes(page_size))


def _container_ids(root: Path, namespace: bytes) -> set[bytes]:
    with BoltFile(root.joinpath(*META)) as db:
        containers = db.bucket(b"v1", namespace, b"containers")
        return {key for key, _ in containers.buckets()} if containers is not None else set()


@pytest.mark.parametrize("mode", ["zero", "garble"])
@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_a_namespace_whose_own_page_is_lost_keeps_every_record(line, mode, realnode_set_for, cli, tmp_path,
                                                               private_containerd):
    """The leaf page of ``v1/k8s.io`` itself lost (zeroed, garbled), every page below it whole:
    its buckets (images, content, snapshots, containers) are pages of their own, orphaned with
    their names. On 1.6 (a persisted freelist) rebuild took a stale orphan root instead and
    re-derived the node: its 16 tag and digest names, its container and the zero-layer image's
    namespace were lost (a red-team page sweep). The buckets are named from their records now;
    1.7 and 2.x read them back from the older commit's tree. A real containerd of the line then
    lists every image and the container."""
    from support.realnode_set import DISCARDED
    from support.versions import bin_dir_for

    corpus = realnode_set_for(line)
    root = corpus.copy_root(DISCARDED, tmp_path / "node")
    healthy = cli("ls", "--root", str(root), "-A", "--json").json["images"]
    containers = _container_ids(root, b"k8s.io")
    assert containers, "the fixture's discarded root has a container"
    with BoltFile(root.joinpath(*META)) as db:
        namespace = db.bucket(b"v1", b"k8s.io")
        assert namespace is not None and namespace.inline is None
        assert db.page(namespace.root).flags == S.LEAF_PAGE, "the fixture's namespace is one leaf page"
        page = namespace.root
    _damage_page(root, page, mode)
    assert cli("verify", "--root", str(root), "-A", "-q").code != 0

    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    assert not result.json["dropped"], result.json["dropped"]
    assert cli("ls", "--root", str(new), "-A", "--json").json["images"] == healthy
    assert _container_ids(new, b"k8s.io") == containers
    # without a persisted freelist (1.7+) the pick among copies of recent commits is said
    notes = result.json["salvage"][str(root.joinpath(*META))]["damage"]
    assert any("picked among copies of recent commits" in note for note in notes) is (line != "1.6"), notes
    verify = cli("verify", "--root", str(new), "-A", "-q", "--json")
    assert verify.code == 0, json.dumps(verify.json["problems"])[:2000]

    daemon = private_containerd(root=new, binary_dir=None if line == "1.6" else str(bin_dir_for(line)))
    assert sorted(daemon.image_names("k8s.io")) == sorted(i["name"] for i in healthy if i["namespace"] == "k8s.io")
    listed = daemon.ctr("containers", "ls", "-q", namespace="k8s.io").stdout.split()
    assert set(listed) == {c.decode() for c in containers}
    daemon.stop()


def test_empty_namespaces_do_not_make_a_healthy_meta_db_look_stale(realnode_set_for, cli, tmp_path,
                                                                   private_containerd):
    """``ctr namespaces create`` makes a namespace of an empty ``labels`` bucket. Two of them
    beside the one namespace in use made rebuild judge the healthy meta.db "not shaped like this
    file's trees (a stale meta)" and take an orphan root of an earlier commit: the namespace
    created last was gone from the rebuilt root (found checking the fix above with a real
    containerd)."""
    from support.realnode_set import DISCARDED

    root = realnode_set_for("1.6").copy_root(DISCARDED, tmp_path / "node")
    daemon = private_containerd(root=root)
    for name in ("empty-a", "empty-b"):
        daemon.ctr("namespaces", "create", name)
    daemon.stop()
    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    assert result.json["salvage"][str(root.joinpath(*META))]["source"].startswith("meta "), result.json["salvage"]
    daemon = private_containerd(root=new)
    assert {"empty-a", "empty-b", "k8s.io"} <= set(daemon.namespaces())
    daemon.stop()


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_containers_whose_leaf_page_is_lost_come_back_under_their_ids(line, realnode_set_for, cli, tmp_path,
                                                                      private_containerd):
    """The leaf page of ``v1/default/containers`` lost: each container record holds buckets
    (runtime, labels), so it is a page of its own, orphaned with its id. rebuild dropped both
    containers and kept their writable layers as unnamed snapshots (a page sweep, every line);
    a record is named by its snapshot key now (ctr, CRI, Docker name the snapshot after the
    container), and a real containerd starts them."""
    from support.versions import bin_dir_for

    corpus = realnode_set_for(line)
    root = corpus.copy_root("node", tmp_path / "node")
    containers = _container_ids(root, b"default")
    assert len(containers) >= 2, "the fixture's node root has containers in default"
    with BoltFile(root.joinpath(*META)) as db:
        bucket = db.bucket(b"v1", b"default", b"containers")
        assert bucket is not None and bucket.inline is None
        assert db.page(bucket.root).flags == S.LEAF_PAGE, "the fixture's containers are one leaf page"
        page = bucket.root
    _damage_page(root, page, "zero")

    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    assert not result.json["dropped"], result.json["dropped"]
    assert _container_ids(new, b"default") == containers
    verify = cli("verify", "--root", str(new), "-A", "-q", "--json")
    assert verify.code == 0, json.dumps(verify.json["problems"])[:2000]

    daemon = private_containerd(root=new, binary_dir=None if line == "1.6" else str(bin_dir_for(line)))
    for name in sorted(c.decode() for c in containers):
        started = daemon.ctr("tasks", "start", "-d", name, check=False, timeout=120)
        assert started.returncode == 0, (name, started.stderr)
        daemon.ctr("tasks", "delete", "--force", name, check=False, timeout=120)
    daemon.stop()


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_content_records_whose_leaf_page_is_lost_come_back_as_they_were(line, realnode_set_for, cli, tmp_path,
                                                                        private_containerd):
    """The leaf page of ``v1/k8s.io/content`` lost: its ``blob`` bucket is a page of its own
    (each record holds labels), orphaned with its name. rebuild recorded again every blob the
    namespace's images name, the platforms other namespaces pulled among them, so ``ctr images
    check`` no longer matched the node's (a page sweep). The bucket is named by its records now,
    and the namespace holds what it held."""
    from support.versions import bin_dir_for

    corpus = realnode_set_for(line)
    root = corpus.copy_root("node", tmp_path / "node")
    records = _content_records(root, "k8s.io")
    with BoltFile(root.joinpath(*META)) as db:
        bucket = db.bucket(b"v1", b"k8s.io", b"content")
        assert bucket is not None and bucket.inline is None and db.page(bucket.root).flags == S.LEAF_PAGE
        page = bucket.root
    binary_dir = None if line == "1.6" else str(bin_dir_for(line))
    daemon = private_containerd(root=corpus.copy_root("node", tmp_path / "healthy"), binary_dir=binary_dir)
    checked = sorted((r.ref, r.status) for r in daemon.images_check("k8s.io"))
    daemon.stop()
    _damage_page(root, page, "zero")

    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    assert _content_records(new, "k8s.io") == records
    assert cli("verify", "--root", str(new), "-A", "-q").code == 0
    daemon = private_containerd(root=new, binary_dir=binary_dir)
    assert sorted((r.ref, r.status) for r in daemon.images_check("k8s.io")) == checked
    daemon.stop()


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_restored_snapshot_records_nothing_references_are_held_from_gc(line, cli, tmp_path, private_containerd):
    """``ctr snapshots prepare`` / ``commit`` label each snapshot ``containerd.io/gc.root``; the
    snapshotter's record keeps no such label. A lost leaf of ``snapshots/overlayfs`` was
    restored from the snapshotter's records without it, and containerd's first GC deleted the
    whole chain and the writable snapshot on it, files and all (a red-team run)."""
    import re

    from support.versions import bin_dir_for

    binary_dir = None if line == "1.6" else str(bin_dir_for(line))
    root = tmp_path / "root"
    daemon = private_containerd(root=root, binary_dir=binary_dir)
    parent: list[str] = []
    for i in range(6):
        daemon.ctr("snapshots", "prepare", f"work{i}", *parent, namespace="chain")
        mounts = daemon.ctr("snapshots", "mounts", "/unused", f"work{i}", namespace="chain").stdout
        upper = re.search(r"upperdir=([^,\s]+)", mounts) or re.search(r"mount -t \w+ (\S+) /unused", mounts)
        assert upper is not None, mounts
        Path(upper.group(1), f"file{i}").write_text(f"layer {i}\n")
        daemon.ctr("snapshots", "commit", f"layer{i}", f"work{i}", namespace="chain")
        parent = [f"layer{i}"]
    daemon.ctr("snapshots", "prepare", "writable", *parent, namespace="chain")
    before = set(daemon.ctr("snapshots", "ls", namespace="chain").stdout.splitlines()[1:])
    daemon.stop()
    _zero_snapshot_records(root, "chain")

    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    held = {r["object"] for r in result.json["restored"] if "containerd.io/gc.root" in r["reason"]}
    # (records with sub-buckets have pages of their own, named again with their labels: the
    # writable one, inline in the lost leaf, comes back from the snapshotter's record)
    assert "snapshot chain/overlayfs/writable" in held, result.json["restored"]
    assert held <= {f"snapshot chain/overlayfs/{k}" for k in [*(f"layer{i}" for i in range(6)), "writable"]}, held
    daemon = private_containerd(root=out, binary_dir=binary_dir)
    daemon.force_gc("chain")
    assert set(daemon.ctr("snapshots", "ls", namespace="chain").stdout.splitlines()[1:]) == before
    files = {p.name for p in (out / SNAPSHOTS).glob("*/fs/file*")}
    assert files == {f"file{i}" for i in range(6)}
    # removing the writable one (as the report says, once its data is saved) leaves the
    # committed layers below it. (Here those come back from their own orphaned pages with
    # ctr's gc.root; a chain restored from the snapshotter's records, each held in turn, is
    # test_stages.py::test_each_restored_snapshot_nothing_references_is_held_as_ctr_labelled_it.)
    daemon.ctr("snapshots", "rm", "writable", namespace="chain")
    daemon.force_gc("chain")
    assert {p.name for p in (out / SNAPSHOTS).glob("*/fs/file*")} == {f"file{i}" for i in range(6)}


def _rebuilt_without_top_layer_blob(corpus, image: dict, platform: str, cli, tmp_path: Path):
    """``rebuild -o`` of a node copy whose ``image`` lost the blob of its top layer for
    ``platform``: (that layer's digest, the new root, the result), no image dropped."""
    root = corpus.copy_root("node", tmp_path / "node")
    lost = image["platform_manifests"][platform]["layers"][-1]
    (root / "io.containerd.content.v1.content" / "blobs" / "sha256" / lost.split(":", 1)[1]).unlink()
    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    assert not [d for d in result.json["dropped"] if d["kind"] == "image"], result.json["dropped"]
    return lost, new, result


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_an_index_image_whose_host_layer_blob_is_lost_is_kept_and_runs(line, realnode_set_for, cli, tmp_path,
                                                                       private_containerd):
    """A lost layer blob of the platform an index image is unpacked for: containerd runs it
    from its snapshots. Rebuild dropped it (its never-pulled platforms counted as lost too:
    a red-team run), and GC then took its snapshots."""
    from support.versions import bin_dir_for

    corpus = realnode_set_for(line)
    info = corpus.info
    image = next(i for i in info["images"] if i["key"] == "list")
    lost, new, result = _rebuilt_without_top_layer_blob(corpus, image, info["host_platform"], cli, tmp_path)
    kept = [i for i in result.json["images"] if i["name"] == image["ref"]]
    assert kept and all(lost in i["origin"] and i["origin"].startswith("kept: it runs") for i in kept), kept
    daemon = private_containerd(root=new, binary_dir=None if line == "1.6" else str(bin_dir_for(line)))
    for namespace in sorted({i["namespace"] for i in kept}):
        daemon.force_gc(namespace)
        ran = daemon.ctr("run", "--rm", image["ref"], "kept", "/bin/busybox", "echo", "ran", namespace=namespace,
                         check=False)
        assert ran.returncode == 0 and "ran" in ran.stdout, (namespace, ran.stderr)


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_an_index_image_unpacked_for_another_platform_whose_layer_blob_is_lost_is_kept(line, realnode_set_for, cli,
                                                                                        tmp_path, private_containerd):
    """``ctr pull --platform arm64`` unpacks the arm64 manifest; with its layer blob lost the
    image still runs from those snapshots there (as for the host platform, above). Rebuild
    dropped it ("the platforms it pulled are gone") and GC then took its snapshots."""
    from support.versions import bin_dir_for

    corpus = realnode_set_for(line)
    info = corpus.info
    image = next(i for i in info["images"] if i["key"] == "index")
    binary_dir = None if line == "1.6" else str(bin_dir_for(line))
    healthy = corpus.copy_root("node", tmp_path / "healthy")
    daemon = private_containerd(root=healthy, binary_dir=binary_dir)
    daemon.force_gc("other")
    snapshots = set(daemon.ctr("snapshots", "ls", namespace="other").stdout.splitlines()[1:])
    daemon.stop()
    assert snapshots, "the corpus unpacks the arm64 pull in namespace other"

    lost, new, result = _rebuilt_without_top_layer_blob(corpus, image, info["other_platform"], cli, tmp_path)
    [kept] = [i for i in result.json["images"] if i["name"] == image["ref"] and i["namespace"] == "other"]
    assert kept["origin"].startswith("kept: it runs") and lost in kept["origin"], kept
    daemon = private_containerd(root=new, binary_dir=binary_dir)
    daemon.force_gc("other")
    assert image["ref"] in daemon.ctr("images", "ls", "-q", namespace="other").stdout.split()
    assert set(daemon.ctr("snapshots", "ls", namespace="other").stdout.splitlines()[1:]) == snapshots


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_an_image_whose_target_digest_is_damaged_takes_it_back_from_its_name(line, realnode_set_for, cli, tmp_path):
    """A flipped bit in a ``repo@sha256:<digest>`` record's target: rebuild dropped the record
    although its name holds the digest (a red-team run: CRI's repo-digest name was lost). The
    target comes back from the name, as for a record whose body was lost; a tag whose target
    digest is no digest at all comes back from the one target its name has elsewhere. A
    record whose valid target's blob is gone stays dropped."""
    from ctrconv.bolt.reader import read_tree
    from ctrconv.bolt.writer import write_bolt

    root = realnode_set_for(line).copy_root("node", tmp_path / "node")
    before = {(i["namespace"], i["name"]): i["digest"] for i in cli("ls", "--root", str(root), "-A", "--json").json["images"]}
    meta = root.joinpath(*META)
    tree = read_tree(meta)
    images = tree.bucket(b"v1", b"k8s.io", b"images")
    by_digest = next(k for k in sorted(images.entries) if b"@sha256:" in k)
    tag = next(k for k in sorted(images.entries) if b"@" not in k and not k.startswith(b"sha256:")
               and ("default", k.decode()) in before)
    for key, damaged in ((by_digest, "sha256:df988985314ac\x15" + "0" * 50), (tag, "sha256:" + "Z" * 64)):
        images.bucket(key).bucket(b"target").put(b"digest", damaged.encode())
    write_bolt(meta, tree)
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    after = {(i["namespace"], i["name"]): i["digest"] for i in cli("ls", "--root", str(out), "-A", "--json").json["images"]}
    for key in (by_digest, tag):
        assert after.get(("k8s.io", key.decode())) == before[("k8s.io", key.decode())], (key, result.json["dropped"])
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0
