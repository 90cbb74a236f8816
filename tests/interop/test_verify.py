"""``ctrconv verify`` on real-daemon roots: clean, and a catalogue of damage."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


from ctrconv.bolt import BoltFile


def _image(fixture_set, name="docker.io/library/bbx:oci", ns="default"):
    return fixture_set.image(ns, name)


def _blob(root: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":")
    return root / "io.containerd.content.v1.content" / "blobs" / alg / hexpart


def _verify(cli, root: Path, *extra: str):
    return cli("verify", "--root", str(root), "-A", "--json", "-q", *extra)


def _kinds(result) -> set[str]:
    return {p["kind"] for p in result.json["problems"]}


def test_clean_root_passes_and_reports_absent_platforms(fixture_set, cli):
    result = _verify(cli, fixture_set.root)
    assert result.code == 0, result.stdout
    assert result.json["ok"] and not result.json["problems"]
    absent = [i for i in result.json["info"] if i["kind"] == "absent-platform"]
    assert absent and all("bbx:sparse" in i["object"] for i in absent)


def test_deleted_layer_blob(fixture_set, tmp_root_copy, cli):
    layer = _image(fixture_set)["manifests"][0]["layers"][0]["digest"]
    _blob(tmp_root_copy, layer).unlink()
    result = _verify(cli, tmp_root_copy)
    assert result.code == 1
    assert "missing-blob" in _kinds(result)
    assert any(layer in p["message"] or layer in p["object"] for p in result.json["problems"])


def test_flipped_byte_in_layer_blob(fixture_set, tmp_root_copy, cli):
    layer = _image(fixture_set)["manifests"][0]["layers"][0]["digest"]
    path = _blob(tmp_root_copy, layer)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = _verify(cli, tmp_root_copy)
    assert result.code == 1
    problems = [p for p in result.json["problems"] if p["kind"] == "digest-mismatch"]
    assert problems and problems[0]["object"] == f"blob {layer}"


def test_truncated_config(fixture_set, tmp_root_copy, cli):
    config = _image(fixture_set)["manifests"][0]["config"]["digest"]
    path = _blob(tmp_root_copy, config)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.truncate(10)
    result = _verify(cli, tmp_root_copy)
    assert result.code == 1
    assert {"size-mismatch", "digest-mismatch"} <= _kinds(result)


def test_meta_db_truncated_to_half(tmp_root_copy, cli):
    meta = tmp_root_copy / "io.containerd.metadata.v1.bolt" / "meta.db"
    with BoltFile(meta) as db:
        used = db.meta.pgid * db.page_size
    with open(meta, "r+b") as f:
        f.truncate(used // 2)
    result = _verify(cli, tmp_root_copy)
    assert result.code == 1
    assert "bolt" in _kinds(result)
    assert "Traceback" not in result.stderr


def test_meta_db_leaf_page_zeroed(tmp_root_copy, cli):
    meta = tmp_root_copy / "io.containerd.metadata.v1.bolt" / "meta.db"
    with BoltFile(meta) as db:
        page_size = db.page_size
        root = db.meta.root
    with open(meta, "r+b") as f:
        f.seek(root * page_size)
        f.write(bytes(page_size))
    result = _verify(cli, tmp_root_copy)
    assert result.code == 1
    bolt = [p for p in result.json["problems"] if p["kind"] == "bolt"]
    assert any(f"page {root}" in p["location"] or f"page {root}" in p["message"] for p in bolt)


def test_orphan_and_missing_snapshot_dirs(tmp_root_copy, cli):
    snaps = tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    (snaps / "new-123").mkdir()
    victim = sorted(snaps.iterdir(), key=lambda p: p.name)[0]
    shutil.rmtree(victim)
    result = _verify(cli, tmp_root_copy)
    assert result.code == 1
    assert _kinds(result) == {"missing-snapshot-dir"}
    # an orphan directory is what containerd's start-up cleanup removes: information only
    info = [p for p in result.json["info"] if p["kind"] == "orphan-snapshot-dir"]
    assert info and "new-123" in info[0]["object"]


def test_orphan_snapshot_dir_alone_is_clean(tmp_root_copy, cli):
    """An orphan directory no id containerd issues again can collide with is information; one
    above the bucket sequence is a problem (the next snapshot gets its id: "file exists")."""
    snapshots = tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    (snapshots / "new-2718281828" / "fs").mkdir(parents=True)
    result = _verify(cli, tmp_root_copy)
    assert result.code == 0, result.json["problems"]
    assert any(p["kind"] == "orphan-snapshot-dir" for p in result.json["info"])
    (snapshots / "999" / "fs").mkdir(parents=True)
    result = _verify(cli, tmp_root_copy)
    assert [(p["kind"], p["object"]) for p in result.json["problems"]] == [
        ("orphan-snapshot-dir", "overlayfs/snapshots/999")]


def test_verify_text_output_and_exit_code(tmp_root_copy, fixture_set, cli):
    layer = _image(fixture_set)["manifests"][0]["layers"][0]["digest"]
    _blob(tmp_root_copy, layer).unlink()
    result = cli("verify", "--root", str(tmp_root_copy), "-q")
    assert result.code == 1
    assert "PROBLEM missing-blob" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].split()[0] != "0"


def _first_layer_fs(root: Path) -> Path:
    snaps = root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    return sorted(snaps.iterdir(), key=lambda p: int(p.name))[0] / "fs"


def test_deep_finds_a_tampered_snapshot(tmp_root_copy, cli):
    fs = _first_layer_fs(tmp_root_copy)
    victim = next(p for p in sorted(fs.rglob("*")) if p.is_file() and not p.is_symlink() and p.stat().st_size > 0)
    with open(victim, "r+b") as f:
        f.write(b"X")
    shallow = _verify(cli, tmp_root_copy)
    assert shallow.code == 0
    deep = _verify(cli, tmp_root_copy, "--deep")
    assert deep.code == 1
    differs = [p for p in deep.json["problems"] if p["kind"] == "snapshot-differs"]
    assert differs and str(victim.relative_to(fs)) in differs[0]["message"]


def test_deep_blames_a_corrupt_layer_blob_not_its_intact_snapshot(fixture_set, tmp_root_copy, cli):
    """A bit flipped in a layer blob: the blob is the problem; its snapshot, which runs, could
    not be compared (``snapshot-not-compared``, information), not one that "differs" (a red-team
    run: every namespace's intact snapshot was called damaged). A lost snapshot directory is
    reported as such, and not also as a tree that "cannot be read"."""
    layer = _image(fixture_set)["manifests"][0]["layers"][0]["digest"]
    path = _blob(tmp_root_copy, layer)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    deep = _verify(cli, tmp_root_copy, "--deep")
    assert deep.code == 1
    assert _kinds(deep) == {"digest-mismatch"}, deep.json["problems"]
    not_compared = [i for i in deep.json["info"] if i["kind"] == "snapshot-not-compared"]
    assert not_compared and all(layer in i["message"] for i in not_compared), deep.json["info"]

    shutil.rmtree(_first_layer_fs(tmp_root_copy).parent)
    deep = _verify(cli, tmp_root_copy, "--deep")
    assert "missing-snapshot-dir" in _kinds(deep) and "snapshot-differs" not in _kinds(deep), deep.json["problems"]


def test_deep_on_a_clean_root(fixture_set, cli):
    result = _verify(cli, fixture_set.root, "--deep")
    assert result.code == 0, result.json["problems"]
    assert result.json["stats"]["snapshots compared"] >= 6


def test_deep_verify_never_writes_into_the_root(tmp_root_copy, cli):
    snapdir = tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs"
    before = sorted((str(p), p.lstat().st_mtime_ns) for p in snapdir.iterdir())
    mtime = snapdir.stat().st_mtime_ns
    assert _verify(cli, tmp_root_copy, "--deep").code == 0
    assert sorted((str(p), p.lstat().st_mtime_ns) for p in snapdir.iterdir()) == before
    assert snapdir.stat().st_mtime_ns == mtime


def test_verify_of_a_live_root_reads_private_copies(tmp_root_copy, private_containerd, cli):
    """With --ignore-lock the bolt files a running containerd holds are checked in consistent
    copies: clean, and the live files are never opened for the structure check."""
    daemon = private_containerd(root=tmp_root_copy)
    daemon.ctr("images", "ls")  # the snapshotter db is opened lazily; make sure both are held
    refused = cli("verify", "--root", str(tmp_root_copy), "-A", "-q", "--json")
    assert refused.code == 2 and "locked by a running containerd" in refused.stderr  # not 1: "problems found"
    result = _verify(cli, tmp_root_copy, "--ignore-lock")
    assert result.code == 0, result.json["problems"]
    assert result.json["stats"]["bolt files"] >= 2


def test_a_damaged_snapshotter_db_is_blamed_not_meta_db(tmp_root_copy, cli):
    db = tmp_root_copy / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    db.write_bytes(b"\0" * 8192)
    result = _verify(cli, tmp_root_copy)
    assert result.code == 1
    unreadable = [p for p in result.json["problems"] if p["kind"] == "unreadable"]
    assert unreadable and all("metadata.db" in p["object"] and "meta.db" != p["object"] for p in unreadable)
    assert any(p["kind"] == "missing-backend-snapshot" for p in result.json["problems"])


def test_an_unreadable_blob_is_a_problem_not_a_crash(tmp_root_copy, fixture_set, cli, monkeypatch):
    """A blob that cannot be opened (permissions, I/O error) is reported by verify, named by ls
    and export, each in one line; root bypasses file modes, so the open is made to fail."""
    import builtins

    digest = fixture_set.image("default", "docker.io/library/bbx:zstd")["target"]["digest"]
    victim = str(tmp_root_copy / "io.containerd.content.v1.content" / "blobs" / "sha256" / digest[7:])
    real_open = builtins.open

    def failing_open(file, *args, **kwargs):
        if str(file) == victim:
            raise PermissionError(13, "Permission denied", victim)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    result = cli("verify", "--root", str(tmp_root_copy), "-n", "default", "-q", "--json")
    assert result.code == 1, result.stderr
    kinds = {p["kind"] for p in result.json["problems"] if digest in json.dumps(p)}
    assert kinds, result.json["problems"]
    result = cli("export", "--root", str(tmp_root_copy), "--image", "bbx:zstd", "-o", str(tmp_root_copy.parent / "x.tar"))
    assert result.code == 1 and "cannot be read" in result.stderr and digest in result.stderr, result.stderr
    assert not (tmp_root_copy.parent / "x.tar").exists()


def test_live_root_problem_seen_once_is_changed_while_reading(tmp_root_copy, monkeypatch):
    """On a live root (``--ignore-lock``), a problem the second private reading does not confirm
    is the daemon's churn, reported as information; one seen in both readings stays a problem."""
    from ctrconv.containerd.root import ContainerdRoot
    from ctrconv.verify import root as verify_mod
    from ctrconv.verify.problems import Report

    readings: list[set[str] | None] = []

    def reading(croot, namespaces, ignore_lock, jobs, progress, deep, hash_only, *_later):
        readings.append(hash_only)
        report = Report()
        report.add("missing-blob", "blob sha256:" + "a" * 64, "x", "content record in default but no blob file")
        if len(readings) == 1:
            report.add("orphan-snapshot-dir", "overlayfs/snapshots/9", "y", "d", severity="info")
            report.add("missing-snapshot-dir", "backend snapshot overlayfs/k", "z", "id 9 has no directory")
        return report

    monkeypatch.setattr(ContainerdRoot, "is_locked", lambda self: True)
    monkeypatch.setattr(verify_mod, "_verify_once", reading)
    report = verify_mod.verify_root(tmp_root_copy, ignore_lock=True)
    assert readings == [None, {"sha256:" + "a" * 64}]  # the second reading hashes only what was flagged
    assert [p.kind for p in report.errors] == ["missing-blob"]
    churn = [p for p in report.infos if p.kind == "changed-while-reading"]
    assert len(churn) == 1 and "missing-snapshot-dir" in churn[0].message
    assert any(p.kind == "orphan-snapshot-dir" for p in report.infos)


def test_no_hash_checks_records_presence_and_sizes_but_reads_no_blob(fixture_set, tmp_root_copy, cli, monkeypatch):
    """``--no-hash``: a flipped byte goes unseen (nothing is read), a lost or truncated blob and
    an unreferenced file are still found, and a clean root gives the same report as a full
    verify apart from the bytes hashed."""
    full = _verify(cli, fixture_set.root)
    quick = _verify(cli, fixture_set.root, "--no-hash")
    assert quick.code == 0 and quick.json["problems"] == [] and quick.json["info"] == full.json["info"]
    assert "bytes hashed" not in quick.json["stats"] and quick.json["stats"]["blobs"] == full.json["stats"]["blobs"]

    manifest = _image(fixture_set)["manifests"][0]
    flipped, lost = manifest["layers"][0]["digest"], manifest["config"]["digest"]
    path = _blob(tmp_root_copy, flipped)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0xFF]))
    _blob(tmp_root_copy, lost).unlink()
    stray = _blob(tmp_root_copy, "sha256:" + "0" * 64)
    stray.write_bytes(b"x")
    assert "digest-mismatch" in _kinds(_verify(cli, tmp_root_copy))
    from ctrconv.verify import root as verify_root_module

    def no_reading(*args, **kwargs):
        raise AssertionError("--no-hash read a blob")

    monkeypatch.setattr(verify_root_module, "hashed_blobs", no_reading)
    from ctrconv import api

    report = api.verify_root(tmp_root_copy, hash_contents=False)
    kinds = {(p.kind, p.object) for p in report.problems}
    assert ("missing-blob", f"blob {lost}") in kinds
    assert ("unreferenced-blob", f"blob sha256:{'0' * 64}") in kinds
    assert not any(p.kind == "digest-mismatch" for p in report.problems)


