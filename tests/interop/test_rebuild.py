"""``ctrconv rebuild`` over a damage catalogue made from real-daemon roots; a real containerd
is the judge of every rebuilt root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ctrconv.bolt import BoltFile

META = ("io.containerd.metadata.v1.bolt", "meta.db")


def _blob(root: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":")
    return root / "io.containerd.content.v1.content" / "blobs" / alg / hexpart


def _oci(fixture_set):
    return fixture_set.image("default", "docker.io/library/bbx:oci")


def _rebuild(cli, root: Path, *extra: str):
    result = cli("rebuild", "--root", str(root), "-q", "--json", *extra)
    assert result.code == 0, result.stderr
    return result.json


def _assert_clean(cli, root: Path):
    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert result.code == 0, result.stdout
    return result.json


def _images(cli, root: Path) -> dict[str, str]:
    result = cli("ls", "--root", str(root), "-A", "--json")
    assert result.code == 0, result.stderr
    return {f"{i['namespace']}/{i['name']}": i["digest"] for i in result.json["images"]}


def _daemon_accepts(private_containerd, root: Path, namespace: str, expect: set[str]) -> None:
    daemon = private_containerd(root=root)
    rows = {r.ref: r for r in daemon.images_check(namespace)}
    assert expect <= set(rows), (expect, sorted(rows))
    for name in expect:
        assert rows[name].complete and rows[name].unpacked, rows[name]
    daemon.force_gc(namespace)
    rows_after = {r.ref for r in daemon.images_check(namespace)}
    assert expect <= rows_after
    daemon.stop()


def test_rebuild_of_a_healthy_root_changes_nothing(tmp_root_copy, cli, private_containerd):
    """In place, a root that verifies clean is left byte for byte: no backup, no rewrite."""
    before = _images(cli, tmp_root_copy)
    meta = tmp_root_copy.joinpath(*META)
    meta_bytes = meta.read_bytes()
    snapshots = sorted(os.listdir(tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"))
    listing_before = sorted(os.listdir(tmp_root_copy))
    report = _rebuild(cli, tmp_root_copy)
    assert report["healthy"] and not report["damage_found"]
    assert not report["dropped"] and not report["corrupt_blobs"] and not report["backups"]
    assert meta.read_bytes() == meta_bytes
    assert sorted(os.listdir(tmp_root_copy)) == listing_before
    assert sorted(os.listdir(tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "snapshots")) == snapshots
    assert _images(cli, tmp_root_copy) == before
    text = cli("rebuild", "--root", str(tmp_root_copy), "-q")
    assert text.code == 0 and "nothing to repair" in text.stdout
    _assert_clean(cli, tmp_root_copy)
    _daemon_accepts(private_containerd, tmp_root_copy, "default", {"docker.io/library/bbx:oci", "docker.io/library/bbx:docker"})


def test_rebuild_into_a_new_root_of_a_healthy_root_reports_no_damage(tmp_root_copy, tmp_path, cli, private_containerd):
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(tmp_root_copy), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert not report["damage_found"], report
    assert not any(k.endswith("btrfs") for k in os.listdir(out)), "no snapshotter directory the root lacked"
    text = cli("rebuild", "--root", str(tmp_root_copy), "-o", str(tmp_path / "new2"), "-q")
    assert "nothing to repair" in text.stdout and "dropped" not in text.stdout
    assert "salvaged" not in text.stdout
    _assert_clean(cli, out)
    _daemon_accepts(private_containerd, out, "default", {"docker.io/library/bbx:oci", "docker.io/library/bbx:docker"})


def _entries(root: Path, skip: set[str]) -> dict[str, tuple]:
    """Every path below ``root``'s top-level entries but ``skip``: type, mode, owner, bytes, xattrs."""
    found = {}
    for top in os.listdir(root):
        if top in skip:
            continue
        for path in [root / top, *(root / top).rglob("*")]:
            st = path.lstat()
            if stat.S_ISSOCK(st.st_mode):
                continue
            data = None
            if stat.S_ISREG(st.st_mode):  # (a large one is compared by its size)
                data = path.read_bytes() if st.st_size <= 1 << 20 else st.st_size
            link = os.readlink(path) if path.is_symlink() else None
            xattrs = {} if path.is_symlink() else {n: os.getxattr(path, n) for n in os.listxattr(path)}
            found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data, link, xattrs)
    return found


