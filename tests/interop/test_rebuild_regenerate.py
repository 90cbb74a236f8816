"""``rebuild --regenerate-layers`` on copies of a real-daemon root whose layer blobs were
deleted while their snapshots survive; a real containerd judges every rebuilt root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.damage import blob_path, lose_blobs, root_unpacked_by
from support.json_schemas import check

#: two images whose layers are lost: an OCI gzip one (its alias shares it) and an uncompressed
#: one (a docker-typed image shares its layer)
LOST = ("docker.io/library/bbx:oci", "docker.io/library/bbx:uncompressed")
SHARING = {"docker.io/library/bbx:alias", "docker.io/library/bbx:docker"}


def _lose_layers(fixture_set, root: Path) -> dict[str, dict]:
    """Delete the first layer blob of each image of ``LOST``; their manifests by name."""
    manifests = {}
    for name in LOST:
        manifest = fixture_set.image("default", name)["manifests"][0]
        blob_path(root, manifest["layers"][0]["digest"]).unlink(missing_ok=True)
        manifests[name] = manifest
    return manifests


def _images(cli, root: Path) -> dict[str, dict]:
    result = cli("ls", "--root", str(root), "-A", "--json")
    assert result.code == 0, result.stderr
    return {f"{i['namespace']}/{i['name']}": i for i in result.json["images"]}


def _rebuild(cli, root: Path, *extra: str) -> dict:
    result = cli("rebuild", "--root", str(root), "-q", "--json", *extra)
    assert result.code == 0, result.stderr
    check("rebuild", result.json)
    return result.json


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "new-root"])
def test_lost_layers_are_regenerated_and_containerd_runs_the_images(in_place, fixture_set, tmp_root_copy, tmp_path,
                                                                    cli, private_containerd):
    before = _images(cli, tmp_root_copy)
    manifests = _lose_layers(fixture_set, tmp_root_copy)
    out = tmp_root_copy if in_place else tmp_path / "new"
    report = _rebuild(cli, tmp_root_copy, "--regenerate-layers", *(() if in_place else ("-o", str(out))))
    regenerated = {f"{r['namespace']}/{r['name']}": r for r in report["regenerated"]}
    expected = {f"{ns}/{name}" for ns in ("default", "k8s.io") for name in (*LOST, *SHARING)}
    assert set(regenerated) == expected, sorted(regenerated)
    assert not [d for d in report["dropped"] if d["kind"] == "image"], report["dropped"]
    for key, entry in regenerated.items():
        name = key.split("/", 1)[1]
        assert entry["original_digest"] == before[key]["digest"]
        [m] = entry["manifests"]
        # a blob written again has other bytes than the builder's: new blob, new manifest; a new
        # config (image ID) exactly when the tar itself differs
        assert entry["changed"] and entry["digest"] == m["manifest"] != m["original_manifest"]
        # the superseded original manifest is no one's any more: its record goes now, not at
        # containerd's next GC (a rebuilt root keeps everything across a GC)
        assert f"content {key.split('/', 1)[0]}/{m['original_manifest']}" in {c["object"] for c in report["cleaned"]}
        assert (m["config"] != m["original_config"]) is (not all(x["diff_id_matches"] for x in m["layers"]))
        stored = json.loads(blob_path(out, m["manifest"]).read_bytes())
        assert stored["annotations"]["io.ctrconv.original-manifest"] == m["original_manifest"]
        if name in LOST:
            assert m["layers"][0]["original"] == manifests[name]["layers"][0]["digest"]
    after = _images(cli, out)
    for key, entry in regenerated.items():
        assert after[key]["digest"] == entry["digest"] and after[key]["complete"], after[key]
    untouched = set(before) - expected
    assert untouched and all(after[k]["digest"] == before[k]["digest"] for k in untouched)
    verify = cli("verify", "--root", str(out), "-A", "-q", "--json", "--deep")
    assert verify.code == 0, verify.json["problems"]

    text = cli("rebuild", "--root", str(out), "-q", "--regenerate-layers")
    assert text.code == 0 and "nothing to repair" in text.stdout  # and a second run changes nothing

    daemon = private_containerd(root=out)
    # nothing the rebuild left is garbage: a GC right away collects no blob (the superseded
    # original manifests lost their records in the rebuild, not at containerd's next GC)
    for ns in ("default", "k8s.io"):
        held = daemon.ctr("content", "ls", "-q", namespace=ns).stdout.split()
        daemon.force_gc(ns)
        assert daemon.ctr("content", "ls", "-q", namespace=ns).stdout.split() == held, ns
    for ns in ("default", "k8s.io"):
        rows = {r.ref: r for r in daemon.images_check(ns)}
        for name in (*LOST, *SHARING):
            assert rows[name].complete and rows[name].unpacked, rows[name]
    for name in LOST:
        run = daemon.ctr("run", "--rm", name, "regen", "/bin/busybox", "ls", "/bin/busybox", check=False)
        assert run.returncode == 0, (name, run.stderr)
    daemon.force_gc("default")
    assert {r.ref for r in daemon.images_check("default")} >= {*LOST, *SHARING}
    daemon.stop()


def test_the_text_report_names_the_images_whose_ids_changed(fixture_set, tmp_root_copy, tmp_path, cli):
    _lose_layers(fixture_set, tmp_root_copy)
    result = cli("rebuild", "--root", str(tmp_root_copy), "-o", str(tmp_path / "new"), "-q", "--regenerate-layers")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in LOST:
        assert any(line.startswith(f"image default/{name}: 1 layer blob(s) regenerated from snapshots; new target")
                   for line in lines), result.stdout
    assert any(line.strip().startswith("image ID (linux/amd64) changed: sha256:") for line in lines), result.stdout


def test_without_the_option_nothing_is_regenerated(fixture_set, tmp_root_copy, tmp_path, cli):
    """The default rebuild writes no blob again and gives no image a new target (an image that
    still runs from its snapshots is kept without its lost layers, one that cannot is dropped)."""
    before = _images(cli, tmp_root_copy)
    _lose_layers(fixture_set, tmp_root_copy)
    out = tmp_path / "new"
    report = _rebuild(cli, tmp_root_copy, "-o", str(out))
    assert report["regenerated"] == []
    assert all(i["origin"].startswith("kept") for i in report["images"]), report["images"]
    after = _images(cli, out)
    assert all(after[k]["digest"] == before[k]["digest"] for k in after)
    for name in LOST:
        assert f"default/{name}" not in after or not after[f"default/{name}"]["complete"]


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_layers_a_discarding_node_let_go_are_not_regenerated(line, realnode_set_for, cli, tmp_path):
    """CRI's ``discard_unpacked_layers`` let the layer blobs go after unpacking: that is the
    node's normal state, not damage. With the option, a rebuild still writes nothing again and
    keeps every image as it was (in place it finds nothing to repair)."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for(line)
    in_place = corpus.copy_root(DISCARDED, tmp_path / "copy")
    result = cli("rebuild", "--root", str(in_place), "-q", "--regenerate-layers")
    assert result.code == 0 and "nothing to repair" in result.stdout, result.stdout + result.stderr
    before = _images(cli, corpus.root(DISCARDED))
    assert any(not i["complete"] for i in before.values()), "the corpus has images with discarded layers"
    out = tmp_path / "new"
    report = _rebuild(cli, corpus.root(DISCARDED), "-o", str(out), "--regenerate-layers")
    assert report["regenerated"] == [] and not report["damage_found"], report
    after = _images(cli, out)
    assert {k: v["digest"] for k, v in after.items()} == {k: v["digest"] for k, v in before.items()}


