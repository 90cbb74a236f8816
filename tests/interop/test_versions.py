"""Roots written by containerd 1.7 (Debian trixie) and 2.x (Debian sid) read like that version's ctr.

Each line's own fixture set (same inputs as the 1.6 set, imported with that line's ``ctr``) is
read by ctrconv and compared with Go bbolt and with the ``ctr`` outputs recorded at build time.
The full matrix runs against the system containerd elsewhere; this is the per-version subset.
Observed differences between the lines are listed in ``docs/containerd-versions.md``.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from ctrconv.bolt import BoltFile, read_tree
from ctrconv.bolt import _structs as S
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.inventory import human_size
from support.daemon import META_DB, OVERLAY_DB, PrivateContainerd, parse_table
from support.fixture_set import FixtureSet
from support.versions import SCHEMA_VERSION, VERSIONS, bin_dir_for, containerd_build

pytestmark = pytest.mark.interop

SNAPSHOTTER = "overlayfs"
EXPORTED = ("docker.io/library/bbx:oci", "docker.io/library/bbx:multi")


@pytest.fixture(params=VERSIONS, scope="module")
def version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def vset(version, fixture_set_for) -> FixtureSet:
    return fixture_set_for(version)


def _root_keys(path: Path) -> list[bytes]:
    with BoltFile(path) as db:
        return [key for key, _ in db.root.items()]


def test_fixture_set_was_built_by_that_line(version, vset):
    build = containerd_build(version)
    assert vset.info["containerd_version"] == build.version
    assert build.version.split(".")[0] == str(build.release.major)
    assert Path(vset.info["containerd_bin"]).parent == build.bin_dir


def test_bolt_files_read_like_go(vset):
    from support.go_bbolt import go_dump

    for rel in (META_DB, OVERLAY_DB):
        path = vset.root / rel
        assert read_tree(path).to_plain() == go_dump(path), rel


def test_meta_db_freelist_is_not_synced(vset):
    """1.7+ opens meta.db with NoFreelistSync; the snapshotter's metadata.db keeps a freelist."""
    with BoltFile(vset.root / META_DB) as db:
        assert db.meta.freelist_synced is False
        assert db.meta.freelist == S.NO_FREELIST
    with BoltFile(vset.root / OVERLAY_DB) as db:
        assert db.meta.freelist_synced is True


def test_schema_version_and_top_level_buckets(version, vset):
    with BoltFile(vset.root / META_DB) as db:
        meta = MetadataDB(db)
        assert meta.schema_version == SCHEMA_VERSION[version]
        assert sorted(meta.namespaces()) == sorted(vset.info["namespaces"])
    assert _root_keys(vset.root / META_DB) == [b"v1"]


def test_ls_matches_that_lines_ctr(vset, cli):
    for namespace in vset.info["namespaces"]:
        rows = parse_table((vset.refs / "images-ls" / f"{namespace}.txt").read_text())
        result = cli("ls", "--root", str(vset.root), "-n", namespace, "--json")
        assert result.code == 0, result.stderr
        ours = {i["name"]: i for i in result.json["images"]}
        assert sorted(ours) == sorted(r["REF"] for r in rows)
        for row in rows:
            image = ours[row["REF"]]
            assert (image["media_type"], image["digest"]) == (row["TYPE"], row["DIGEST"])
            assert human_size(image["size"]) == row["SIZE"]
            assert ",".join(image["platforms"]) == row["PLATFORMS"]
            assert image["complete"], image


def test_snapshot_records_match_ctr_snapshots_info(vset):
    """Keys, parents and labels (2.x's transfer-service unpack adds ``snapshot.ref``)."""
    with BoltFile(vset.root / META_DB) as db:
        meta = MetadataDB(db)
        for namespace, recorded in vset.info["snapshots"].items():
            ours = {s.key: (s.parent or "", s.labels) for s in meta.snapshots(namespace, SNAPSHOTTER)}
            assert ours == {r["key"]: (r["parent"], r["labels"]) for r in recorded}


def _verify(cli, root: Path):
    return cli("verify", "--root", str(root), "-A", "--json", "-q")


def test_verify_is_clean(version, vset, cli):
    """2.x keeps non-host manifests of a sparse index without their config/layers: info only."""
    result = _verify(cli, vset.root)
    assert result.code == 0, result.stdout
    assert result.json["ok"] and not result.json["problems"]