def test_rebuild_into_a_new_root_carries_what_it_does_not_rebuild(tmp_root_copy, tmp_path, cli):
    """CRI's container status and sandbox files, the daemon's introspection uuid, the runtimes'
    directories: ``rebuild -o`` left them out, and the documented swap of the new root for the
    damaged one then dropped them (a docs red team run). They are copied as they are (modes,
    owners, times, xattrs, special files; sockets left), and the report names them."""
    cri = tmp_root_copy / "io.containerd.grpc.v1.cri"
    (cri / "containers" / "c1").mkdir(parents=True)
    (cri / "containers" / "c1" / "status").write_bytes(b'{"Version":"v1"}')
    (cri / "sandboxes" / "s1").mkdir(parents=True)
    (cri / "sandboxes" / "s1" / "hosts").write_text("127.0.0.1 localhost\n")
    os.chown(cri / "sandboxes" / "s1" / "hosts", 1234, 5678)
    os.chmod(cri / "sandboxes" / "s1", 0o750)
    os.setxattr(cri / "sandboxes" / "s1" / "hosts", "user.note", b"kept")
    os.symlink("hosts", cri / "sandboxes" / "s1" / "link")
    os.mkfifo(cri / "sandboxes" / "s1" / "pipe")
    (tmp_root_copy / "io.containerd.grpc.v1.introspection").mkdir(exist_ok=True)
    (tmp_root_copy / "io.containerd.grpc.v1.introspection" / "uuid").write_text("0b1d8c6e-node-identity")
    os.chmod(tmp_root_copy, 0o711)
    # a blockfile snapshotter's sparse scratch file, a hard link pair, a socket
    blockfile = tmp_root_copy / "io.containerd.snapshotter.v1.blockfile"
    blockfile.mkdir()
    with open(blockfile / "scratch", "wb") as f:
        f.truncate(8 << 30)  # (8 GiB of hole: copied dense it filled the disk, a red-team run)
        f.seek(1 << 20)
        f.write(b"data in the middle")
    os.link(blockfile / "scratch", blockfile / "scratch-link")
    import socket
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_root_copy / "containerd-debug.sock"))
    # a snapshot a dead containerd left mounted, and a bind mount of a directory of the same
    # filesystem (st_dev does not tell it): their contents are no part of the root
    mounted = tmp_root_copy / "tmpmounts" / "containerd-mount1"
    bound = tmp_root_copy / "tmpmounts" / "bound"
    mounted.mkdir(parents=True)
    bound.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "not-the-roots").write_text("y")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mounted)], check=True)
    subprocess.run(["mount", "--bind", str(tmp_path / "elsewhere"), str(bound)], check=True)
    try:
        (mounted / "not-the-roots").write_text("x")
        out = tmp_path / "new"
        result = cli("rebuild", "--root", str(tmp_root_copy), "-o", str(out), "-q", "--json")
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
        subprocess.run(["umount", str(bound)], check=True)
        listener.close()
    assert result.code == 0, result.stderr
    for point in ("containerd-mount1", "bound"):
        assert (out / "tmpmounts" / point).is_dir() and not any((out / "tmpmounts" / point).iterdir())
    assert {"io.containerd.grpc.v1.cri", "io.containerd.grpc.v1.introspection"} <= set(result.json["carried"])
    assert "containerd-debug.sock" not in result.json["carried"] and not (out / "containerd-debug.sock").exists()
    scratch = out / "io.containerd.snapshotter.v1.blockfile" / "scratch"
    assert scratch.stat().st_blocks * 512 < (1 << 30) and scratch.stat().st_size == 8 << 30
    with open(scratch, "rb") as f:
        f.seek(1 << 20)
        assert f.read(18) == b"data in the middle"
    assert scratch.stat().st_ino == (scratch.parent / "scratch-link").stat().st_ino
    skip = {"io.containerd.content.v1.content", "io.containerd.metadata.v1.bolt", "io.containerd.snapshotter.v1.overlayfs",
            "io.containerd.snapshotter.v1.native", "ctrconv-quarantine"}
    copied, source = _entries(out, skip), _entries(tmp_root_copy, skip)
    for entries in (copied, source):  # (seen mounted during the copy, unmounted now; 8 GiB)
        for key in ("tmpmounts/containerd-mount1", "tmpmounts/bound", "io.containerd.snapshotter.v1.blockfile/scratch",
                    "io.containerd.snapshotter.v1.blockfile/scratch-link", "containerd-debug.sock"):
            entries.pop(key, None)
    assert copied == source
    assert (out.stat().st_mode & 0o777) == 0o711
    text = cli("rebuild", "--root", str(tmp_root_copy), "-o", str(tmp_path / "new2"), "-q")
    assert "copied as they are (not rebuilt): io.containerd.grpc.v1.cri" in text.stdout, text.stdout
    _assert_clean(cli, out)