def test_a_corrupt_layer_is_quarantined_and_regenerated(fixture_set, tmp_root_copy, cli):
    """A layer blob with a flipped byte is corrupt, not just gone: quarantined as before, then
    written again from its snapshot, and the image stays instead of being dropped."""
    from support.damage import flipped_layer_byte

    layer = flipped_layer_byte(tmp_root_copy, fixture_set)
    report = _rebuild(cli, tmp_root_copy, "--regenerate-layers")
    assert [c["digest"] for c in report["corrupt_blobs"]] == [layer]
    regenerated = {(r["namespace"], r["name"]) for r in report["regenerated"]}
    assert ("default", "docker.io/library/bbx:oci") in regenerated
    assert not [d for d in report["dropped"] if d["kind"] == "image"], report["dropped"]
    assert _images(cli, tmp_root_copy)["default/docker.io/library/bbx:oci"]["complete"]
    verify = cli("verify", "--root", str(tmp_root_copy), "-A", "-q", "--json")
    assert verify.code == 0, verify.json["problems"]


def test_an_index_image_gets_a_new_index_over_its_regenerated_manifest(fixture_set, tmp_root_copy, tmp_path, cli,
                                                                       private_containerd):
    """bbx:multi (an index of three platforms, only the host's pulled) loses its host
    manifest's top layer: the new manifest sits in a new index that keeps the other platforms'
    descriptors, and a real containerd runs it."""
    from ctrconv.oci import platform as plat

    name = "docker.io/library/bbx:multi"
    image = fixture_set.image("default", name)
    host = plat.format_platform(plat.host_platform())
    [manifest] = [m for m in image["manifests"] if m.get("platform") == host]
    blob_path(tmp_root_copy, manifest["layers"][-1]["digest"]).unlink()
    out = tmp_path / "new"
    report = _rebuild(cli, tmp_root_copy, "-o", str(out), "--regenerate-layers")
    entry = {(r["namespace"], r["name"]): r for r in report["regenerated"]}[("default", name)]
    [m] = entry["manifests"]
    assert m["platform"] == host and m["original_manifest"] == manifest["digest"] and entry["changed"]
    index = json.loads(blob_path(out, entry["digest"]).read_bytes())
    old = json.loads(blob_path(tmp_root_copy, entry["original_digest"]).read_bytes())
    assert [d["digest"] for d in index["manifests"]] == [
        m["manifest"] if d["digest"] == manifest["digest"] else d["digest"] for d in old["manifests"]]
    assert [d.get("platform") for d in index["manifests"]] == [d.get("platform") for d in old["manifests"]]
    verify = cli("verify", "--root", str(out), "-A", "-q", "--json")
    assert verify.code == 0, verify.json["problems"]
    daemon = private_containerd(root=out)
    rows = {r.ref: r for r in daemon.images_check("default")}
    assert rows[name].complete and rows[name].unpacked and rows[name].digest == entry["digest"], rows[name]
    run = daemon.ctr("run", "--rm", name, "regen-multi", "/bin/busybox", "ls", "/bin/busybox", check=False)
    assert run.returncode == 0, run.stderr
    daemon.stop()