def test_a_root_that_lost_its_meta_db_is_damage_not_a_usage_error(tmp_root_copy, cli, tmp_path):
    """meta.db gone (fsck put it in lost+found) beside a whole content store and snapshotter:
    verify said "not a containerd root" (exit 2) while rebuild repairs it, so a script gating
    rebuild on verify's exit 1 never repaired it (a red-team run). It is a problem now; a
    directory with none of containerd's stores is still no root."""
    (tmp_root_copy / "io.containerd.metadata.v1.bolt" / "meta.db").unlink()
    result = cli("verify", "--root", str(tmp_root_copy))
    assert result.code == 1 and "PROBLEM missing-meta-db" in result.stdout, result.stdout + result.stderr
    assert cli("verify", "--root", str(tmp_root_copy), "--json").json["problems"][0]["kind"] == "missing-meta-db"
    rebuilt = tmp_path / "rebuilt"
    assert cli("rebuild", "--root", str(tmp_root_copy), "-o", str(rebuilt), "-q").code == 0
    assert cli("verify", "--root", str(rebuilt)).code == 0
    (tmp_path / "empty").mkdir()
    assert cli("verify", "--root", str(tmp_path / "empty")).code == 2


def test_a_rebuild_that_only_rewrites_the_files_does_not_say_nothing_to_repair(realnode_set_for, cli, tmp_path):
    """One flipped bit in a meta page: verify reports it, rebuild writes both bolt files again
    (with backups) and said "nothing to repair", which recovery.md defines as nothing written
    (a red-team run)."""
    tmp_root_copy = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    meta = tmp_root_copy / "io.containerd.metadata.v1.bolt" / "meta.db"
    with open(meta, "r+b") as f:
        f.seek(4096 + 20)
        value = f.read(1)[0]
        f.seek(4096 + 20)
        f.write(bytes([value ^ 1]))
    assert cli("verify", "--root", str(tmp_root_copy), "-q").code == 1
    result = cli("rebuild", "--root", str(tmp_root_copy))
    assert result.code == 0 and "backup: " in result.stdout, result.stdout + result.stderr
    assert "nothing to repair" not in result.stdout and "no record lost" in result.stdout, result.stdout
    assert cli("verify", "--root", str(tmp_root_copy), "-q").code == 0