def test_flipped_byte_in_a_layer_is_quarantined_and_its_unpacked_images_kept(fixture_set, tmp_root_copy, cli,
                                                                              private_containerd):
    """The image stays: containerd runs it from its unpacked snapshots, which its config's label
    keeps (dropping it, as rebuild did, cost every namespace that ran it: a red-team run)."""
    layer = _oci(fixture_set)["manifests"][0]["layers"][0]["digest"]
    path = _blob(tmp_root_copy, layer)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(50)
        b = f.read(1)
        f.seek(50)
        f.write(bytes([b[0] ^ 1]))
    report = _rebuild(cli, tmp_root_copy)
    assert [c["digest"] for c in report["corrupt_blobs"]] == [layer]
    assert not path.exists()
    assert any(Path(b).name == layer.split(":")[1] for b in report["backups"])
    assert not [d for d in report["dropped"] if d["kind"] == "image"], report["dropped"]
    [kept] = [i for i in report["images"] if i["name"] == "docker.io/library/bbx:oci" and i["namespace"] == "default"]
    assert kept["origin"].startswith("kept: it runs from its unpacked snapshots") and layer in kept["origin"]
    images = _images(cli, tmp_root_copy)
    assert "default/docker.io/library/bbx:oci" in images and "default/docker.io/library/bbx:docker" in images
    _assert_clean(cli, tmp_root_copy)
    _daemon_accepts(private_containerd, tmp_root_copy, "default", {"docker.io/library/bbx:docker", "docker.io/library/bbx:zstd"})
    daemon = private_containerd(root=tmp_root_copy)
    daemon.force_gc("default")
    ran = daemon.ctr("run", "--rm", "docker.io/library/bbx:oci", "kept", "/bin/busybox", "echo", "ran", check=False)
    assert ran.returncode == 0 and "ran" in ran.stdout, ran.stderr
    row = {r.ref: r for r in daemon.images_check("default")}["docker.io/library/bbx:oci"]
    assert row.unpacked and not row.complete, row  # (as a node whose layer blobs are let go)


