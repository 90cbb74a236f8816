"""A meta.db put back from an older copy: the snapshotter's database holds what was made since (an
image imported and a container with files in its writable layer), which that meta.db never issued.
verify called the root clean, rebuild found nothing to repair, and containerd's next garbage
collection deleted the container's files (a red-team run). The snapshot keys give it away: each
carries the number meta.db's namespace bucket issued it, and those are above the old sequence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.archives import busybox_oci_archive

pytestmark = pytest.mark.interop

META = Path("io.containerd.metadata.v1.bolt") / "meta.db"
SNAPSHOTS = Path("io.containerd.snapshotter.v1.overlayfs") / "snapshots"


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_a_meta_db_put_back_from_an_older_copy_is_found_and_what_was_made_since_kept(
        line, realnode_set_for, cli, tmp_path, private_containerd):
    from support.versions import bin_dir_for

    binary_dir = None if line == "1.6" else str(bin_dir_for(line))
    corpus = realnode_set_for(line)
    root = corpus.copy_root("node", tmp_path / "root")
    saved = tmp_path / "meta.db.before"
    shutil.copy2(root / META, saved)
    archive = busybox_oci_archive(tmp_path, "docker.io/library/since:1", extra={"etc/since": b"made later\n"})
    daemon = private_containerd(root=root, binary_dir=binary_dir)
    daemon.ctr("images", "import", str(archive))
    daemon.ctr("containers", "create", "docker.io/library/since:1", "since")
    before = set(daemon.ctr("snapshots", "ls").stdout.splitlines()[1:])
    daemon.stop()
    writable = [p for p in (root / SNAPSHOTS).iterdir() if (p / "work").is_dir() and not any((p / "fs").iterdir())]
    newest = max(writable, key=lambda p: int(p.name))  # (the container's, made last)
    (newest / "fs" / "kept").write_text("the container's own data\n")
    shutil.copy2(saved, root / META)

    result = cli("verify", "--root", str(root), "-A", "--json")
    assert result.code == 1, result.stdout
    problems = [p for p in result.json["problems"] if p["kind"] == "meta-db-older"]
    assert any(p["object"].endswith("/since") for p in problems), result.json["problems"]

    rebuilt = cli("rebuild", "--root", str(root), "-q", "--json")
    assert rebuilt.code == 0, rebuilt.stderr
    assert any(r["object"] == "snapshot default/overlayfs/since" for r in rebuilt.json["restored"]), rebuilt.json
    # the image imported since comes back from its blobs (its name was in the archive only)
    assert [i for i in rebuilt.json["images"] if i["origin"] == "re-derived from content"], rebuilt.json["images"]
    assert any("meta.db is older than overlayfs/metadata.db" in d
               for entry in rebuilt.json["salvage"].values() for d in entry.get("damage", []))
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0
    daemon = private_containerd(root=root, binary_dir=binary_dir)
    daemon.force_gc("default")
    daemon.stop()
    daemon = private_containerd(root=root, binary_dir=binary_dir)
    daemon.force_gc("default")
    assert (newest / "fs" / "kept").read_text() == "the container's own data\n"
    after = set(daemon.ctr("snapshots", "ls").stdout.splitlines()[1:])
    assert {line.split()[0] for line in before if line.split()[0] == "since"} <= {line.split()[0] for line in after}
