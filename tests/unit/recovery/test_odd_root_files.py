"""Root files in states a node can leave them, found by a red-team run.

A blob file that is a symlink is a blob, as containerd reads it (``os.Stat``/``os.Open``
follow it): verify hashes it, ``rebuild -o`` keeps (copies) it and in place quarantines it when
it is corrupt (verify skipped it and called a corrupt one clean, ``rebuild -o`` dropped every
image using it, an in-place rebuild failed half way). A snapshotter db of 0 bytes is rebuilt in
place."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from support.small_root import small_root  # noqa: F401  (fixture)

BLOBS = ("io.containerd.content.v1.content", "blobs", "sha256")


def _largest_blob(root: Path) -> Path:
    return max(root.joinpath(*BLOBS).iterdir(), key=lambda p: p.stat().st_size)


def _symlinked(small_root: Path, tmp_path: Path, *, corrupt: bool) -> tuple[Path, str]:  # noqa: F811
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(small_root), str(root)], check=True)  # (device nodes in the snapshots)
    blob = _largest_blob(root)
    outside = tmp_path / "outside-blob"
    data = bytearray(blob.read_bytes())
    if corrupt:
        data[len(data) // 2] ^= 0xFF
    outside.write_bytes(bytes(data))
    blob.unlink()
    os.symlink(outside, blob)
    return root, f"sha256:{blob.name}"


def test_an_intact_symlinked_blob_is_hashed_and_kept(cli, small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    images = cli("ls", "--root", str(small_root), "-A", "-q").stdout
    root, digest = _symlinked(small_root, tmp_path, corrupt=False)
    verify = cli("verify", "--root", str(root), "-A", "--json")
    assert verify.code == 0, verify.json["problems"]
    assert verify.json["stats"]["blobs"] == len(list(small_root.joinpath(*BLOBS).iterdir()))
    new = tmp_path / "new"
    rebuilt = cli("rebuild", "--root", str(root), "-o", str(new), "-q", "--json", "--trust-snapshots")
    assert rebuilt.code == 0 and not rebuilt.json["dropped"], rebuilt.json["dropped"]
    assert cli("ls", "--root", str(new), "-A", "-q").stdout == images
    copied = new.joinpath(*BLOBS, digest.split(":")[1])
    assert copied.is_file() and not copied.is_symlink()  # the new root holds the bytes


def test_a_corrupt_symlinked_blob_is_a_problem_and_quarantined_in_place(cli, small_root: Path,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    root, digest = _symlinked(small_root, tmp_path, corrupt=True)
    verify = cli("verify", "--root", str(root), "-A", "--json")
    assert verify.code == 1
    assert any(p["kind"] == "digest-mismatch" and digest in p["object"] for p in verify.json["problems"]), \
        json.dumps(verify.json["problems"])[:2000]
    rebuilt = cli("rebuild", "--root", str(root), "-q", "--json")
    assert rebuilt.code == 0, rebuilt.stderr
    assert [b["digest"] for b in rebuilt.json["corrupt_blobs"]] == [digest]
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0


def test_an_empty_snapshotter_db_is_rebuilt_in_place(cli, small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    """A snapshotter metadata.db of 0 bytes (what a power cut on ext4 can leave): the in-place
    rebuild failed every time ("file size too small"); now it is replaced and the snapshots
    unpacked again (found by a red-team run). Its salvage says ``empty``, not ``missing``."""
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(small_root), str(root)], check=True)
    images = cli("ls", "--root", str(root), "-A", "--json").json["images"]
    db = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    db.write_bytes(b"")
    rebuilt = cli("rebuild", "--root", str(root), "-q", "--json")
    assert rebuilt.code == 0, rebuilt.stderr
    assert rebuilt.json["salvage"][str(db)]["source"] == "empty"
    assert rebuilt.json["snapshots_unpacked"] >= 1 and db.stat().st_size > 0
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0
    assert cli("ls", "--root", str(root), "-A", "--json").json["images"] == images


def test_a_meta_db_that_is_a_directory_is_unreadable_not_an_invalid_argument(cli, tmp_path: Path) -> None:
    """``rebuild -o`` said only "Invalid argument" (an mmap of a directory)."""
    root = tmp_path / "root"
    (root / "io.containerd.metadata.v1.bolt" / "meta.db").mkdir(parents=True)
    (root / "io.containerd.content.v1.content" / "blobs" / "sha256").mkdir(parents=True)
    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "--json", "-q")
    assert result.code == 0, result.stderr
    meta = str(root / "io.containerd.metadata.v1.bolt" / "meta.db")
    assert result.json["salvage"][meta] == {"source": "unreadable", "damage": [f"{meta} is not a regular file"]}
    assert cli("verify", "--root", str(tmp_path / "new"), "-q").code == 0


def test_what_a_write_stopped_between_the_bolt_files_leaves_is_information(cli, small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    """An import killed after the snapshotter db was replaced and before meta.db leaves backend
    snapshots no meta.db record names, without directories, and its re-run leaves the old
    ``v1/parents`` entries of ids no snapshot has: containerd's GC removes the first and ignores
    the second. verify called them problems (found by a red-team run killing writes)."""
    from ctrconv.bolt.reader import read_tree
    from ctrconv.bolt.writer import write_bolt
    from ctrconv.containerd.records import BackendSnapshot, parents_key, write_backend_snapshot

    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(small_root), str(root)], check=True)
    db = root / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"
    tree = read_tree(db)
    snapshots = tree.bucket(b"v1", b"snapshots")
    snapshots.sequence += 10
    record = snapshots.bucket(b"default/99/sha256:" + b"e" * 64, create=True)
    write_backend_snapshot(record, BackendSnapshot("default/99/sha256:" + "e" * 64, snapshots.sequence, "committed", None))
    tree.bucket(b"v1", b"parents", create=True).put(parents_key(90, 91), b"default/98/gone")
    write_bolt(db, tree)
    verify = cli("verify", "--root", str(root), "-A", "--json")
    assert verify.code == 0, verify.json["problems"]
    kinds = {i["kind"] for i in verify.json["info"]}
    assert {"missing-snapshot-dir", "snapshot-chain", "unreferenced-backend-snapshot"} <= kinds


def test_an_empty_meta_db_says_so_in_readers_and_stays_damage(cli, small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    """A meta.db of 0 bytes (an interrupted first write into a new root, a power cut before the
    first sync): ``ls`` and ``export`` said only "file size too small (0 bytes)"; they now say the
    file is empty and what makes it again, while ``verify`` still calls it damage and ``rebuild``
    makes it again from the content store."""
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(small_root), str(root)], check=True)
    (root / "io.containerd.metadata.v1.bolt" / "meta.db").write_bytes(b"")
    for args in (("ls",), ("export", "--all", "-o", str(tmp_path / "out.tar"))):
        result = cli(*args, "--root", str(root))
        assert result.code != 0 and not (tmp_path / "out.tar").exists()
        [line] = result.stderr.splitlines()
        assert line.startswith("ctrconv: error: ") and "file is empty (0 bytes)" in line and "rebuild" in line, line
    assert cli("verify", "--root", str(root), "-A", "-q").code == 1
    assert cli("rebuild", "--root", str(root), "-q").code == 0
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0