def test_meta_db_truncated_to_half(tmp_root_copy, cli, private_containerd):
    meta = tmp_root_copy.joinpath(*META)
    with BoltFile(meta) as db:
        used = db.meta.pgid * db.page_size
    with open(meta, "r+b") as f:
        f.truncate(used // 2)
    report = _rebuild(cli, tmp_root_copy)
    assert report["salvage"][str(meta)]["damage"]
    assert report["images"]
    _assert_clean(cli, tmp_root_copy)
    images = _images(cli, tmp_root_copy)
    assert images
    ns = sorted({k.split("/", 1)[0] for k in images})
    _daemon_accepts(private_containerd, tmp_root_copy, ns[0], {k.split("/", 1)[1] for k in images if k.startswith(ns[0] + "/")})


def test_meta_db_lost_entirely_images_rederived_with_names(fixture_set, tmp_root_copy, cli, private_containerd):
    tmp_root_copy.joinpath(*META).unlink()
    docker = fixture_set.image("default", "docker.io/library/bbx:docker")["target"]["digest"]
    report = _rebuild(cli, tmp_root_copy, "--name", f"{docker}=docker.io/library/restored:v1")
    derived = {i["name"]: i for i in report["images"]}
    assert "docker.io/library/restored:v1" in derived
    assert all(i["origin"] == "re-derived from content" for i in report["images"])
    _assert_clean(cli, tmp_root_copy)
    _daemon_accepts(private_containerd, tmp_root_copy, "default", {"docker.io/library/restored:v1"})


def test_root_page_zeroed(tmp_root_copy, cli):
    meta = tmp_root_copy.joinpath(*META)
    with BoltFile(meta) as db:
        root, page_size = db.meta.root, db.page_size
    with open(meta, "r+b") as f:
        f.seek(root * page_size)
        f.write(bytes(page_size))
    _rebuild(cli, tmp_root_copy)
    _assert_clean(cli, tmp_root_copy)
    assert _images(cli, tmp_root_copy)


def test_missing_snapshot_directory_is_unpacked_again(tmp_root_copy, cli, private_containerd):
    snaps = tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    victim = sorted((p for p in snaps.iterdir()), key=lambda p: int(p.name))[0]
    shutil.rmtree(victim)
    (snaps / "new-999").mkdir()
    report = _rebuild(cli, tmp_root_copy)
    assert report["snapshots_unpacked"] > 0
    _assert_clean(cli, tmp_root_copy)
    _daemon_accepts(private_containerd, tmp_root_copy, "default", {"docker.io/library/bbx:oci"})


def test_rebuild_into_a_new_root_leaves_the_source_alone(fixture_set, tmp_root_copy, tmp_path, cli, private_containerd):
    layer = _oci(fixture_set)["manifests"][0]["layers"][1]["digest"]
    _blob(tmp_root_copy, layer).unlink()
    before = sorted((str(p), p.lstat().st_mtime_ns) for p in tmp_root_copy.rglob("*"))
    out = tmp_path / "rebuilt"
    report = _rebuild(cli, tmp_root_copy, "-o", str(out))
    assert not report["backups"]
    assert sorted((str(p), p.lstat().st_mtime_ns) for p in tmp_root_copy.rglob("*")) == before
    _assert_clean(cli, out)
    daemon = private_containerd(root=out)
    run = daemon.ctr("run", "--rm", "docker.io/library/bbx:docker", "t1", "/bin/busybox", "ls", "/", check=False)
    assert run.returncode == 0, run.stderr
    assert "bin" in run.stdout.split()


def test_rebuild_refuses_a_running_root(tmp_root_copy, cli, private_containerd):
    private_containerd(root=tmp_root_copy)
    result = cli("rebuild", "--root", str(tmp_root_copy), "-q")
    assert result.code == 1
    assert "locked by a running containerd" in result.stderr


def test_containers_and_their_snapshots_survive_a_rebuild(fixture_set, tmp_root_copy, cli, private_containerd):
    daemon = private_containerd(root=tmp_root_copy)
    daemon.ctr("container", "create", "docker.io/library/bbx:docker", "keeper", "/bin/busybox", "sleep", "30")
    daemon.stop()
    layer = _oci(fixture_set)["manifests"][0]["layers"][2]["digest"]
    _blob(tmp_root_copy, layer).unlink()  # damage elsewhere: bbx:oci loses a layer
    _rebuild(cli, tmp_root_copy)
    _assert_clean(cli, tmp_root_copy)
    daemon = private_containerd(root=tmp_root_copy)
    assert "keeper" in daemon.ctr("containers", "ls", "-q").stdout.split()
    assert daemon.ctr("snapshots", "info", "keeper").returncode == 0
    start = daemon.ctr("task", "start", "-d", "keeper", check=False)
    assert start.returncode == 0, start.stderr
    daemon.ctr("task", "kill", "-s", "SIGKILL", "keeper", check=False)
    for _ in range(50):  # the shim needs a moment to reap the killed task
        if daemon.ctr("task", "delete", "keeper", check=False).returncode == 0:
            break
        time.sleep(0.1)


def test_a_lost_record_of_a_containers_base_layer_comes_back_with_the_container(fixture_set, tmp_root_copy, tmp_path,
                                                                                 cli, private_containerd):
    """meta.db (reading whole) lost the record of the top layer snapshot under a container's
    writable snapshot, which the snapshotter still holds: containerd still mounts and starts
    the container, but rebuild cleaned the layer up and dropped the container with its data (a
    red-team run). The record is written again from the snapshotter's."""
    from support.damage import snapshot_record_deleted

    daemon = private_containerd(root=tmp_root_copy)
    daemon.ctr("container", "create", "docker.io/library/bbx:oci", "keeper", "/bin/busybox", "sleep", "30")
    daemon.stop()
    chain = snapshot_record_deleted(tmp_root_copy, fixture_set)
    out = tmp_path / "new"
    report = cli("rebuild", "--root", str(tmp_root_copy), "-o", str(out), "-q", "--json").json
    assert not report["dropped"], report["dropped"]
    # (the record, and its link to the container's snapshot above it: written again together)
    assert {r["object"] for r in report["restored"]} == {f"snapshot default/overlayfs/{chain}"}
    _assert_clean(cli, out)
    daemon = private_containerd(root=out)
    assert "keeper" in daemon.ctr("containers", "ls", "-q").stdout.split()
    assert daemon.ctr("snapshots", "mounts", "/tmp/x", "keeper").returncode == 0


def test_a_lost_content_record_written_again_is_reported(fixture_set, tmp_root_copy, tmp_path, cli):
    """A meta.db that reads whole lost a layer's content record, the blob is on disk: the
    re-import writes the record again, and the report said "nothing to repair" (damage_found
    false) although verify had called the root broken (a red-team run)."""
    from support.damage import content_record_deleted

    digest = content_record_deleted(tmp_root_copy, fixture_set)
    assert cli("verify", "--root", str(tmp_root_copy), "-A", "-q").code == 1
    report = cli("rebuild", "--root", str(tmp_root_copy), "-o", str(tmp_path / "new"), "-q", "--json").json
    assert report["damage_found"] and {"kind": "content", "object": f"content default/{digest}",
                                       "reason": "content record lost; written again from the blob on disk"} in report["restored"]
    text = cli("rebuild", "--root", str(tmp_root_copy), "-o", str(tmp_path / "new2"), "-q").stdout
    assert "nothing to repair" not in text and f"restored content default/{digest}" in text, text
    _assert_clean(cli, tmp_path / "new")


def test_rebuild_into_another_filesystem_copies_and_verifies_each_blob(fixture_set, tmp_root_copy, tmp_path, cli):
    """Across filesystems blobs cannot be hard-linked: each is copied with its hash computed
    on the way, and a corrupt one is left out of the new root."""
    other_fs = tmp_path / "tmpfs"
    other_fs.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(other_fs)]).returncode:
        pytest.skip("needs root to mount a tmpfs")
    try:
        layer = _oci(fixture_set)["manifests"][0]["layers"][1]["digest"]
        path = _blob(tmp_root_copy, layer)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.write(b"\xff")
        report = _rebuild(cli, tmp_root_copy, "-o", str(other_fs / "root"))
        assert [c["digest"] for c in report["corrupt_blobs"]] == [layer]
        new = other_fs / "root"
        assert not _blob(new, layer).exists()
        copied = _blob(new, _oci(fixture_set)["manifests"][0]["layers"][0]["digest"])
        assert copied.stat().st_mode & 0o777 == 0o444 and copied.stat().st_nlink == 1
        _assert_clean(cli, new)
        assert not list(new.rglob(".*.ctrconv-tmp"))
    finally:
        subprocess.run(["umount", str(other_fs)])


