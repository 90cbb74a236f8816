"""The fixture set holds what fixtures/README.md promises, and the daemon harness works."""

from __future__ import annotations

import fcntl
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.daemon import META_DB, OVERLAY_DB, parse_table
from support.fixture_set import FixtureSet

REPO = "docker.io/library/bbx"
NAMES = {f"{REPO}:{t}" for t in ("oci", "alias", "docker", "zstd", "uncompressed", "multi",
                                 "sparse")}


def test_parse_table_keeps_cells_with_spaces() -> None:
    text = ("REF   STATUS         UNPACKED \n"
            "a:b   complete (3/3) true\n")
    assert parse_table(text) == [{"REF": "a:b", "STATUS": "complete (3/3)", "UNPACKED": "true"}]


def test_both_namespaces_have_every_image(fixture_set: FixtureSet) -> None:
    for ns in ("default", "k8s.io"):
        names = {i["name"] for i in fixture_set.images(ns)}
        assert names == NAMES
        listed = (fixture_set.refs / "images-ls" / f"{ns}.txt").read_text()
        assert all(n in listed for n in NAMES)


def test_image_kinds_and_layer_media_types(fixture_set: FixtureSet) -> None:
    def layer_types(name: str) -> set[str]:
        rec = fixture_set.image("default", name)
        host = next(m for m in rec["manifests"] if m["digest"] == rec["host_manifest"])
        return {layer["mediaType"] for layer in host["layers"]}

    assert fixture_set.image("default", f"{REPO}:docker")["kind"] == "docker"
    assert layer_types(f"{REPO}:docker") == {"application/vnd.docker.image.rootfs.diff.tar"}
    assert layer_types(f"{REPO}:oci") == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert layer_types(f"{REPO}:zstd") == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert layer_types(f"{REPO}:uncompressed") == {"application/vnd.oci.image.layer.v1.tar"}
    oci = fixture_set.image("default", f"{REPO}:oci")
    assert oci["target"] == fixture_set.image("default", f"{REPO}:alias")["target"]


def test_multi_platform_complete_and_sparse_missing(fixture_set: FixtureSet) -> None:
    host = fixture_set.info["host_platform"]
    for ns in ("default", "k8s.io"):
        multi = fixture_set.image(ns, f"{REPO}:multi")
        sparse = fixture_set.image(ns, f"{REPO}:sparse")
        assert multi["kind"] == sparse["kind"] == "index"
        assert len(multi["platforms"]) == 3 and host in multi["platforms"]
        assert multi["complete"] and multi["export_all_platforms"]
        assert not sparse["complete"]
        for manifest in sparse["manifests"]:
            assert manifest["complete"] == (manifest["platform"] == host)
        assert all(b["present"] for b in sparse["blobs"] if b["role"] == "index")


def test_every_image_is_unpacked_and_checked_complete(fixture_set: FixtureSet) -> None:
    assert len(fixture_set.images()) >= 10  # both namespaces' images, or the loop proves nothing
    for rec in fixture_set.images():
        assert rec["check"]["unpacked"] is True
        assert rec["check"]["status"].startswith("complete")
        keys = {s["key"] for s in fixture_set.info["snapshots"][rec["namespace"]]}
        assert rec["top_chain_id"] in keys


def test_reference_exports_exist_and_name_their_image(fixture_set: FixtureSet) -> None:
    for rec in fixture_set.images():
        with tarfile.open(fixture_set.file(rec["export"])) as tar:
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
            names = tar.getnames()
        entry = index["manifests"][0]
        assert entry["annotations"]["io.containerd.image.name"] == rec["name"]
        assert entry["digest"] == rec["target"]["digest"]
        assert "blobs/sha256/" + rec["target"]["digest"].split(":")[1] in names