def test_verify_problems_only_concern_absent_platforms(vset, cli):
    """Whatever verify still flags is limited to the non-host children of ``:sparse``."""
    sparse = vset.image("default", "docker.io/library/bbx:sparse")
    absent: set[str] = set()
    for m in sparse["manifests"]:
        if m["digest"] != sparse["host_manifest"]:
            absent |= {m["digest"], m["config"]["digest"]} | {x["digest"] for x in m["layers"]}
    for problem in _verify(cli, vset.root).json["problems"]:
        assert problem["object"].endswith("/docker.io/library/bbx:sparse"), problem
        assert {d for d in re.findall(r"sha256:[0-9a-f]{64}", problem["message"])} <= absent, \
            problem


def _plain(bucket: dict) -> dict:
    """``ctrconv dump --json`` bucket form -> ``BucketTree.to_plain()`` form."""
    return {"sequence": bucket["sequence"], "entries": {
        e["key_hex"]: _plain(e["bucket"]) if "bucket" in e else e["value_hex"]
        for e in bucket["entries"]}}


def test_dump_shows_every_bolt_file(version, vset, cli):
    for rel in (META_DB, OVERLAY_DB):
        path = vset.root / rel
        result = cli("dump", "--json", str(path))
        assert result.code == 0, result.stderr
        assert _plain(result.json["root"]) == read_tree(path).to_plain()
    text = cli("dump", str(vset.root / META_DB))
    assert text.code == 0, text.stderr
    assert "freelist none (not synced)" in text.stdout.splitlines()[0]
    assert re.search(rf"^  version = {SCHEMA_VERSION[version]}$", text.stdout, re.M)


def _blob_names(path: Path) -> set[str]:
    with tarfile.open(path) as tar:
        return {m.name for m in tar.getmembers() if m.isfile() and m.name.startswith("blobs/")}


def _index_targets(path: Path) -> list[tuple[str, str]]:
    with tarfile.open(path) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    return [(m["digest"], m["annotations"]["io.containerd.image.name"]) for m in index["manifests"]]


def test_export_oci_tar_has_the_blobs_of_ctr_export(vset, cli, tmp_path):
    for name in EXPORTED:
        record = vset.image("default", name)
        out = tmp_path / f"{record['target']['digest'][7:19]}.tar"
        result = cli("export", "--root", str(vset.root), "-n", "default", "--image", name,
                     "-o", str(out), "--format", "oci-tar", "-q")
        assert result.code == 0, result.stderr
        reference = vset.file(record["export"])
        assert _blob_names(out) == _blob_names(reference), name
        assert _index_targets(out) == _index_targets(reference), name
        # Byte for byte, index.json's top-level mediaType included: the default follows the
        # containerd line that wrote the root, so the export matches that node's own ctr.
        assert out.read_bytes() == reference.read_bytes(), name