def test_native_snapshots_regenerate_lost_layers_and_containerd_runs_them(fixture_set, tmp_path, cli,
                                                                          private_containerd):
    """A root unpacked by containerd's native snapshotter (a full tree per snapshot), the first
    and last layer blobs of an image deleted: ``rebuild --regenerate-layers`` writes each as
    the difference of its snapshot and the parent's. Applying the rebuilt layers one by one
    gives every snapshot's tree exactly, and containerd finds the image complete, unpacks it
    from the rebuilt blobs into overlayfs and runs it with the original file content."""
    import gzip
    import hashlib

    from ctrconv.containerd.root import ContainerdRoot
    from ctrconv.layers import apply_layer, chain_ids, compare_listings, tree_listing
    from support.interop_checks import expected_file

    name = "docker.io/library/bbx:oci"
    root = root_unpacked_by(private_containerd(), fixture_set.file(fixture_set.input("bbx-oci")["path"]),
                            "--snapshotter", "native")
    manifest = fixture_set.image("default", name)["manifests"][0]
    lost = [manifest["layers"][0]["digest"], manifest["layers"][-1]["digest"]]
    lose_blobs(root, lost)
    report = _rebuild(cli, root, "--regenerate-layers")
    entry, = [r for r in report["regenerated"] if r["name"] == name]
    m, = entry["manifests"]
    assert [x["original"] for x in m["layers"]] == lost

    new_manifest = json.loads(blob_path(root, m["manifest"]).read_bytes())
    diff_ids = json.loads(blob_path(root, new_manifest["config"]["digest"]).read_bytes())["rootfs"]["diff_ids"]
    croot = ContainerdRoot(root)
    with croot.open_metadata() as meta:
        names = {r.key: r.name for r in meta.snapshots("default", "native")}
    with croot.open_snapshotter("native") as backend:
        ids = {b.key: b.id for b in backend.snapshots()}
    original = json.loads(blob_path(root, manifest["config"]["digest"]).read_bytes())["rootfs"]["diff_ids"]
    trees = [croot.snapshot_fs("native", ids[names[c]]) for c in chain_ids(original)]
    applied = tmp_path / "applied"
    applied.mkdir()
    for layer, tree in zip(new_manifest["layers"], trees):
        with gzip.open(blob_path(root, layer["digest"]), "rb") as fh:
            result = apply_layer(fh, applied, mode="naive")
        assert result.diff_id in diff_ids
        want, got = tree_listing(tree), tree_listing(applied)
        del want["/"], got["/"]
        assert compare_listings(want, got) == [], layer["digest"]

    daemon = private_containerd(root=root)
    rows = {r.ref: r for r in daemon.images_check("default")}
    assert rows[name].complete, rows[name]
    # ctr run unpacks the image into overlayfs first, from the rebuilt blobs (no such snapshots yet)
    run = daemon.ctr("run", "--snapshotter", "overlayfs", "--rm", name, "native-regen", "/bin/busybox", "cat",
                     "/data/modify.txt", check=False)
    assert run.returncode == 0, run.stderr
    assert hashlib.sha256(run.stdout.encode()).hexdigest() == expected_file(fixture_set, name, "/data/modify.txt")
    listed = daemon.ctr("snapshots", "--snapshotter", "overlayfs", "ls").stdout
    assert chain_ids(diff_ids)[-1] in listed, listed  # unpacked from the rebuilt blobs