def test_snapshot_listings_show_overlay_whiteouts(fixture_set: FixtureSet) -> None:
    for ns in ("default", "k8s.io"):
        records = fixture_set.info["snapshots"][ns]
        assert records and all(r["listing"] for r in records)
        rec = fixture_set.image(ns, f"{REPO}:oci")
        host = rec["manifests"][0]
        base, second, third = (fixture_set.snapshot_listing(ns, c)["entries"]
                               for c in host["chain_ids"])
        by_path = {e["path"]: e for e in base}
        assert by_path["/bin/busybox"]["size"] > 500_000
        assert by_path["/bin/sh"]["link"] == "busybox"
        assert by_path["/data/setuid"]["mode"] == "4755"
        assert by_path["/data/zero-mode"]["mode"] == "0000"
        assert by_path["/data/null"]["rdev"] == [1, 3]
        assert by_path["/data/fifo"]["type"] == "fifo"
        assert by_path["/data/hard-b"]["hardlink_group"] == "/data/hard-a"
        assert by_path["/data/xattr-dir"]["xattrs"] == {"user.foo": "bar"}
        assert "trusted.fixture" not in by_path["/data/xattr-dir/file"]["xattrs"]
        second_paths = {e["path"]: e for e in second}
        assert second_paths["/data/remove-me"]["type"] == "char"
        assert second_paths["/data/remove-me"]["rdev"] == [0, 0]
        assert second_paths["/data/opq"]["xattrs"] == {"trusted.overlay.opaque": "y"}
        assert {e["path"] for e in third} >= {"/data/gone-dir", "/etc/hostname"}


def test_root_is_stopped_and_unlocked(fixture_set: FixtureSet) -> None:
    for rel in (META_DB, OVERLAY_DB):
        path = fixture_set.root / rel
        assert path.stat().st_size > 0
        with open(path, "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if a daemon still holds it
            fcntl.flock(fh, fcntl.LOCK_UN)


def test_inputs_recorded(fixture_set: FixtureSet) -> None:
    for rec in fixture_set.info["inputs"]:
        assert fixture_set.file(rec["path"]).exists()
    layout = fixture_set.inputs / "oci-layout"
    index = json.loads((layout / "index.json").read_text())
    assert {m["annotations"]["io.containerd.image.name"] for m in index["manifests"]} == (
        NAMES - {f"{REPO}:docker"})


def test_daemon_reopens_a_copy_of_the_root(tmp_root_copy: Path, private_containerd) -> None:
    daemon = private_containerd(root=tmp_root_copy)
    assert set(daemon.image_names("k8s.io")) == NAMES
    daemon.force_gc("default")
    rows = {r.ref: r for r in daemon.images_check("default")}
    assert rows[f"{REPO}:oci"].complete and rows[f"{REPO}:oci"].unpacked
    daemon.stop()
    with open(tmp_root_copy / META_DB, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.parametrize("ns", ["default", "k8s.io"])
def test_no_leases_left(fixture_set: FixtureSet, ns: str) -> None:
    text = (fixture_set.refs / "leases-ls" / f"{ns}.txt").read_text()
    assert parse_table(text) == []


def test_committed_small_root_opens_in_containerd(tmp_path: Path, private_containerd) -> None:
    fixtures = Path(__file__).resolve().parents[2] / "fixtures"
    subprocess.run(["tar", "-xJf", str(fixtures / "small-root.tar.xz"), "-C", str(tmp_path)],
                   check=True)
    root = tmp_path / "small-root"
    assert (root / META_DB).exists()
    daemon = private_containerd(root=root)
    def name_digest(text: str) -> set[tuple[str, str]]:
        return {(row["REF"], row["DIGEST"]) for row in parse_table(text)}

    committed = name_digest((fixtures / "small-root.images.txt").read_text())
    assert len(committed) == 1
    assert name_digest(daemon.ctr("images", "ls").stdout) == committed
    rows = daemon.images_check("default")
    assert len(rows) == 1 and rows[0].complete and rows[0].unpacked