def test_ctr_export_index_json_names_its_media_type(vset):
    """1.7+ ``ctr images export`` writes ``mediaType`` in index.json (1.6 omits it)."""
    for name in EXPORTED:
        with tarfile.open(vset.file(vset.image("default", name)["export"])) as tar:
            raw = tar.extractfile("index.json").read()  # type: ignore[union-attr]
        assert raw.startswith(
            b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'), raw


def _copy_root(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def test_2x_migrates_a_1_7_root_and_drops_foreign_top_level_buckets(
        fixture_set_for, tmp_path, cli):
    """What 2.x does at start to a version-3 meta.db, checked on a real 1.7 root.

    The 3 -> 4 migration deletes every root-level bucket except ``v1`` (1.7 kept sandboxes
    there), rewrites ``v1/version`` and, being a write, leaves an unsynced freelist.
    """
    from support.go_bbolt import go_dump

    old = fixture_set_for("1.7")
    bin2 = bin_dir_for("2.x")
    root = _copy_root(old.root, tmp_path / "root")
    meta_db = root / META_DB
    tree = read_tree(meta_db)
    tree.bucket(b"foreign", create=True).put(b"k", b"v")
    write_bolt(meta_db, tree, page_size=4096)
    assert _root_keys(meta_db) == [b"foreign", b"v1"]

    with PrivateContainerd(bin2, root=root, workdir=tmp_path) as daemon:
        listings = {ns: daemon.ctr("images", "ls", namespace=ns).stdout
                    for ns in old.info["namespaces"]}

    assert _root_keys(meta_db) == [b"v1"]
    with BoltFile(meta_db) as db:
        assert MetadataDB(db).schema_version == 4
        assert db.meta.freelist_synced is False
    assert read_tree(meta_db).to_plain() == go_dump(meta_db)
    for ns, text in listings.items():
        rows = parse_table(text)
        result = cli("ls", "--root", str(root), "-n", ns, "--json")
        assert result.code == 0, result.stderr
        assert sorted((i["name"], i["digest"]) for i in result.json["images"]) == \
            sorted((r["REF"], r["DIGEST"]) for r in rows)
        assert rows == parse_table((old.refs / "images-ls" / f"{ns}.txt").read_text())


def test_2x_transfer_import_keeps_all_index_children_and_unpacks_all_platforms(fixture_set_for):
    """Recorded 2.x behaviour the import/rebuild code must accept (1.6/1.7 differ).

    ``ctr images import`` goes through the transfer service in 2.x: with ``--all-platforms``
    every platform is unpacked; without it the index still references (``gc.ref.content.m.N``)
    every child manifest, so GC keeps non-host manifests but drops their configs and layers.
    """
    old, new = fixture_set_for("1.7"), fixture_set_for("2.x")
    for fs, all_unpacked, sparse_manifests in ((old, False, 1), (new, True, 3)):
        keys = {s["key"] for s in fs.info["snapshots"]["default"]}
        multi = fs.image("default", "docker.io/library/bbx:multi")
        unpacked = [m["chain_ids"][-1] in keys for m in multi["manifests"]]
        assert all(unpacked) is all_unpacked and unpacked[0]
        sparse = fs.image("default", "docker.io/library/bbx:sparse")
        assert sum(m["present"] for m in sparse["manifests"]) == sparse_manifests
        assert [m["complete"] for m in sparse["manifests"]] == [True, False, False]
        assert not sparse["complete"]


SOURCE_LABELS = {
    "containerd.io/distribution.source.docker.io": "library/bbx",
    "containerd.io/distribution.source.registry.example": "mirror/bbx",
}


@pytest.mark.parametrize("line", ["1.6", *VERSIONS])
def test_export_of_pulled_images_matches_that_lines_ctr(line, fixture_set, fixture_set_for, tmp_path, cli):
    """Pulled images carry ``containerd.io/distribution.source.<registry>`` labels on their
    blobs; 1.7+ ``ctr images export`` copies the target's into index.json (1.6 does not). The
    labels are set with that line's own ``ctr content label``, then both exports compared."""
    vset = fixture_set if line == "1.6" else fixture_set_for(line)
    bin_dir = None if line == "1.6" else bin_dir_for(line)
    root = _copy_root(vset.root, tmp_path / "root")
    names = list(EXPORTED)
    reference = {}
    with PrivateContainerd(bin_dir, root=root, workdir=tmp_path) as daemon:
        for name in names:
            digest = vset.image("default", name)["target"]["digest"]
            daemon.ctr("content", "label", digest, *(f"{k}={v}" for k, v in SOURCE_LABELS.items()))
            out = tmp_path / f"ctr-{name.rsplit(':', 1)[1]}.tar"
            daemon.export(out, name)
            reference[name] = out
    for name in names:
        ours = tmp_path / f"ctrconv-{name.rsplit(':', 1)[1]}.tar"
        result = cli("export", "--root", str(root), "--image", name, "-o", str(ours), "-q")
        assert result.code == 0, result.stderr
        with tarfile.open(reference[name]) as tar:
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        copied = {k for k in index["manifests"][0]["annotations"] if k.startswith("containerd.io/distribution")}
        assert copied == (set() if line == "1.6" else set(SOURCE_LABELS)), (line, copied)
        assert ours.read_bytes() == reference[name].read_bytes(), (line, name)
    if line != "1.6":
        as_16 = tmp_path / "as-1.6.tar"
        result = cli("export", "--root", str(root), "--image", names[0], "-o", str(as_16), "-q",
                     "--containerd-version", "1.6")
        assert result.code == 0, result.stderr
        with tarfile.open(as_16) as tar:
            raw = tar.extractfile("index.json").read()  # type: ignore[union-attr]
        assert raw.startswith(b'{"schemaVersion":2,"manifests":') and b"distribution.source" not in raw
    bad = cli("export", "--root", str(root), "--image", names[0], "-o", str(tmp_path / "x.tar"),
              "--containerd-version", "9.9")
    assert bad.code == 2 and "unknown containerd line" in bad.stderr, bad.stderr