def test_deep_compares_the_snapshots_of_every_platform_unpacked(realnode_set_for, cli, tmp_path):
    """A namespace that unpacked another platform's image (an arm64 pull on an amd64 node):
    ``verify --deep`` compared the host's chains only, and called a damaged arm64 snapshot
    clean, while ``rebuild -o`` found it (a red-team run)."""
    from ctrconv.containerd.metadata import SnapshotterDB

    root = realnode_set_for("1.6").copy_root("node", tmp_path / "node")
    assert cli("verify", "--root", str(root), "-A", "--deep", "-q").code == 0
    with BoltFile(root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db") as db:
        foreign = sorted((s for s in SnapshotterDB(db).snapshots() if s.key.startswith("other/") and not s.parent),
                         key=lambda s: s.id)
    assert foreign, "the corpus's namespace other holds an arm64 unpack"
    fs = root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots" / str(foreign[0].id) / "fs"
    victim = next(p for p in sorted(fs.rglob("*")) if p.is_file() and not p.is_symlink())
    victim.unlink()
    result = cli("verify", "--root", str(root), "-A", "--deep")
    assert result.code == 1 and "PROBLEM snapshot-differs: snapshot other/" in result.stdout, result.stdout


def test_garbage_no_record_names_is_information_and_a_directory_is_called_one(fixture_set, tmp_root_copy, cli):
    """A file named like a blob that no record names, whose bytes do not match its name (what a
    crash or a full disk leaves): containerd's GC deletes it, so it is information, its fault
    named, not a ``digest-mismatch`` problem (a red-team run: exit 1 on an otherwise healthy
    node). A directory where a recorded blob goes is called a directory, not "4096 bytes"."""
    blobs = tmp_root_copy / "io.containerd.content.v1.content" / "blobs" / "sha256"
    (blobs / ("f" * 64)).write_bytes(b"garbage\n")
    result = _verify(cli, tmp_root_copy)
    assert result.code == 0, result.json["problems"]
    info = [i for i in result.json["info"] if i["object"] == "blob sha256:" + "f" * 64]
    assert [i["kind"] for i in info] == ["unreferenced-blob"] and "content hashes to sha256:" in info[0]["message"]

    layer = _image(fixture_set)["manifests"][0]["layers"][0]["digest"]
    path = _blob(tmp_root_copy, layer)
    path.unlink()
    path.mkdir()
    result = _verify(cli, tmp_root_copy)
    assert result.code == 1
    mine = [p for p in result.json["problems"] if p["object"] == f"blob {layer}"]
    assert {p["kind"] for p in mine} == {"missing-blob"} and "its path is a directory" in mine[0]["message"], mine

    path.rmdir()
    path.symlink_to("/nonexistent-blob")
    mine = [p for p in _verify(cli, tmp_root_copy).json["problems"] if p["object"] == f"blob {layer}"]
    assert "its path is a symbolic link to nothing (/nonexistent-blob)" in mine[0]["message"], mine