def test_cri_names_that_state_a_digest_follow_the_regenerated_image(realnode_set_for, cli, tmp_path, private_containerd):
    """A CRI pull names an image ``repo@<target>`` and ``sha256:<config>`` (its image ID) beside
    its tag. When a regenerated layer gives the image a new target (and ID), those names kept the
    old digests: CRI then reported the old registry digest with the new ID and found no image by
    the old ID (a red-team run). They follow the new digests, as an export's names do."""
    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    image = corpus.image("oci")
    ref = next(n for n in corpus.names("k8s.io") if "@" not in n and not n.startswith("sha256:")
               and n.endswith("/oci:1"))
    repo = ref.rsplit(":", 1)[0]
    old_target, old_id = image["target"]["digest"], image["config_digest"]
    before = set(corpus.names("k8s.io"))
    assert {f"{repo}@{old_target}", old_id} <= before, sorted(before)
    others = {d for i in corpus.images() if i["key"] != "oci" for m in i["platform_manifests"].values()
              for d in m["layers"]}
    blob_path(root, next(d for d in image["layers"] if d not in others)).unlink()  # its own layer only

    report = _rebuild(cli, root, "-o", str(tmp_path / "new"), "--regenerate-layers")
    entries = {r["name"]: r for r in report["regenerated"] if r["namespace"] == "k8s.io"}
    entry = entries[ref]
    assert entry["changed"], entry
    [m] = entry["manifests"]
    new_target, new_id = entry["digest"], m["config"]
    assert entries[f"{repo}@{old_target}"]["renamed"] == f"{repo}@{new_target}"
    expected = before - {f"{repo}@{old_target}"} | {f"{repo}@{new_target}"}
    if new_id != old_id:
        assert entries[old_id]["renamed"] == new_id
        expected = expected - {old_id} | {new_id}
    after = {i["name"]: i for i in cli("ls", "--root", str(tmp_path / "new"), "-n", "k8s.io", "--json").json["images"]}
    assert set(after) == expected, sorted(set(after) ^ expected)
    assert all(after[n]["digest"] == new_target for n in (ref, f"{repo}@{new_target}", new_id))
    assert cli("verify", "--root", str(tmp_path / "new"), "-A", "-q").code == 0
    daemon = private_containerd(root=tmp_path / "new")
    rows = {r.ref: r for r in daemon.images_check("k8s.io")}
    assert rows[f"{repo}@{new_target}"].complete and rows[new_id].complete


def test_a_nested_index_regenerated_in_two_namespaces_records_its_new_inner_index_in_both(realnode_set_for, cli,
                                                                                          tmp_path):
    """The new inner index of a nested image, written by the first namespace's pass, was taken
    for an old one in the second: no record there, and the re-import called it "content record
    lost" and labelled it otherwise (a red-team run)."""
    from ctrconv.bolt.reader import read_tree
    from ctrconv.containerd import schema as K
    from ctrconv.containerd.records import read_map

    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    image = corpus.image("nested")
    others = {d for i in corpus.images() if i["key"] != "nested" for m in i["platform_manifests"].values()
              for d in m["layers"]}
    blob_path(root, next(d for d in image["layers"] if d not in others)).unlink()
    report = _rebuild(cli, root, "-o", str(tmp_path / "new"), "--regenerate-layers")
    assert not [r for r in report["restored"] if r["kind"] == "content"], report["restored"]
    tree = read_tree(tmp_path / "new" / "io.containerd.metadata.v1.bolt" / "meta.db")
    changed = [r for r in report["regenerated"] if r["changed"]]
    assert {r["namespace"] for r in changed} >= {"default", "k8s.io"}
    new_target = changed[0]["digest"]
    inner = {ns: _children(tree, ns, new_target) for ns in ("default", "k8s.io")}
    assert inner["default"] == inner["k8s.io"] and inner["default"], inner
    for ns in ("default", "k8s.io"):
        for digest in inner[ns]:
            record = tree.bucket(K.V1, ns.encode(), K.CONTENT, K.BLOB, digest.encode())
            assert record is not None, (ns, digest)
    labels = {ns: read_map(tree.bucket(K.V1, ns.encode(), K.CONTENT, K.BLOB, inner[ns][0].encode(), K.LABELS))
              for ns in ("default", "k8s.io")}
    gc = {ns: {k: v for k, v in m.items() if k.startswith("containerd.io/gc.ref.content")} for ns, m in labels.items()}
    assert gc["default"] == gc["k8s.io"] and gc["default"], labels


def _children(tree, ns: str, digest: str) -> list[str]:
    """The index children the target's record labels (its inner indexes and manifests)."""
    from ctrconv.containerd import schema as K
    from ctrconv.containerd.records import read_map

    labels = read_map(tree.bucket(K.V1, ns.encode(), K.CONTENT, K.BLOB, digest.encode(), K.LABELS))
    return sorted(v for k, v in labels.items() if k.startswith("containerd.io/gc.ref.content"))