def test_a_changed_snapshot_is_unpacked_again_unless_trusted(fixture_set, tmp_root_copy, tmp_path, cli):
    """A file deleted inside a snapshot: rebuild finds it by comparing the tree with its layer
    and unpacks that snapshot (and those above it) again; --trust-snapshots reuses it as is."""
    from support.damage import snapshot_file_deleted

    broken_fs = Path(snapshot_file_deleted(tmp_root_copy, fixture_set))
    trusted = tmp_path / "trusted"
    subprocess.run(["cp", "-a", str(tmp_root_copy), str(trusted)], check=True)

    result = cli("rebuild", "--root", str(trusted), "-q", "--json", "--trust-snapshots")
    assert result.code == 0, result.stderr
    assert not [d for d in result.json["dropped"] if d["kind"] == "snapshot-tree"]
    assert not (trusted / broken_fs.relative_to(tmp_root_copy) / "bin" / "busybox").exists()

    result = cli("rebuild", "--root", str(tmp_root_copy), "-q", "--json")
    assert result.code == 0, result.stderr
    differs = [d for d in result.json["dropped"] if d["kind"] == "snapshot-tree"]
    assert len(differs) == 1 and "bin/busybox" in differs[0]["reason"], differs
    assert result.json["snapshots_unpacked"] >= 1
    assert cli("verify", "--root", str(tmp_root_copy), "-A", "-q", "--deep").code == 0


