"""``export --from-snapshots``: layers written again from unpacked snapshots.

Unit tests check the layer writer itself (overlayfs ``fs`` directories and native full-tree
diffs, applied again by ctrconv's own unpacker and compared entry by entry). Interop tests are
judged by real daemons: every image of the real-node corpus' ``discarded`` root (CRI
``discard_unpacked_layers``: layer blobs gone, snapshots kept) exports, loads into a fresh
containerd of the same line, is complete, runs, and unpacks to the same per-layer trees as
the same image pulled normally (the ``node`` root); the fixture root, whose layers carry
whiteouts, opaque directories, xattrs, hardlinks and devices, does the same after its layer
blobs are deleted (lost) while the snapshots survive.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from ctrconv.layers import apply_layer, chain_ids, compare_listings, tree_listing
from ctrconv.layers.layerblob import LayerWriter
from ctrconv.layers.regenerate import write_layer
from support.damage import blob_path, lose_blobs, root_unpacked_by

MTIME = 1_700_000_000


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("device nodes, ownership and trusted.* xattrs need root")


def _file(path: Path, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    path.write_bytes(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    os.utime(path, (MTIME, MTIME))


def _write(tmp: Path, name: str, compression: str = "none", **kwargs) -> tuple[Path, object]:
    out = tmp / name
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        written = write_layer(fd, compression, **kwargs)
    finally:
        os.close(fd)
    return out, written


def _overlay_upper(top: Path) -> None:
    """An overlayfs upper directory as containerd leaves it after applying a layer."""
    top.mkdir()
    (top / "data").mkdir()
    _file(top / "data" / "new.txt", b"new\n", 0o600, 1000, 1000)
    os.link(top / "data" / "new.txt", top / "data" / "new-link")
    os.mknod(top / "data" / "removed", stat.S_IFCHR, 0)
    os.chown(top / "data" / "removed", 0, 0)
    (top / "data" / "opq").mkdir()
    os.setxattr(top / "data" / "opq", "trusted.overlay.opaque", b"y")
    _file(top / "data" / "opq" / "kept", b"k")
    (top / "data" / "uopq").mkdir()
    os.setxattr(top / "data" / "uopq", "user.overlay.opaque", b"y")
    (top / "xattr-dir").mkdir()
    os.setxattr(top / "xattr-dir", "user.foo", b"bar")
    _file(top / ("long-" + "x" * 120), b"long name")
    _file(top / "ünïcödé", b"utf-8 name")
    os.symlink("/" + "t" * 140, top / "long-link")
    os.utime(top / "long-link", (MTIME, MTIME), follow_symlinks=False)
    os.mknod(top / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(top / "fifo", 0o600)
    _file(top / "setuid", b"s", 0o4755)
    for path in (top / "data", top / "data" / "opq", top / "data" / "uopq", top / "xattr-dir"):
        os.utime(path, (MTIME, MTIME))


def _entries(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def test_overlay_fs_dir_is_the_layer(tmp_path):
    """The fs directory of an overlayfs snapshot, written and applied again, is the same
    directory: whiteouts, opaque markers, hardlinks, xattrs, devices, long and non-ASCII names.
    ``user.overlay.opaque`` is a user xattr like any other (containerd's overlay mounts ignore
    it): read as an opaque marker, it dropped every lower file below that directory from the
    layer (found by a red-team run)."""
    _need_root()
    upper = tmp_path / "upper"
    _overlay_upper(upper)
    layer, written = _write(tmp_path, "layer.tar", overlay_fs=upper)
    assert written.diff_id == written.digest == "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    names = [m.name for m in _entries(layer)]
    assert "data/.wh.removed" in names and "data/removed" not in names
    assert names.index("data/opq/.wh..wh..opq") == names.index("data/opq") + 1
    assert "data/uopq/.wh..wh..opq" not in names
    assert {m.name: m.pax_headers.get("SCHILY.xattr.user.overlay.opaque") for m in _entries(layer)}["data/uopq"] == "y"
    links = {m.name: m.linkname for m in _entries(layer) if m.islnk()}
    assert links == {"data/new.txt": "data/new-link"}  # "new-link" sorts first: it holds the data
    # applied on top of a lower (overlay mode, as containerd applies a second layer)
    lower = tmp_path / "lower"
    lower.mkdir()
    again = tmp_path / "again"
    again.mkdir()
    with open(layer, "rb") as fh:
        result = apply_layer(fh, again, mode="overlay", lowers=[lower])
    assert result.diff_id == written.diff_id
    assert compare_listings(tree_listing(upper), tree_listing(again)) == []


@pytest.mark.parametrize("indirection", ["trusted.overlay.redirect", "trusted.overlay.metacopy"])
def test_an_upper_written_with_redirect_dir_or_metacopy_is_refused(indirection, tmp_path):
    """A container's upper directory written by an overlayfs mounted with redirect_dir (a renamed
    directory holds a pointer to its lower contents) or metacopy (a chmod-ed file holds no
    data): commit gave an empty directory and all-zero files with exit 0 (found by a red-team
    run). Refused with one error instead."""
    from ctrconv.errors import CtrconvError

    _need_root()
    upper = tmp_path / "upper"
    upper.mkdir()
    if indirection.endswith("redirect"):
        (upper / "etc2").mkdir()
        os.setxattr(upper / "etc2", indirection, b"/etc")
    else:
        _file(upper / "busybox", b"", 0o755)
        os.setxattr(upper / "busybox", indirection, b"")
    with pytest.raises(CtrconvError, match=indirection.rsplit(".", 1)[1].replace("redirect", "redirect_dir")):
        _write(tmp_path, "layer.tar", overlay_fs=upper)


def test_tar_is_deterministic_and_pax_only_where_needed(tmp_path):
    _need_root()
    upper = tmp_path / "upper"
    _overlay_upper(upper)
    first, _ = _write(tmp_path, "a.tar", overlay_fs=upper)
    second, _ = _write(tmp_path, "b.tar", overlay_fs=upper)
    assert first.read_bytes() == second.read_bytes()
    by_name = {m.name: m for m in _entries(first)}
    assert by_name["setuid"].pax_headers == {} and by_name["setuid"].mode == 0o4755
    assert by_name["setuid"].mtime == MTIME and by_name["setuid"].uname == ""
    assert set(by_name["long-" + "x" * 120].pax_headers) == {"path"}
    assert set(by_name["ünïcödé"].pax_headers) == {"path"}
    assert set(by_name["long-link"].pax_headers) == {"linkpath"}
    assert by_name["xattr-dir"].pax_headers["SCHILY.xattr.user.foo"] == "bar"
    assert not any(k.startswith("SCHILY.xattr.trusted") for m in by_name.values() for k in m.pax_headers)
    assert by_name["null"].isdev() and (by_name["null"].devmajor, by_name["null"].devminor) == (1, 3)
    # names in walk order: each directory's names sorted, depth first
    names = [m.name for m in _entries(first)]
    assert names.index("data/uopq") < names.index("fifo")


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_blob_holds_the_tar(tmp_path, compression):
    upper = tmp_path / "upper"
    upper.mkdir()
    _file(upper / "f", os.urandom(3 << 20))
    plain, plain_written = _write(tmp_path, "plain.tar", overlay_fs=upper)
    blob, written = _write(tmp_path, "blob", compression, overlay_fs=upper)
    data = blob.read_bytes()
    assert written.digest == "sha256:" + hashlib.sha256(data).hexdigest() and written.size == len(data)
    tar = gzip.decompress(data) if compression == "gzip" else zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert tar == plain.read_bytes() and written.diff_id == plain_written.diff_id
    assert written.tar_size == len(tar)


def test_layer_writer_streams_in_chunks(tmp_path):
    """The writer holds at most about one chunk: a layer larger than that is written while it
    is produced (the blob file grows before the tar is finished)."""
    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        writer = LayerWriter(fd, "none")
        for _ in range(3):
            writer.write(b"\0" * (1 << 20))
        assert path.stat().st_size >= 2 << 20
        writer.finish()
    finally:
        os.close(fd)
    assert path.stat().st_size == 3 << 20


def _native_trees(tmp_path: Path) -> tuple[Path, Path]:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "etc").mkdir()
    _file(lower / "etc" / "keep", b"same")
    _file(lower / "etc" / "change", b"old!")
    _file(lower / "etc" / "mode", b"m", 0o644)
    _file(lower / "etc" / "gone", b"x")
    (lower / "dir-gone").mkdir()
    _file(lower / "dir-gone" / "inner", b"i")
    _file(lower / "becomes-dir", b"f")
    (lower / "becomes-file").mkdir()
    _file(lower / "hard-a", b"h")
    os.link(lower / "hard-a", lower / "hard-b")
    for d in (lower / "etc", lower / "dir-gone", lower / "becomes-file"):
        os.utime(d, (MTIME, MTIME))
    upper = tmp_path / "upper"
    subprocess.run(["cp", "-a", str(lower), str(upper)], check=True)
    _file(upper / "etc" / "change", b"new!")  # same size and mtime: only the content differs
    os.chmod(upper / "etc" / "mode", 0o600)
    os.unlink(upper / "etc" / "gone")
    shutil.rmtree(upper / "dir-gone")
    os.unlink(upper / "becomes-dir")
    (upper / "becomes-dir").mkdir()
    _file(upper / "becomes-dir" / "child", b"c")
    shutil.rmtree(upper / "becomes-file")
    _file(upper / "becomes-file", b"now a file")
    (upper / "new").mkdir()
    _file(upper / "new" / "file", b"added", 0o640, 1000, 1000)
    os.setxattr(upper / "new" / "file", "user.note", b"v")
    os.link(upper / "hard-a", upper / "hard-c")  # a new link to an unchanged file
    return lower, upper


def test_native_diff_applied_to_the_parent_gives_the_snapshot(tmp_path):
    """fs.Changes semantics: adds, content-only and mode-only changes, deletions (a deleted
    directory is one whiteout), type changes, unchanged parents written above changes, and a
    new hardlink to an unchanged file."""
    _need_root()
    lower, upper = _native_trees(tmp_path)
    layer, written = _write(tmp_path, "diff.tar", tree=upper, parent_tree=lower)
    names = [m.name for m in _entries(layer)]
    assert "etc/keep" not in names and "etc/change" in names and "etc/mode" in names
    assert "etc/.wh.gone" in names and ".wh.dir-gone" in names and "dir-gone/inner" not in names
    assert "etc" in names  # the unchanged parent of a change
    links = {m.name: m.linkname for m in _entries(layer) if m.islnk()}
    # containerd's inodeRefs: the unchanged paths of the inode follow its new path
    assert links == {"hard-a": "hard-c", "hard-b": "hard-c"}
    result_dir = tmp_path / "applied"
    subprocess.run(["cp", "-a", str(lower), str(result_dir)], check=True)
    with open(layer, "rb") as fh:
        applied = apply_layer(fh, result_dir, mode="naive")
    assert applied.diff_id == written.diff_id
    assert compare_listings(tree_listing(upper), tree_listing(result_dir)) == []


def test_native_first_layer_is_the_whole_tree(tmp_path):
    _need_root()
    _, upper = _native_trees(tmp_path)
    layer, _ = _write(tmp_path, "base.tar", tree=upper, parent_tree=None)
    target = tmp_path / "base"
    target.mkdir()
    with open(layer, "rb") as fh:
        apply_layer(fh, target, mode="naive")
    want = tree_listing(upper)
    got = tree_listing(target)
    del want["/"], got["/"]
    assert compare_listings(want, got) == []


# -- interop -------------------------------------------------------------------------------


def _bin_dir(line: str) -> str | None:
    if line == "1.6":
        return None
    from support.versions import bin_dir_for

    return str(bin_dir_for(line))


def _snapshot_dirs(root: Path, namespace: str, snapshotter: str = "overlayfs") -> dict[str, Path]:
    """Committed snapshots of a stopped root, by key (chain ID) -> their fs directory."""
    from ctrconv.containerd.root import ContainerdRoot

    croot = ContainerdRoot(root)
    with croot.open_metadata() as meta:
        names = {r.key: r.name for r in meta.snapshots(namespace, snapshotter)}
    with croot.open_snapshotter(snapshotter) as backend:
        ids = {b.key: b.id for b in backend.snapshots()}
    return {key: croot.snapshot_fs(snapshotter, ids[name]) for key, name in names.items() if name in ids}


def _config(root: Path, digest: str) -> dict:
    hexd = digest.split(":", 1)[1]
    return json.loads((root / "io.containerd.content.v1.content" / "blobs" / "sha256" / hexd).read_bytes())


def _layer_trees(root: Path, namespace: str, config_digest: str, snapshotter: str = "overlayfs") -> list[Path]:
    dirs = _snapshot_dirs(root, namespace, snapshotter)
    return [dirs[c] for c in chain_ids(_config(root, config_digest)["rootfs"]["diff_ids"])]


def _compare_layers(want_dirs: list[Path], got_dirs: list[Path]) -> list[str]:
    assert len(want_dirs) == len(got_dirs)
    problems = []
    for i, (want, got) in enumerate(zip(want_dirs, got_dirs)):
        problems += [f"layer {i}: {p}" for p in compare_listings(tree_listing(want), tree_listing(got))]
    return problems


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_every_image_of_a_discarded_layers_node_exports_loads_runs_and_matches(
        line, realnode_set_for, cli, tmp_path, private_containerd):
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for(line)
    source = corpus.root(DISCARDED)
    names = corpus.info["roots"][DISCARDED]["namespaces"]["k8s.io"]["images"]
    exported = []
    for image in corpus.images():
        if image["ref"] not in names:
            continue
        out = tmp_path / f"{image['key']}.tar"
        result = cli("export", "--root", str(source), "-n", "k8s.io", "--image", image["ref"], "-o", str(out), "--json")
        assert result.code == 0, result.stderr
        report = result.json
        if image["kind"] != "empty":
            assert "regenerated from snapshots" in result.stderr, result.stderr
            assert report["images"][0]["regenerated_layers"] == len(image["layers"]), report
            changed = {c["from"] for c in report["image_ids_changed"]}
            assert (report["images"][0]["original_image_id"] in changed) == (
                report["images"][0]["image_id"] != report["images"][0]["original_image_id"])
            for change in report["rewritten"]:
                assert change["original_manifest"] == image["manifest_digest"]
        exported.append((image, out, report["images"][0]))
    assert len(exported) == len({i["key"] for i in corpus.images() if i["ref"] in names}) >= 7

    daemon = private_containerd(binary_dir=_bin_dir(line))
    for image, out, _ in exported:
        daemon.ctr("images", "import", str(out), timeout=120)
    rows = {row.ref: row for row in daemon.images_check("default")}
    for image, _, report in exported:
        assert rows[image["ref"]].complete, rows[image["ref"]]
    ran = corpus.info["roots"][DISCARDED]["container"]
    run = daemon.ctr("run", "--rm", ran["image"], "ctrconv-regenerated", *ran["command"], check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    for image, _, _ in exported:
        if image["kind"] == "empty":
            continue
        run = daemon.ctr("run", "--rm", image["ref"], f"rg-{image['key']}", "/bin/busybox", "true",
                         check=False, timeout=120)
        assert run.returncode == 0, (image["key"], run.stderr)
    fresh = daemon.root
    daemon.stop()
    for image, _, report in exported:
        if image["kind"] == "empty":
            continue
        want = _layer_trees(corpus.node_root, "k8s.io", image["config_digest"])
        got = _layer_trees(fresh, "default", report["image_id"])
        assert _compare_layers(want, got) == [], image["key"]


def test_lost_layer_blobs_of_a_normal_root_are_regenerated(fixture_set, tmp_root_copy, cli, tmp_path,
                                                           private_containerd):
    """Blobs deleted by damage, snapshots intact: ``auto`` regenerates them; the layers' whiteouts,
    opaque directories, xattrs, hardlinks, devices and long names unpack to the snapshots the
    original layers made (the fixture's recorded listings)."""
    image = fixture_set.image("default", "docker.io/library/bbx:oci")
    manifest = image["manifests"][0]
    lose_blobs(tmp_root_copy, [layer["digest"] for layer in manifest["layers"]])

    never = cli("export", "--root", str(tmp_root_copy), "--image", image["name"], "-o", str(tmp_path / "n.tar"),
                "--from-snapshots", "never", "-q")
    assert never.code == 1 and len(never.stderr.strip().splitlines()) == 1 and "Traceback" not in never.stderr
    assert not (tmp_path / "n.tar").exists()

    out = tmp_path / "oci.tar"
    result = cli("export", "--root", str(tmp_root_copy), "--image", image["name"], "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    assert "3 layer(s) regenerated from snapshots" in result.stderr
    report = result.json
    assert [layer["how"] for c in report["rewritten"] for layer in c["layers"]] == ["regenerated"] * 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ctrconv-layers.")]

    daemon = private_containerd()
    daemon.ctr("images", "import", str(out), timeout=120)
    rows = {row.ref: row for row in daemon.images_check("default")}
    assert rows[image["name"]].complete and rows[image["name"]].unpacked
    run = daemon.ctr("run", "--rm", image["name"], "rg", "/bin/busybox", "cat", "/data/modify.txt", check=False)
    assert run.returncode == 0, run.stderr
    fresh = daemon.root
    daemon.stop()
    got = _layer_trees(fresh, "default", report["images"][0]["image_id"])
    for chain, directory in zip(manifest["chain_ids"], got):
        want = fixture_set.snapshot_listing("default", chain)["entries"]
        assert compare_listings(want, tree_listing(directory)) == [], chain


def test_always_regenerates_present_layers_and_keeps_the_config_when_the_tar_matches(
        fixture_set, cli, tmp_path, private_containerd):
    """``always`` rewrites layers whose blobs are present too; a config is replaced only when a
    regenerated tar's digest differs from its diff ID, and the new manifest records the old one."""
    image = fixture_set.image("default", "docker.io/library/bbx:oci")
    out = tmp_path / "always"
    result = cli("export", "--root", str(fixture_set.root), "--image", image["name"], "-o", str(out),
                 "--from-snapshots", "always", "--compression", "zstd", "--json")
    assert result.code == 0, result.stderr
    change = result.json["rewritten"][0]
    assert change["original_manifest"] == image["manifests"][0]["digest"]
    assert {layer["media_type"] for layer in change["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert change["config_changed"] == (not all(layer["matches_diff_id"] for layer in change["layers"]))
    manifest = json.loads((out / "blobs" / "sha256" / change["manifest"].split(":")[1]).read_bytes())
    assert manifest["annotations"]["io.ctrconv.original-manifest"] == image["manifests"][0]["digest"]
    config = json.loads((out / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes())
    original = _config(fixture_set.root, image["manifests"][0]["config"]["digest"])
    assert config["history"] == original["history"]
    assert config["rootfs"]["diff_ids"] == [layer["diff_id"] for layer in change["layers"]]
    index = json.loads((out / "index.json").read_bytes())
    assert index["manifests"][0]["digest"] == change["manifest"]
    # the same export as a tar: containerd imports the zstd layers, unpacks and runs them
    tar = tmp_path / "always.tar"
    again = cli("export", "--root", str(fixture_set.root), "--image", image["name"], "-o", str(tar),
                "--from-snapshots", "always", "--compression", "zstd", "--json")
    assert again.code == 0 and again.json["rewritten"][0]["manifest"] == change["manifest"]  # deterministic
    daemon = private_containerd()
    daemon.ctr("images", "import", str(tar), timeout=120)
    rows = {row.ref: row for row in daemon.images_check("default")}
    assert rows[image["name"]].complete and rows[image["name"]].unpacked
    run = daemon.ctr("run", "--rm", image["name"], "zs", "/bin/busybox", "cat", "/data/modify.txt", check=False)
    assert run.returncode == 0, run.stderr


def test_native_snapshots_are_diffed_against_their_parents(fixture_set, cli, tmp_path, private_containerd):
    """A root unpacked by containerd's native snapshotter (full trees per snapshot), its layer
    blobs lost: each layer is the difference of its snapshot and the parent's, and a fresh
    containerd unpacks the export (natively) to the same trees, layer by layer."""
    name = "docker.io/library/bbx:oci"
    root = root_unpacked_by(private_containerd(), fixture_set.file(fixture_set.input("bbx-oci")["path"]),
                            "--snapshotter", "native")
    manifest = fixture_set.image("default", name)["manifests"][0]
    lose_blobs(root, [layer["digest"] for layer in manifest["layers"]])
    out = tmp_path / "native.tar"
    result = cli("export", "--root", str(root), "--image", name, "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    layers = [layer for change in result.json["rewritten"] for layer in change["layers"]]
    assert [layer["snapshotter"] for layer in layers] == ["native"] * len(manifest["layers"])
    fresh = private_containerd()
    fresh.ctr("images", "import", "--snapshotter", "native", str(out), timeout=120)
    run = fresh.ctr("run", "--snapshotter", "native", "--rm", name, "rgn", "/bin/busybox", "cat", "/data/modify.txt",
                    check=False)
    assert run.returncode == 0, run.stderr
    new_root = fresh.root
    fresh.stop()
    want = _layer_trees(root, "default", manifest["config"]["digest"], "native")
    got = _layer_trees(new_root, "default", result.json["images"][0]["image_id"], "native")
    assert _compare_layers(want, got) == []


def test_a_snapshot_directory_that_is_a_symlink_is_never_walked(fixture_set, tmp_root_copy, cli, tmp_path):
    """A hostile or damaged root whose snapshot ``fs`` points outside it: that layer is not
    regenerated (it stays missing, exit 1), and nothing outside the root becomes a layer."""
    from ctrconv.containerd.root import ContainerdRoot

    image = fixture_set.image("default", "docker.io/library/bbx:oci")
    manifest = image["manifests"][0]
    top = manifest["chain_ids"][-1]
    fs = _snapshot_dirs(tmp_root_copy, "default")[top]
    shutil.rmtree(fs)
    os.symlink("/etc", fs)
    blobs = ContainerdRoot(tmp_root_copy).content_dir / "blobs" / "sha256"
    (blobs / manifest["layers"][-1]["digest"].split(":", 1)[1]).unlink()
    out = tmp_path / "x.tar"
    result = cli("export", "--root", str(tmp_root_copy), "--image", image["name"], "-o", str(out), "-q")
    assert result.code == 1 and manifest["layers"][-1]["digest"] in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_whiteouts_opaque_dirs_and_xattrs_survive_regeneration_on_every_line(
        line, fixture_set, cli, tmp_path, private_containerd):
    """The fixture's layers (whiteouts of a file and of a directory, an opaque directory, user
    xattrs, a hardlink pair, devices, a mode-only change, long and non-ASCII names) unpacked
    by each line's containerd, their blobs lost: the regenerated export unpacks, on the same
    line, to the same trees layer by layer."""
    name = "docker.io/library/bbx:oci"
    binary_dir = _bin_dir(line)
    root = root_unpacked_by(private_containerd(binary_dir=binary_dir), fixture_set.file(fixture_set.input("bbx-oci")["path"]))
    manifest = fixture_set.image("default", name)["manifests"][0]
    lose_blobs(root, [layer["digest"] for layer in manifest["layers"]])
    out = tmp_path / "oci.tar"
    result = cli("export", "--root", str(root), "--image", name, "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    with tarfile.open(out) as tar:
        blobs_out = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers() if m.name.startswith("blobs/sha256/")}
    assert len(result.json["rewritten"][0]["layers"]) == 3 and all(
        layer["digest"].split(":")[1] in blobs_out for layer in result.json["rewritten"][0]["layers"])
    fresh = private_containerd(binary_dir=binary_dir)
    fresh.ctr("images", "import", str(out), timeout=120)
    rows = {row.ref: row for row in fresh.images_check("default")}
    assert rows[name].complete and rows[name].unpacked, rows[name]
    new_root = fresh.root
    fresh.stop()
    want = _layer_trees(root, "default", manifest["config"]["digest"])
    got = _layer_trees(new_root, "default", result.json["images"][0]["image_id"])
    assert _compare_layers(want, got) == []
    kinds = {e["type"] for d in want for e in tree_listing(d).values()}
    assert {"char", "block", "fifo", "symlink"} <= kinds  # the trees compared are not trivial


def test_names_that_state_a_digest_follow_the_rewritten_image(realnode_set_for, cli, tmp_path):
    """Exported by its image ID, a CRI image carries its three names: the tag stays, CRI's
    ``sha256:<image ID>`` alias names the new config, ``repo@<digest>`` the new target."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for("1.6")
    image = corpus.image("oci")
    out = tmp_path / "byid.tar"
    result = cli("export", "--root", str(corpus.root(DISCARDED)), "-n", "k8s.io", "--image",
                 image["config_digest"][:19], "-o", str(out), "--json", "-q")
    assert result.code == 0, result.stderr
    reports = result.json["images"]
    new_id, new_target = reports[0]["image_id"], reports[0]["digest"]
    assert new_id != image["config_digest"]
    with tarfile.open(out) as tar:
        index = json.loads(tar.extractfile("index.json").read())
    names = sorted(m["annotations"]["io.containerd.image.name"] for m in index["manifests"])
    assert names == sorted([image["ref"], f"{image['repository']}@{new_target}", new_id])
    renamed = {r["original_name"]: r["name"] for r in reports if r["original_name"]}
    assert renamed == {image["config_digest"]: new_id,
                       f"{image['repository']}@{image['target']['digest']}": f"{image['repository']}@{new_target}"}
    assert result.json["image_ids_changed"] == [{"from": image["config_digest"], "to": new_id,
                                                 "names": [r["name"] for r in reports]}]
    assert "regenerated from snapshots" in result.stderr  # said even with -q: digests changed


def test_deeply_nested_overlay_tree_is_written(tmp_path):
    """The overlay walk is iterative: nesting deeper than Python's recursion limit is fine."""
    import sys

    depth = 1500
    assert depth > sys.getrecursionlimit()
    upper = str(tmp_path / "deep")
    levels = [upper + "/d" * i for i in range(depth + 1)]
    for level in levels:  # one level at a time (pathlib's parents=True recurses)
        os.mkdir(level)
    try:
        layer, _ = _write(tmp_path, "deep.tar", overlay_fs=upper)
        names = [m.name for m in _entries(layer)]
        assert len(names) == depth and names[-1] == "/".join(["d"] * depth)
    finally:  # bottom up: pytest's own clean-up (shutil.rmtree) recurses and would fail on it
        for level in reversed(levels):
            os.rmdir(level)


def test_parallel_gzip_is_one_valid_member_whatever_the_workers_and_writes():
    """Blocks deflated side by side: the bytes depend only on the input (not on the number of
    workers or on how the input was handed over), and every gzip reader reads them."""
    from ctrconv.layers.parallelgzip import GZIP_BLOCK, ParallelGzip

    data = os.urandom(GZIP_BLOCK // 3) + bytes(range(256)) * (GZIP_BLOCK // 64) + b"z" * (GZIP_BLOCK + 17)
    outputs = set()
    for workers, step in ((1, GZIP_BLOCK), (4, 777_777), (2, 4_999)):
        gz = ParallelGzip(6, workers)
        try:
            parts = [gz.compress(data[i:i + step]) for i in range(0, len(data), step)]
            parts.append(gz.flush())
        finally:
            gz.close()
        out = b"".join(parts)
        assert gzip.decompress(out) == data
        outputs.add(out)
    assert len(outputs) == 1
    blob = outputs.pop()
    assert blob[:4] == b"\x1f\x8b\x08\x00" and len(blob) < len(data) // 2
    empty = ParallelGzip(6, 2)
    assert gzip.decompress(empty.compress(b"") + empty.flush()) == b""
    empty.close()
    assert subprocess.run(["gzip", "-t"], input=blob, capture_output=True).returncode == 0


def test_rewritten_layer_media_types_keep_the_family():
    from ctrconv.oci import mediatypes as mt
    from ctrconv.pipeline.regenerate import layer_media_type, original_compression

    assert layer_media_type(mt.DOCKER_LAYER_GZIP, mt.DOCKER_MANIFEST, "gzip") == mt.DOCKER_LAYER_GZIP
    assert layer_media_type(mt.DOCKER_LAYER_GZIP, mt.DOCKER_MANIFEST, "none") == mt.DOCKER_LAYER
    # docker schema 2 has no zstd type: OCI's, as containerd's converter writes it
    assert layer_media_type(mt.DOCKER_LAYER_GZIP, mt.DOCKER_MANIFEST, "zstd") == mt.OCI_LAYER_ZSTD
    assert layer_media_type(mt.OCI_LAYER_ZSTD, mt.OCI_MANIFEST, "gzip") == mt.OCI_LAYER_GZIP
    assert layer_media_type(mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP, mt.OCI_MANIFEST, "zstd") == \
        mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD
    assert [original_compression(t) for t in (mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD, mt.OCI_LAYER, mt.DOCKER_LAYER)] \
        == ["gzip", "zstd", "none", "none"]


def test_rewrite_target_replaces_only_the_changed_child_and_keeps_its_platform():
    from ctrconv.digest import Digest
    from ctrconv.oci import mediatypes as mt
    from ctrconv.pipeline.regenerate import ExtraBlobs, compact_json, rewrite_target

    class Store:
        def __init__(self) -> None:
            self.blobs: dict[str, bytes] = {}

        def put(self, data: bytes) -> str:
            digest = str(Digest.from_bytes(data))
            self.blobs[digest] = data
            return digest

        def exists(self, d):
            return str(d) in self.blobs

        def size(self, d):
            return len(self.blobs[str(d)]) if str(d) in self.blobs else None

        def open(self, d):
            import io

            return io.BytesIO(self.blobs[str(d)])

        def read_small(self, d, size):
            return self.blobs[str(d)]

        def blob_path(self, d):
            return Path("/store") / str(d).split(":")[1]

    store = Store()
    amd = {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 10,
           "platform": {"os": "linux", "architecture": "amd64"}, "annotations": {"k": "v"}}
    arm = {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 11,
           "platform": {"os": "linux", "architecture": "arm64"}}
    index = compact_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [amd, arm]})
    target = {"mediaType": mt.OCI_INDEX, "digest": store.put(index), "size": len(index)}
    extras = ExtraBlobs(store)
    new = rewrite_target(extras, target, {amd["digest"]: {"digest": "sha256:" + "c" * 64, "size": 12}})
    assert new["digest"] != target["digest"] and new["mediaType"] == mt.OCI_INDEX
    doc = json.loads(extras.read_small(new["digest"], new["size"]))
    assert doc["manifests"][0] == {**amd, "digest": "sha256:" + "c" * 64, "size": 12}
    assert doc["manifests"][1] == arm
    # nothing changed below: the stored target is kept as it is
    assert rewrite_target(extras, target, {}) == target
    # a digest the store holds is read from the store (a damaged blob is not papered over)
    extras.add_bytes(index)
    assert extras.blob_path(target["digest"]) == Path("/store") / target["digest"].split(":")[1]
    assert extras.blob_path(new["digest"]) is None  # made for the export: nothing to hardlink


def test_a_layer_regenerated_twice_matches_its_diff_id_and_keeps_the_config(
        fixture_set, cli, tmp_path, private_containerd):
    """A regenerated layer, unpacked by containerd and regenerated again, is the same tar: the
    config (and the image ID) is kept, and the export says so; only the manifest is new."""
    name = "docker.io/library/bbx:oci"
    first_root = tmp_path / "first"
    subprocess.run(["cp", "-a", str(fixture_set.root), str(first_root)], check=True)
    lose_blobs(first_root, [layer["digest"] for layer in fixture_set.image("default", name)["manifests"][0]["layers"]])
    first = tmp_path / "first.tar"
    result = cli("export", "--root", str(first_root), "--image", name, "-o", str(first), "--json", "-q")
    assert result.code == 0, result.stderr
    image_id = result.json["images"][0]["image_id"]

    second_root = root_unpacked_by(private_containerd(), first)
    manifest = json.loads(blob_path(second_root, result.json["images"][0]["manifest"]).read_bytes())
    lose_blobs(second_root, [layer["digest"] for layer in manifest["layers"]])
    again = cli("export", "--root", str(second_root), "--image", name, "-o", str(tmp_path / "second.tar"), "--json")
    assert again.code == 0, again.stderr
    change = again.json["rewritten"][0]
    assert all(layer["matches_diff_id"] for layer in change["layers"]) and not change["config_changed"]
    assert again.json["images"][0]["image_id"] == image_id and again.json["image_ids_changed"] == []
    assert f"image ID unchanged {image_id}" in again.stderr
    assert change["original_manifest"] == result.json["images"][0]["manifest"]


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_discarded_layers_image_exported_into_a_new_root_runs_there(line, realnode_set_for, cli, tmp_path,
                                                                     private_containerd):
    """``--format containerd-root`` regenerates too: the new root (written for the source's
    line) holds the rewritten image, complete and unpacked, and that line's containerd runs it."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for(line)
    ran = corpus.info["roots"][DISCARDED]["container"]
    new = tmp_path / "new"
    result = cli("export", "--root", str(corpus.root(DISCARDED)), "-n", "k8s.io", "--image", ran["image"],
                 "-o", str(new), "--format", "containerd-root", "--json")
    assert result.code == 0, result.stderr
    assert "layer(s) regenerated from snapshots" in result.stderr and "is now sha256:" in result.stderr
    verify = cli("verify", "--root", str(new), "-A", "-q", "--json")
    assert verify.code == 0, verify.json["problems"]
    daemon = private_containerd(root=new, binary_dir=_bin_dir(line))
    rows = {row.ref: row for row in daemon.images_check("k8s.io")}
    assert rows[ran["image"]].complete and rows[ran["image"]].unpacked, rows
    run = daemon.ctr("run", "--rm", ran["image"], "ctrconv-root-regenerated", *ran["command"], namespace="k8s.io",
                     check=False, timeout=120)
    assert run.returncode == 0, run.stderr
