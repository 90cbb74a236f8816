"""``ctrconv commit``: a container's writable layer as a new image, with no daemon.

Unit tests build a synthetic root (an image, its committed layer snapshot and a container
whose active snapshot holds changes; overlayfs and native) with ctrconv's own bolt writer and
read the committed image back. Interop tests are judged by real daemons: a container run on a
private containerd writes a file and deletes one of the image's, the daemon stops, the
commit is imported into a fresh containerd, and ``ctr run`` of it sees the file and not the
deleted one; the real-node corpus' containers (killed, crashed, on a discard root) commit too.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from ctrconv.bolt.reader import read_tree
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import BackendSnapshot, SnapshotRecord, write_backend_snapshot, write_snapshot
from ctrconv.layers import chain_ids
from support.synthetic_root import SyntheticRoot, host_arch

EPOCH = "1700000000"
IMAGE = "docker.io/library/app:1"
META = Path("io.containerd.metadata.v1.bolt/meta.db")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("whiteout devices need root")


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _layout_image(layout: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(index.json entry, manifest, config) of a one-image OCI layout directory."""
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads(_blob(layout, entry["digest"]))
    return entry, manifest, json.loads(_blob(layout, manifest["config"]["digest"]))


def _tar_names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return tar.getnames()


class ContainerRoot:
    """A synthetic root: ``app:1`` (one layer, ``hello.txt``) unpacked into ``snapshotter``,
    and containers whose active snapshots the test fills."""

    def __init__(self, path: Path, snapshotter: str = "overlayfs") -> None:
        self.path = path
        self.snapshotter = snapshotter
        synthetic = SyntheticRoot(path)
        self.manifest = synthetic.image_manifest("app", host_arch())
        synthetic.name("default", IMAGE, self.manifest)
        synthetic.write()
        self.synthetic = synthetic
        doc = json.loads(synthetic.blobs[self.manifest["digest"]])
        self.layer = doc["layers"][0]
        self.config = json.loads(synthetic.blobs[doc["config"]["digest"]])
        self.chain = chain_ids(self.config["rootfs"]["diff_ids"])[-1]
        self.meta = read_tree(path / META)
        self.backend = BucketTree()
        self.next_id = 1
        self.sn_dir = path / K.snapshotter_dir(snapshotter)
        layer_tree = self._snapshot(self.chain, None, "committed")
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(synthetic.blobs[self.layer["digest"]]))) as tar:
            tar.extractall(layer_tree, filter="fully_trusted")
        self.layer_tree = layer_tree

    def _snapshot(self, key: str, parent: str | None, kind: str) -> Path:
        """Records on both sides (meta.db and the snapshotter's), and the snapshot's tree."""
        sid = self.next_id
        self.next_id += 1
        name = f"default/{sid}/{key}"
        bucket = self.meta.bucket(b"v1", b"default", K.SNAPSHOTS, self.snapshotter.encode(), key.encode(), create=True)
        parent_name = None
        if parent:
            parent_record = self.meta.bucket(b"v1", b"default", K.SNAPSHOTS, self.snapshotter.encode(), parent.encode())
            parent_name = parent_record.get(K.NAME).decode() if parent_record is not None else None  # type: ignore[union-attr]
        write_snapshot(bucket, SnapshotRecord("default", self.snapshotter, key, name, parent))  # type: ignore[arg-type]
        backend = self.backend.bucket(b"v1", K.SNAPSHOTS, name.encode(), create=True)
        write_backend_snapshot(backend, BackendSnapshot(name, sid, kind, parent_name))  # type: ignore[arg-type]
        top = self.sn_dir / "snapshots" / str(sid)
        tree = top / "fs" if self.snapshotter == "overlayfs" else top
        tree.mkdir(parents=True)
        return tree

    def container(self, cid: str, image: str = IMAGE, *, snapshot: bool = True, parent: str | None = "") -> Path:
        """A container record on ``image``; its active snapshot's tree (empty, or for native a
        copy of the layer snapshot), returned for the test to change."""
        bucket = self.meta.bucket(b"v1", b"default", K.CONTAINERS, cid.encode(), create=True)
        assert bucket is not None
        bucket.put(K.IMAGE, image.encode())
        bucket.put(K.SNAPSHOTTER, self.snapshotter.encode())
        bucket.put(K.SNAPSHOT_KEY, cid.encode())
        if not snapshot:
            return self.path
        tree = self._snapshot(cid, self.chain if parent == "" else parent, "active")
        if self.snapshotter == "native":
            shutil.rmtree(tree)
            subprocess.run(["cp", "-a", str(self.layer_tree), str(tree)], check=True)
        return tree

    def write(self) -> Path:
        write_bolt(self.path / META, self.meta, mode=0o644)
        self.sn_dir.mkdir(parents=True, exist_ok=True)
        write_bolt(self.sn_dir / "metadata.db", self.backend, mode=0o600)
        return self.path