def test_a_resumable_ingest_is_kept(tmp_path, cli, private_containerd):
    """A pull cut short leaves an ingest (record + partial data) that a later pull resumes:
    verify does not call it damage, rebuild keeps it in place and carries it into a new root."""
    import hashlib
    import subprocess

    root = tmp_path / "root"
    data = bytes(range(256)) * 800
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    daemon = private_containerd(root=root)
    cut = subprocess.run(
        [str(daemon.ctr_bin), "--address", daemon.address, "content", "ingest", "--expected-size", str(len(data)),
         "--expected-digest", digest, "resumable-ref"], input=data[:1000], capture_output=True)
    assert cut.returncode != 0  # the writer saw EOF before the expected size
    assert "resumable-ref" in daemon.ctr("content", "active").stdout
    daemon.stop()

    verify = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert verify.code == 0, verify.json["problems"]
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    before = meta.read_bytes()
    in_place = cli("rebuild", "--root", str(root), "-q")
    assert in_place.code == 0 and "nothing to repair" in in_place.stdout
    assert meta.read_bytes() == before

    new = tmp_path / "new"
    moved = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert moved.code == 0, moved.stderr
    assert not moved.json["dropped"]
    ingest_dirs = list((new / "io.containerd.content.v1.content" / "ingest").iterdir())
    assert len(ingest_dirs) == 1 and (ingest_dirs[0] / "data").stat().st_size == 1000
    daemon = private_containerd(root=new)
    assert "resumable-ref" in daemon.ctr("content", "active").stdout
    # The first 1000 bytes given are wrong: ctr skips its input up to the ingest's offset
    # (content.WriteBlob -> seekReader), so only a resume from the carried 1000 bytes commits
    # the expected digest; starting over would write the wrong bytes and fail the digest check.
    # (Not checked with `ctr content ls` afterwards: the committed blob is referenced by nothing,
    # and the daemon's GC may already have collected it.)
    whole = tmp_path / "blob"
    whole.write_bytes(b"\xff" * 1000 + data[1000:])
    with open(whole, "rb") as seekable:
        resumed = subprocess.run(
            [str(daemon.ctr_bin), "--address", daemon.address, "content", "ingest", "--expected-size", str(len(data)),
             "--expected-digest", digest, "resumable-ref"], stdin=seekable, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumable-ref" not in daemon.ctr("content", "active").stdout  # committed


def test_an_image_never_unpacked_stays_so(fixture_set, tmp_path, cli):
    """An image imported without unpacking (a kind-style node image) is no damage: rebuild in
    place leaves the root as it is, and into a new root it stays content-only too."""
    root = tmp_path / "root"
    archive = fixture_set.file(fixture_set.input("bbx-docker")["path"])
    assert cli("import", "--root", str(root), "-q", "--no-unpack", "-i", str(archive)).code == 0
    assert cli("verify", "--root", str(root), "-q").code == 0
    meta = root.joinpath(*META)
    before = meta.read_bytes()
    kept = cli("rebuild", "--root", str(root), "-q")
    assert kept.code == 0 and "nothing to repair" in kept.stdout and meta.read_bytes() == before
    new = tmp_path / "new"
    moved = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json")
    assert moved.code == 0 and moved.json["snapshots_unpacked"] == 0 and not moved.json["damage_found"]
    info = cli("verify", "--root", str(new), "-q", "--json")
    assert info.code == 0 and [p for p in info.json["info"] if p["kind"] == "not-unpacked"]


def test_in_place_every_blob_is_read_once(fixture_set, tmp_root_copy, monkeypatch):
    """The verify that finds the damage hashes every blob; the content check that follows
    reuses those hashes (the files are unchanged) instead of reading everything again, and
    still quarantines the corrupt blob verify found."""
    from collections import Counter

    import ctrconv.verify.blobs as blobs
    from ctrconv.recovery import rebuild_root
    from support.damage import flipped_layer_byte

    layer = flipped_layer_byte(tmp_root_copy, fixture_set)
    path = _blob(tmp_root_copy, layer)
    reads: Counter[str] = Counter()
    real = blobs.hash_blob

    def counting(digest, where, *args, **kwargs):
        reads[str(digest)] += 1
        return real(digest, where, *args, **kwargs)

    monkeypatch.setattr(blobs, "hash_blob", counting)
    on_disk = {f"sha256:{p.name}" for p in (tmp_root_copy / "io.containerd.content.v1.content" / "blobs" / "sha256").iterdir()}
    report = rebuild_root(tmp_root_copy)
    assert not report.healthy and [c["digest"] for c in report.corrupt_blobs] == [layer]
    assert set(reads) == on_disk and set(reads.values()) == {1}, reads
    assert not path.exists()