def _changed_container(tmp_path: Path, snapshotter: str = "overlayfs") -> ContainerRoot:
    """``c1`` wrote ``/data/new.txt`` and deleted ``/hello.txt`` (an overlayfs whiteout, or
    for native the file gone from its full tree)."""
    _need_root()
    root = ContainerRoot(tmp_path / "root", snapshotter)
    tree = root.container("c1")
    (tree / "data").mkdir()
    (tree / "data" / "new.txt").write_bytes(b"written by the container\n")
    if snapshotter == "overlayfs":
        os.mknod(tree / "hello.txt", stat.S_IFCHR, 0)
    else:
        (tree / "hello.txt").unlink()
    root.write()
    return root


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_container_changes_become_a_top_layer_on_its_image(tmp_path, cli, monkeypatch, snapshotter):
    root = _changed_container(tmp_path, snapshotter)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    out = tmp_path / "out"
    result = cli("commit", "--root", str(root.path), "--container", "c1", "-o", str(out), "--ref", "committed:v1",
                 "-m", "saved", "-a", "tester", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    entry, manifest, config = _layout_image(out)
    assert entry["annotations"]["io.containerd.image.name"] == "docker.io/library/committed:v1" == report["name"]
    assert manifest["layers"][0] == root.layer and len(manifest["layers"]) == 2
    assert manifest["annotations"] == {"org.opencontainers.image.base.digest": root.manifest["digest"],
                                       "org.opencontainers.image.base.name": IMAGE}
    new = manifest["layers"][1]
    assert new["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip" and new["digest"] == report["layer"]["digest"]
    assert _tar_names(_blob(out, new["digest"])) == ["data", "data/new.txt", ".wh.hello.txt"]
    assert config["rootfs"]["diff_ids"] == [*root.config["rootfs"]["diff_ids"], report["layer"]["diff_id"]]
    assert config["history"][-1] == {"created": "2023-11-14T22:13:20Z", "created_by": "ctrconv commit",
                                     "author": "tester", "comment": "saved"}
    assert config["created"] == "2023-11-14T22:13:20Z" and config["author"] == "tester"
    assert config["config"] == root.config["config"]  # Env, Cmd, ... of the image kept
    assert report["image_id"] == manifest["config"]["digest"] and report["base"]["platform"] == f"linux/{host_arch()}"
    assert report["snapshotter"] == snapshotter and report["base"]["regenerated_layers"] == 0
    from support.json_schemas import check

    check("commit", report)


def test_commit_is_deterministic_and_defaults_its_name(tmp_path, cli, monkeypatch):
    """The same container at the same SOURCE_DATE_EPOCH commits to the same bytes; without
    --ref the image is ``<repository>:commit-<container>``; docker-archive and dir work too."""
    root = _changed_container(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    for out in (first, second):
        assert cli("commit", "--root", str(root.path), "c1", "-o", str(out), "-q").code == 0
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/app:commit-c1"
    docker = tmp_path / "d.tar"
    result = cli("commit", "--root", str(root.path), "c1", "-o", str(docker), "--format", "docker-archive", "--json")
    assert result.code == 0, result.stderr
    with tarfile.open(docker) as tar:
        manifest_json = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest_json[0]["RepoTags"] == ["app:commit-c1"] and len(manifest_json[0]["Layers"]) == 2
    skopeo = tmp_path / "skopeo-dir"
    assert cli("commit", "--root", str(root.path), "c1", "-o", str(skopeo), "--format", "dir", "-q").code == 0
    assert (skopeo / "manifest.json").is_file()


def test_a_container_naming_its_image_by_the_cri_id_alias_gets_a_repository_name(tmp_path, cli):
    """CRI may record a container's image as ``sha256:<image ID>``; the default name comes
    from a repo:tag name of the same image."""
    _need_root()
    root = ContainerRoot(tmp_path / "root")
    images = root.meta.bucket(b"v1", b"default", b"images")
    alias = "sha256:" + "0" * 64
    target = images.bucket(alias.encode(), create=True).bucket(b"target", create=True)  # type: ignore[union-attr]
    for key, value in images.bucket(IMAGE.encode(), b"target").items():  # type: ignore[union-attr]
        target.put(key, value)  # type: ignore[union-attr]
    root.container("cri", image=alias)
    root.write()
    result = cli("commit", "--root", str(root.path), "cri", "-o", str(tmp_path / "o.tar"), "--json")
    assert result.code == 0, result.stderr
    assert result.json["name"] == "docker.io/library/app:commit-cri" and result.json["base"]["name"] == alias


def test_a_container_is_found_by_a_unique_prefix_of_its_id(tmp_path, cli):
    """CRI and Docker IDs are 64 hex digits, shown as 12-13 (crictl ps, docker ps): a unique
    prefix of 12+ finds the container, a shared one is refused naming both, a shorter one is
    not a prefix; the default name uses the short ID."""
    _need_root()
    root = ContainerRoot(tmp_path / "root")
    first, second = "abcdef012345" + "0" * 52, "abcdef012345" + "1" * 52
    root.container(first)
    root.container(second)
    root.write()
    out = tmp_path / "o.tar"
    result = cli("commit", "--root", str(root.path), first[:13], "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    assert result.json["container"] == first and result.json["name"] == "docker.io/library/app:commit-abcdef012345"
    _error(cli("commit", "--root", str(root.path), first[:12], "-o", str(out)), 2, "ambiguous", first, second)
    _error(cli("commit", "--root", str(root.path), first[:8], "-o", str(out)), 2, "not found")


def test_skopeo_copies_the_commit_from_every_layout(tmp_path, cli):
    """skopeo reads the commit as a ``dir:`` layout, an OCI layout and a docker archive (it
    verifies every blob's digest while copying) and finds the new layer on top."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    root = _changed_container(tmp_path)
    outputs = {"dir": "dir:{}", "oci-dir": "oci:{}:commit-c1", "docker-archive": "docker-archive:{}"}
    for fmt, transport in outputs.items():
        out = tmp_path / f"out-{fmt}"
        result = cli("commit", "--root", str(root.path), "c1", "-o", str(out), "--format", fmt, "--json")
        assert result.code == 0, result.stderr
        copied = tmp_path / f"copied-{fmt}"
        subprocess.run(["skopeo", "copy", "-q", transport.format(out), f"dir:{copied}"], check=True, timeout=120)
        manifest = json.loads((copied / "manifest.json").read_text())
        assert len(manifest["layers"]) == 2
        assert json.loads((copied / manifest["config"]["digest"].split(":", 1)[1]).read_text())["rootfs"]["diff_ids"][-1] \
            == result.json["layer"]["diff_id"]


def test_base_layer_whose_blob_is_gone_comes_from_its_snapshot(tmp_path, cli):
    """A discard_unpacked_layers node: the image's layer blob is gone, its snapshot is there;
    the commit regenerates it and says so."""
    root = _changed_container(tmp_path)
    blob = root.path / "io.containerd.content.v1.content" / "blobs" / "sha256" / root.layer["digest"].split(":", 1)[1]
    blob.unlink()
    out = tmp_path / "out"
    result = cli("commit", "--root", str(root.path), "c1", "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["base"]["regenerated_layers"] == 1 and report["base"]["rewritten_manifest"]
    assert "1 base layer(s) regenerated from snapshots" in result.stderr
    _, manifest, config = _layout_image(out)
    assert manifest["layers"][0]["digest"] != root.layer["digest"]
    assert _tar_names(_blob(out, manifest["layers"][0]["digest"])) == ["hello.txt"]
    assert len(config["rootfs"]["diff_ids"]) == 2


def test_progress_has_a_layer_stage_then_the_copy(tmp_path):
    """The overlayfs layer is one ``layer`` stage whose total is the upper directory's file
    bytes (a hardlinked file counted once) and which ends exactly there; then ``commit``."""
    from ctrconv import api
    from support.progress import RecordingProgress

    root = _changed_container(tmp_path)
    tree = next(root.path.glob("io.containerd.snapshotter.v1.overlayfs/snapshots/*/fs/data"))
    (tree / "big").write_bytes(os.urandom(3 << 20))
    os.link(tree / "big", tree / "big-link")
    progress = RecordingProgress()
    api.commit_container(root.path, "c1", tmp_path / "o.tar", progress=progress)
    assert progress.names() == ["layer", "commit"]
    layer = progress.get("layer")
    assert layer.total == layer.done == (3 << 20) + len(b"written by the container\n") and not layer.overran
    assert all(s.closed for s in progress.stages)


def test_native_progress_has_a_layer_stage_of_the_entries_compared(tmp_path):
    """A native container's diff walks its full tree against the parent snapshot: one
    ``layer`` stage counting the tree's entries (files, directories, links; a deleted path is
    no entry of it), ending exactly at its total; then ``commit``."""
    from ctrconv import api
    from support.progress import RecordingProgress

    root = _changed_container(tmp_path, "native")
    tree = next(p for p in (root.path / K.snapshotter_dir("native") / "snapshots").iterdir()
                if (p / "data" / "new.txt").exists())
    for n in range(5):
        (tree / "data" / f"more-{n}").write_bytes(b"x" * n)
    os.symlink("data", tree / "link")
    entries = sum(1 for _ in tree.rglob("*"))
    assert entries == 8  # data, data/new.txt, 5 files, link (hello.txt was deleted)
    progress = RecordingProgress()
    api.commit_container(root.path, "c1", tmp_path / "o.tar", progress=progress)
    assert progress.names() == ["layer", "commit"]
    layer = progress.get("layer")
    assert (layer.unit, layer.total, layer.done) == ("records", entries, entries) and not layer.overran
    assert all(s.closed for s in progress.stages)


def test_the_root_is_only_read(tmp_path, cli):
    root = _changed_container(tmp_path)
    before = subprocess.run(["find", str(root.path), "-printf", "%p %s %T@ %m\\n"], capture_output=True, text=True,
                            check=True).stdout
    assert cli("commit", "--root", str(root.path), "c1", "-o", str(tmp_path / "x.tar"), "-q").code == 0
    after = subprocess.run(["find", str(root.path), "-printf", "%p %s %T@ %m\\n"], capture_output=True, text=True,
                           check=True).stdout
    assert before == after


def _error(result, code: int, *words: str) -> None:
    assert result.code == code, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("ctrconv: error: ") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], result.stderr


def test_errors_are_one_line_with_the_contract_exit_codes(tmp_path, cli):
    _need_root()
    root = ContainerRoot(tmp_path / "root")
    root.container("ok")
    root.container("no-snapshot", snapshot=False)
    root.container("no-image", image="docker.io/library/gone:1")
    root.container("moved", parent="sha256:" + "ab" * 32)
    shutil.rmtree(root.container("tree-gone").parent)
    root.container("zfs", snapshot=False)
    root.meta.bucket(b"v1", b"default", K.CONTAINERS, b"zfs").put(K.SNAPSHOTTER, b"zfs")  # type: ignore[union-attr]
    root.write()
    out = tmp_path / "out.tar"

    def commit(*args: str):
        return cli("commit", "--root", str(root.path), *args, "-o", str(out))

    _error(commit("nope"), 2, "container 'nope' not found", "moved, no-image, no-snapshot, ok, tree-gone, zfs")
    _error(commit("no-snapshot"), 1, "no-snapshot has no snapshot")
    _error(commit("no-image"), 1, "docker.io/library/gone:1", "is not in namespace default")
    _error(commit("moved"), 1, "has the layers the container was created on")
    _error(commit("zfs"), 1, "uses the zfs snapshotter", "overlayfs, native")
    _error(commit("tree-gone"), 1, "tree-gone has no snapshot", "holds no directory")
    _error(commit("ok", "--format", "docker-archive", "--compression", "zstd"), 2, "no zstd")
    _error(commit("ok", "--compression", "lz4"), 2, "unknown --compression")
    _error(commit("ok", "--ref", "Bad:Name"), 2, "invalid reference")
    _error(cli("commit", "--root", str(root.path), "ok"), 2, "no output given")
    _error(cli("commit", "--root", str(tmp_path / "missing"), "ok", "-o", str(out)), 2, "does not exist")
    assert not out.exists() and not list(tmp_path.glob(".ctrconv-*"))


# -- interop -------------------------------------------------------------------------------


def _bin_dir(line: str) -> str | None:
    if line == "1.6":
        return None
    from support.versions import bin_dir_for

    return str(bin_dir_for(line))


@pytest.mark.parametrize("snapshotter,lose_blobs", [("overlayfs", False), ("overlayfs", True), ("native", False)],
                         ids=["overlayfs-blobs-kept", "overlayfs-blobs-lost", "native"])
def test_a_container_run_on_containerd_commits_and_runs_on_a_fresh_one(snapshotter, lose_blobs, fixture_set, cli,
                                                                       tmp_path, private_containerd):
    """``ctr run`` writes a file and deletes one of the image's; the daemon stops; the commit
    (oci-tar and docker-archive) imports into a fresh containerd, is complete, and a container
    of it sees the written file and not the deleted one, over the image's own files. With the
    image's layer blobs deleted afterwards (a discard_unpacked_layers node, lost blobs) the
    base layers come from their snapshots. The native snapshotter's container (a full tree)
    is diffed against its parent snapshot, and the commit runs on native too."""
    name = "docker.io/library/bbx:oci"
    source = private_containerd()
    sn = ("--snapshotter", snapshotter)
    source.ctr("images", "import", *sn, str(fixture_set.file(fixture_set.input("bbx-oci")["path"])), timeout=120)
    # a file written, one of the image's deleted (a whiteout), a directory of the image replaced
    # by a new one (overlayfs: an opaque directory; native: whiteouts of its old entries)
    script = ("echo committed > /data/written.txt && rm /data/modify.txt && test -n \"$(ls -A /etc)\" && "
              "rm -rf /etc && mkdir /etc && echo new > /etc/only")
    run = source.ctr("run", *sn, name, "writer", "/bin/busybox", "sh", "-c", script, check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    root = source.root
    source.stop()
    layers = fixture_set.image("default", name)["manifests"][0]["layers"]
    if lose_blobs:
        for layer in layers:
            (root / "io.containerd.content.v1.content" / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]).unlink()
    outputs = {}
    for fmt, ref in (("oci-tar", "committed/bbx:oci"), ("docker-archive", "committed/bbx:docker")):
        out = tmp_path / f"{fmt}.tar"
        result = cli("commit", "--root", str(root), "--container", "writer", "-o", str(out), "--format", fmt,
                     "--ref", ref, "--json")
        assert result.code == 0, result.stderr
        assert result.json["base"]["name"] == name and result.json["snapshotter"] == snapshotter
        assert result.json["base"]["regenerated_layers"] == (len(layers) if lose_blobs else 0), result.json
        with tarfile.open(out) as tar:
            blob = tar.extractfile("blobs/sha256/" + result.json["layer"]["digest"].split(":", 1)[1]).read()  # type: ignore[union-attr]
        names = _tar_names(blob)  # the container's changes only, not its image's files
        assert "data/written.txt" in names and "data/.wh.modify.txt" in names and "bin/busybox" not in names, names
        assert ("etc/.wh..wh..opq" in names) == (snapshotter == "overlayfs"), names
        outputs[fmt] = (out, result.json)
    fresh = private_containerd()
    for out, _ in outputs.values():
        fresh.ctr("images", "import", *sn, str(out), timeout=120)
    rows = {row.ref: row for row in fresh.images_check("default")}
    check = ("cat /data/written.txt && test ! -e /data/modify.txt && test -x /bin/busybox && "
             "test \"$(ls -A /etc)\" = only")
    for fmt, (_, report) in outputs.items():
        assert rows[report["name"]].complete, rows
        run = fresh.ctr("run", *sn, "--rm", report["name"], f"check-{fmt}", "/bin/busybox", "sh", "-c", check,
                        check=False, timeout=120)
        assert run.returncode == 0 and run.stdout.strip() == "committed", (fmt, run.stdout, run.stderr)
    names = fresh.image_names("default")
    assert "docker.io/committed/bbx:oci" in names and "docker.io/committed/bbx:docker" in names


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_a_crashed_nodes_running_container_commits(line, fixture_set, cli, tmp_path, private_containerd):
    """A task still running when its containerd is SIGKILLed (shim, process, mounts and cgroups
    reaped afterwards, as a dead node leaves them): the root is read as the crash left it, and
    the commit runs on a fresh containerd of the same line with the task's changes. While the
    daemon still runs, its root is refused unless --ignore-lock."""
    name = "docker.io/library/bbx:oci"
    source = private_containerd(binary_dir=_bin_dir(line))
    source.ctr("images", "import", str(fixture_set.file(fixture_set.input("bbx-oci")["path"])), timeout=120)
    script = "echo crashed > /data/written.txt && rm /data/modify.txt && touch /data/ready && exec sleep 3600"
    source.ctr("run", "-d", "--null-io", "--runc-root", str(source.runc_root), name, "victim",
               "/bin/busybox", "sh", "-c", script, timeout=120)
    uppers = source.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    deadline = time.monotonic() + 30
    while not list(uppers.glob("*/fs/data/ready")):
        assert time.monotonic() < deadline, "the task never wrote its files"
        time.sleep(0.05)
    live = cli("commit", "--root", str(source.root), "victim", "-o", str(tmp_path / "live.tar"), "-q")
    assert live.code == 1 and "--ignore-lock" in live.stderr and not (tmp_path / "live.tar").exists(), live.stderr
    live = cli("commit", "--root", str(source.root), "victim", "-o", str(tmp_path / "live.tar"), "--ignore-lock", "-q")
    assert live.code == 0, live.stderr  # a running daemon's root: read from private copies of its bolt files
    source.kill()
    assert not source.shim_pids()
    out = tmp_path / "crashed.tar"
    result = cli("commit", "--root", str(source.root), "victim", "-o", str(out), "--ref", "crashed/victim:1", "--json")
    assert result.code == 0, result.stderr
    fresh = private_containerd(binary_dir=_bin_dir(line))
    fresh.ctr("images", "import", str(out), timeout=120)
    rows = {row.ref: row for row in fresh.images_check("default")}
    assert rows[result.json["name"]].complete, rows
    check = "cat /data/written.txt && test ! -e /data/modify.txt && test -e /data/ready"
    run = fresh.ctr("run", "--rm", result.json["name"], "check", "/bin/busybox", "sh", "-c", check, check=False,
                    timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "crashed", (run.stdout, run.stderr)


def test_containers_of_docker_index_and_zstd_images_commit(tmp_root_copy, cli, tmp_path, private_containerd):
    """Bases of every shape: a docker schema 2 manifest (docker layer types kept, no OCI
    annotations), an index (the host's manifest, found by the snapshot's chain), zstd layers
    (a docker archive gets them decompressed, the config unchanged): each commit imports into a
    fresh containerd and runs with the container's file."""
    source = private_containerd(root=tmp_root_copy)
    cases = {"docker": "docker-archive", "multi": "oci-tar", "zstd": "docker-archive"}
    for tag in cases:
        run = source.ctr("run", f"docker.io/library/bbx:{tag}", f"c-{tag}", "/bin/busybox", "sh", "-c",
                         f"echo {tag} > /committed.txt", check=False, timeout=120)
        assert run.returncode == 0, (tag, run.stderr)
    source.stop()
    reports = {}
    for tag, fmt in cases.items():
        out = tmp_path / f"{tag}.tar"
        result = cli("commit", "--root", str(tmp_root_copy), f"c-{tag}", "-o", str(out), "--format", fmt, "--json")
        assert result.code == 0, (tag, result.stderr)
        reports[tag] = (out, result.json)
    docker_out, docker_report = reports["docker"]
    with tarfile.open(docker_out) as tar:
        manifest = json.load(tar.extractfile("blobs/sha256/" + docker_report["manifest"].split(":", 1)[1]))  # type: ignore[arg-type]
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["layers"][-1]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert "annotations" not in manifest
    zstd_out, _ = reports["zstd"]
    with tarfile.open(zstd_out) as tar:
        assert not any(tar.extractfile(m).read(4) == b"\x28\xb5\x2f\xfd"  # type: ignore[union-attr]
                       for m in tar.getmembers() if m.name.startswith("blobs/") and m.isfile())
    fresh = private_containerd()
    for out, _ in reports.values():
        fresh.ctr("images", "import", str(out), timeout=120)
    rows = {row.ref: row for row in fresh.images_check("default")}
    for tag, (_, report) in reports.items():
        assert rows[report["name"]].complete, rows
        run = fresh.ctr("run", "--rm", report["name"], f"check-{tag}", "/bin/busybox", "cat", "/committed.txt",
                        check=False, timeout=120)
        assert run.returncode == 0 and run.stdout.strip() == tag, (tag, run.stdout, run.stderr)


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_real_node_containers_commit_and_run(line, realnode_set_for, cli, tmp_path, private_containerd):
    """The real-node corpus of each line: the container run on the ``discarded`` root (CRI
    ``discard_unpacked_layers``: its image's layer blobs gone) commits with its base layers
    regenerated from snapshots, and the task left running when the ``crashed`` root's daemon
    was SIGKILLed commits as the crash left it; both import into a fresh containerd of the
    line, are complete and run (the discard container's own check command passes again)."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for(line)
    ran = corpus.info["roots"][DISCARDED]["container"]
    image = next(i for i in corpus.images() if i["ref"] == ran["image"])
    discard_out = tmp_path / "discarded.tar"
    result = cli("commit", "--root", str(corpus.root(DISCARDED)), "-n", ran["namespace"], ran["id"], "-o",
                 str(discard_out), "--ref", "realnode/discarded:commit", "--json")
    assert result.code == 0, result.stderr
    assert result.json["base"]["regenerated_layers"] == len(image["layers"]) > 0, result.json
    assert "regenerated from snapshots" in result.stderr
    crashed_id = corpus.info["containers"]["running_at_crash"]
    crashed_out = tmp_path / "crashed.tar"
    crashed = cli("commit", "--root", str(corpus.crashed_root), crashed_id, "-o", str(crashed_out),
                  "--ref", "realnode/crashed:commit", "--json")
    assert crashed.code == 0, crashed.stderr
    fresh = private_containerd(binary_dir=_bin_dir(line))
    for out in (discard_out, crashed_out):
        fresh.ctr("images", "import", str(out), timeout=120)
    rows = {row.ref: row for row in fresh.images_check("default")}
    for report in (result.json, crashed.json):
        assert rows[report["name"]].complete, rows
    run = fresh.ctr("run", "--rm", result.json["name"], "check-discarded", *ran["command"], check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    run = fresh.ctr("run", "--rm", crashed.json["name"], "check-crashed", "/bin/busybox", "true", check=False,
                    timeout=120)
    assert run.returncode == 0, run.stderr


@pytest.fixture
def dockerd(tmp_path: Path):
    """A private Docker engine (Debian's docker.io; ``support/dockerd.py``)."""
    from support.dockerd import PrivateDockerd, skip_reason

    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    (tmp_path / "dockerd").mkdir()
    with PrivateDockerd(tmp_path / "dockerd") as daemon:
        yield daemon


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-tar"])
def test_docker_loads_and_runs_a_commit(fmt, fixture_set, cli, tmp_path, private_containerd, dockerd):
    """``docker load`` of the commit (docker-archive, and the OCI tar): Docker names it, its
    image ID is the new config digest, and ``docker run`` sees the container's file and not
    the one it deleted."""
    source = private_containerd()
    source.ctr("images", "import", str(fixture_set.file(fixture_set.input("bbx-docker")["path"])), timeout=120)
    run = source.ctr("run", "docker.io/library/bbx:docker", "w", "/bin/busybox", "sh", "-c",
                     "echo for-docker > /data/written.txt && rm /data/modify.txt", check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    root = source.root
    source.stop()
    out = tmp_path / "commit.tar"
    result = cli("commit", "--root", str(root), "w", "-o", str(out), "--format", fmt, "--ref", "committed/bbx:docker",
                 "--json")
    assert result.code == 0, result.stderr
    loaded = dockerd.docker("load", "-i", str(out)).stdout
    assert "committed/bbx:docker" in loaded, loaded
    inspected = json.loads(dockerd.docker("image", "inspect", "committed/bbx:docker").stdout)[0]
    assert inspected["Id"] == result.json["image_id"]
    out_text = dockerd.docker("run", "--rm", "--network", "none", "committed/bbx:docker", "/bin/busybox", "sh", "-c",
                              "cat /data/written.txt && test ! -e /data/modify.txt").stdout
    assert out_text.strip() == "for-docker"


@pytest.mark.parametrize("docker_line", ["26", "28"])
def test_a_docker_container_on_the_containerd_store_commits(docker_line, fixture_set, cli, tmp_path,
                                                           private_containerd):
    """Docker on the containerd image store (namespace moby) keeps no containerd record for a
    stopped container, only its snapshot (on Docker's ``<id>-init`` layer): ``commit`` finds it
    by the short ID ``docker ps`` shows, leaves the init layer (hosts, resolv.conf) out as
    ``docker commit`` does, and the image runs on a fresh containerd of Docker's line."""
    from support.moby import MobyDocker, skip_reason

    reason = skip_reason(docker_line)
    if reason:
        pytest.skip(reason)
    docker = MobyDocker(docker_line, tmp_path, root=tmp_path / "root")
    with docker:
        docker.docker("load", "-i", str(fixture_set.file(fixture_set.input("bbx-docker")["path"])))
        docker.docker("run", "--name", "dc", "--network", "none", "bbx:docker", "/bin/busybox", "sh", "-c",
                      "echo from-docker > /data/written.txt && rm /data/modify.txt")
        short = docker.docker("inspect", "-f", "{{.Id}}", "dc").stdout.strip()[:12]
        bin_dir = docker.build.containerd.bin_dir
        docker.stop()
        out = tmp_path / "commit.tar"
        result = cli("commit", "--root", str(docker.root), "-n", "moby", short, "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    assert result.json["name"] == f"docker.io/library/bbx:commit-{short}"
    assert result.json["base"]["name"] == "docker.io/library/bbx:docker"
    with tarfile.open(out) as tar:
        blob = tar.extractfile("blobs/sha256/" + result.json["layer"]["digest"].split(":", 1)[1]).read()  # type: ignore[union-attr]
    names = _tar_names(blob)
    assert "data/written.txt" in names and "data/.wh.modify.txt" in names and "etc/hosts" not in names, names
    fresh = private_containerd(binary_dir=str(bin_dir))
    fresh.ctr("images", "import", str(out), timeout=120)
    run = fresh.ctr("run", "--rm", result.json["name"], "check", "/bin/busybox", "sh", "-c",
                    "cat /data/written.txt && test ! -e /data/modify.txt", check=False, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "from-docker", (run.stdout, run.stderr)
