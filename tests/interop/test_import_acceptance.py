"""Acceptance of ``ctrconv import`` judged by a real containerd (1.6 unless CTRCONV_CONTAINERD_BIN).

What ``test_import_interop.py`` does not cover yet, all through the CLI:

* every fixture input into an empty root, into a new namespace of a copy of the populated fixture
  root (and again into ``default``, where everything is already present), and with
  ``--snapshotter native``: every snapshot tree equals the one containerd made (recorded overlay
  listings; for native, trees a private containerd unpacked from the same inputs), ``ctr images
  check`` says complete and unpacked, ``ctr run`` shows whiteouts, the opaque dir, modes and
  symlinks as the image holds them, and a forced GC plus a restart change no snapshot;
* hostile layers and bad inputs into a copy of the populated root: exit 1/2, one error line,
  the root byte-identical (content hashes and mtimes of every path), a canary outside untouched;
  the one escape containerd confines instead of refusing (write through an absolute symlink) is
  compared with what containerd does;
* round trip: ``ctr images export`` of a ``--no-unpack`` root gives the input's blobs and index
  targets, a skopeo docker-archive imports, and deleting an image (GC) keeps every other blob.

The imported roots are built once per module and shared by the read-only checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from ctrconv.bolt.reader import read_tree
from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_uvarint_exact
from ctrconv.layers.listing import Listing, as_listing, compare_listings, tree_listing
from fuzz.seeds import OCI_MANIFEST, sha256
from hostile.images import desc, image, member, tar
from support.daemon import PrivateContainerd, parse_table

pytestmark = pytest.mark.interop

#: every input of the fixture set (fixtures/README.md); a new input must be added here
INPUT_KEYS = ["bbx-docker", "bbx-oci", "bbx-zstd", "bbx-uncompressed", "bbx-multi", "bbx-sparse", "oci-layout"]
#: inputs whose host image is the rich 3-layer image (whiteouts, opaque dir, modes, devices)
RICH = {"bbx-docker", "bbx-oci", "bbx-zstd", "bbx-uncompressed", "oci-layout"}
NEW_NS = "acc"
META = Path(K.METADATA_PLUGIN_DIR) / K.META_DB


# -- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def ctrconv(*args: str | Path) -> Run:
    """``ctrconv ARGS`` in-process (module fixtures cannot use the function-scoped ``cli``)."""
    from ctrconv.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Run(code, out.getvalue(), err.getvalue())


def import_ok(root: Path, fixture_set: Any, key: str, *extra: str) -> Run:
    rec = fixture_set.input(key)
    res = ctrconv("import", "--root", root, "-i", fixture_set.file(rec["path"]), "-q", "--no-backup",
                  *rec["import_args"], *extra)
    assert res.code == 0, (key, res.stderr)
    return res


def snapshot_dirs(root: Path, namespace: str, snapshotter: str) -> dict[str, Path]:
    """chain ID -> tree (overlayfs ``snapshots/<id>/fs``, native ``snapshots/<id>``) of every committed snapshot of ``namespace`` (offline)."""
    meta = read_tree(root / META)
    backend = read_tree(root / K.snapshotter_dir(snapshotter) / "metadata.db")
    try:
        records = meta.bucket(K.V1, namespace.encode(), K.SNAPSHOTS, snapshotter.encode())
    except KeyError:
        return {}
    out = {}
    for key, rec in records.entries.items():
        sid = decode_uvarint_exact(backend.bucket(K.V1, K.SNAPSHOTS, rec.get(K.NAME)).get(K.ID))
        path = root / K.snapshotter_dir(snapshotter) / "snapshots" / str(sid)
        out[key.decode()] = path / "fs" if snapshotter == "overlayfs" else path
    return out


def host_chains(fixture_set: Any, key: str) -> dict[str, list[str]]:
    """image name -> chain IDs (bottom first) of its host-platform manifest, for one input."""
    out = {}
    for name in fixture_set.input(key)["names"]:
        rec = fixture_set.image("default", name)
        manifest = next(m for m in rec["manifests"] if m["digest"] == rec["host_manifest"])
        out[name] = list(manifest["chain_ids"])
    return out


def merged_view(fixture_set: Any, chains: list[str]) -> Listing:
    """The rootfs an overlay mount of containerd's recorded diff listings shows (bottom first)."""
    view: Listing = {}
    for chain in chains:
        for path, entry in sorted(as_listing(fixture_set.snapshot_listing("default", chain)["entries"]).items()):
            whiteout = entry["type"] == "char" and entry.get("rdev") == [0, 0]
            opaque = entry["type"] == "dir" and entry["xattrs"].get("trusted.overlay.opaque") == "y"
            replaced = path in view and (view[path]["type"] == "dir") != (entry["type"] == "dir")
            if whiteout or opaque or replaced or entry["type"] != "dir":
                for below in [p for p in view if p.startswith(path.rstrip("/") + "/")]:
                    del view[below]
            if whiteout:
                view.pop(path, None)
                continue
            entry = dict(entry, xattrs={k: v for k, v in entry["xattrs"].items() if k != "trusted.overlay.opaque"})
            view[path] = entry
    return view


#: what the probe prints for each path: type, mode, owner, link target or content hash
PROBE_PATHS = ["/data/remove-me", "/data/gone-dir", "/data/gone-dir/inner", "/data/opq", "/data/opq/a",
               "/data/opq/sub", "/data/opq/new", "/data/setuid", "/data/setgid-dir", "/data/zero-mode",
               "/data/modify.txt", "/data/added", "/data/abs-link", "/data/dangling", "/data/hard-b",
               "/data/owned", "/tmp", "/root", "/bin/sh", "/etc/hostname", "/etc/platform"]
PROBE = (
    "for p in " + " ".join(PROBE_PATHS) + "; do "
    "if [ -L $p ]; then echo \"$p symlink $(busybox readlink $p)\"; "
    "elif ! busybox ls -d $p >/dev/null 2>&1; then echo \"$p absent\"; "
    "elif [ -d $p ]; then echo \"$p dir $(busybox stat -c '%a %u:%g' $p)\"; "
    "else echo \"$p file $(busybox stat -c '%a %u:%g' $p) $(busybox sha256sum $p | busybox cut -c1-64)\"; fi; "
    "done; echo \"opq: $(busybox ls -A /data/opq 2>/dev/null | busybox tr '\\n' ' ')\""
)


def expected_probe(view: Listing) -> str:
    lines = []
    for path in PROBE_PATHS:
        entry = view.get(path)
        if entry is None:
            lines.append(f"{path} absent")
        elif entry["type"] == "symlink":
            lines.append(f"{path} symlink {entry['link']}")
        else:
            owner = f"{int(entry['mode'], 8):o} {entry['uid']}:{entry['gid']}"
            if entry["type"] == "dir":
                lines.append(f"{path} dir {owner}")
            else:
                lines.append(f"{path} file {owner} {entry['sha256'][7:]}")
    opq = sorted(p.rsplit("/", 1)[1] for p in view if p.startswith("/data/opq/") and p.count("/") == 3)
    lines.append("opq: " + "".join(name + " " for name in opq))
    return "\n".join(lines) + "\n"


def run_probe(daemon: PrivateContainerd, image_name: str, namespace: str, *snapshotter: str) -> str:
    cid = "probe-" + hashlib.sha256(f"{image_name}{namespace}{snapshotter}".encode()).hexdigest()[:10]
    return daemon.ctr("run", *snapshotter, "--rm", image_name, cid, "/bin/busybox", "sh", "-c", PROBE,
                      namespace=namespace).stdout


def assert_rich_facts(out: str) -> None:
    """The acceptance facts, spelled out (``expected_probe`` checks the rest against containerd)."""
    assert "/data/remove-me absent" in out  # whiteout of a file
    assert "/data/gone-dir absent" in out and "/data/gone-dir/inner absent" in out  # whiteout of a dir
    assert "opq: new \n" in out  # opaque dir hides the lower a and sub/
    assert "/data/setuid file 4755 0:0" in out and "/data/setgid-dir dir 2775 0:1000" in out
    assert "/data/zero-mode file 600 0:0" in out and "/tmp dir 1777 0:0" in out
    assert "/data/abs-link symlink /etc/passwd" in out and "/bin/sh symlink busybox" in out


def content_ls(daemon: PrivateContainerd, namespace: str) -> list[tuple[str, str, str]]:
    """``ctr content ls`` without the AGE column: (digest, size, sorted labels)."""
    lines = daemon.ctr("content", "ls", namespace=namespace).stdout.splitlines()[1:]
    rows = [line.split("\t") for line in lines if line]
    return sorted((r[0], r[1], ",".join(sorted(r[3].split(",")))) for r in rows)  # Go map order


def gc_restart_keeps(daemon_factory: Any, root: Path, namespaces: list[str], snapshotter: str = "overlayfs") -> None:
    """Forced GC in every namespace, restart: ``ctr snapshots ls`` and ``ctr content ls`` unchanged."""
    def state(daemon: PrivateContainerd) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
        return {ns: (daemon.ctr("snapshots", "--snapshotter", snapshotter, "ls", namespace=ns).stdout,
                     content_ls(daemon, ns)) for ns in namespaces}

    daemon = daemon_factory(root=root)
    before = state(daemon)
    for ns in namespaces:
        assert before[ns][0].count("\n") > 1, f"{ns}: no snapshots"
        daemon.force_gc(ns)
    assert state(daemon) == before
    daemon.stop()
    daemon = daemon_factory(root=root)
    assert state(daemon) == before
    daemon.stop()


# -- 1. every input: empty root, populated root, native -------------------------------------


@dataclass(frozen=True)
class Roots:
    empty: dict[str, Path]
    populated: Path
    populated_reports: dict[str, str]
    native: Path
    containerd_native: Path


@pytest.fixture(scope="module")
def roots(fixture_set: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roots]:
    base = tmp_path_factory.mktemp("acceptance")
    empty = {}
    for key in INPUT_KEYS:
        empty[key] = base / f"empty-{key}"
        import_ok(empty[key], fixture_set, key)
    populated = base / "populated"
    subprocess.run(["cp", "-a", str(fixture_set.root), str(populated)], check=True)
    reports = {}
    for key in INPUT_KEYS:
        reports[key] = import_ok(populated, fixture_set, key).stdout
        import_ok(populated, fixture_set, key, "-n", NEW_NS)
    native = base / "native"
    for key in INPUT_KEYS:
        import_ok(native, fixture_set, key, "--snapshotter", "native")
    # the reference for native trees: containerd's own unpack of the same inputs
    reference = base / "containerd-native"
    with PrivateContainerd(root=reference) as daemon:
        for key in INPUT_KEYS:
            rec = fixture_set.input(key)
            if rec["format"] == "oci-layout":
                continue  # ctr imports archives only; its images come from the other inputs
            daemon.ctr("images", "import", "--snapshotter", "native", *rec["import_args"], fixture_set.file(rec["path"]))
    yield Roots(empty, populated, reports, native, reference)
    shutil.rmtree(base, ignore_errors=True)


def test_every_fixture_input_is_covered(fixture_set: Any) -> None:
    assert sorted(i["key"] for i in fixture_set.info["inputs"]) == sorted(INPUT_KEYS)


def _assert_trees_equal(fixture_set: Any, ours: dict[str, Path], wanted: set[str]) -> None:
    assert set(ours) == wanted
    for chain in sorted(wanted):
        want = fixture_set.snapshot_listing("default", chain)["entries"]
        assert compare_listings(want, tree_listing(ours[chain])) == [], chain


def _assert_checked(daemon: PrivateContainerd, fixture_set: Any, namespace: str, names: list[str],
                    snapshotter: str = "overlayfs") -> None:
    """``ctr images check --snapshotter S``: the status containerd recorded, and unpacked."""
    out = daemon.ctr("images", "check", "--snapshotter", snapshotter, namespace=namespace).stdout
    rows = {r["REF"]: r for r in parse_table(out)}
    for name in names:
        recorded = fixture_set.image("default", name)["check"]
        row = rows[name]
        assert (row["STATUS"], row["UNPACKED"], row["DIGEST"]) == (recorded["status"], "true", recorded["digest"]), name
        assert row["STATUS"].startswith("complete")


@pytest.mark.parametrize("key", INPUT_KEYS)
def test_empty_root_equals_containerd_runs_and_survives_gc(fixture_set, roots, private_containerd, key) -> None:
    root = roots.empty[key]
    chains = host_chains(fixture_set, key)
    _assert_trees_equal(fixture_set, snapshot_dirs(root, "default", "overlayfs"),
                        {c for cs in chains.values() for c in cs})
    daemon = private_containerd(root=root)
    assert sorted(daemon.image_names()) == sorted(chains)
    _assert_checked(daemon, fixture_set, "default", list(chains))
    name = sorted(chains)[0]
    out = run_probe(daemon, name, "default")
    assert out == expected_probe(merged_view(fixture_set, chains[name]))
    if key in RICH:
        assert_rich_facts(out)
    daemon.stop()
    gc_restart_keeps(private_containerd, root, ["default"])


def test_populated_root_new_namespace_equals_containerd(fixture_set, roots, private_containerd) -> None:
    root = roots.populated
    wanted = {c for key in INPUT_KEYS for cs in host_chains(fixture_set, key).values() for c in cs}
    _assert_trees_equal(fixture_set, snapshot_dirs(root, NEW_NS, "overlayfs"), wanted)
    # the snapshots containerd made in default and k8s.io are still the ones it made
    for ns in ("default", "k8s.io"):
        ours = snapshot_dirs(root, ns, "overlayfs")
        assert set(ours) == {s["key"] for s in fixture_set.info["snapshots"][ns]}
    for key, report in roots.populated_reports.items():
        lines = [line for line in report.splitlines() if not line.startswith("metadata completed:")]
        assert lines and all(": already present (" in line for line in lines), (key, report)

    daemon = private_containerd(root=root)
    for ns in ("default", "k8s.io"):
        recorded = fixture_set.file(f"refs/snapshots-ls/{ns}.txt").read_text()
        assert daemon.ctr("snapshots", "ls", namespace=ns).stdout == recorded
        assert {r.ref: (r.status, r.unpacked) for r in daemon.images_check(ns)} == {
            i["name"]: (i["check"]["status"], i["check"]["unpacked"]) for i in fixture_set.images(ns)}
    names = sorted({n for key in INPUT_KEYS for n in fixture_set.input(key)["names"]})
    assert sorted(daemon.image_names(NEW_NS)) == names
    _assert_checked(daemon, fixture_set, NEW_NS, names)
    for key in ("bbx-oci", "bbx-multi"):
        name, chains = sorted(host_chains(fixture_set, key).items())[0]
        out = run_probe(daemon, name, NEW_NS)
        assert out == expected_probe(merged_view(fixture_set, chains))
    assert_rich_facts(run_probe(daemon, "docker.io/library/bbx:docker", NEW_NS))
    daemon.stop()
    gc_restart_keeps(private_containerd, root, ["default", "k8s.io", NEW_NS])


def test_native_trees_equal_containerd_native_and_run(fixture_set, roots, private_containerd) -> None:
    ours = snapshot_dirs(roots.native, "default", "native")
    theirs = snapshot_dirs(roots.containerd_native, "default", "native")
    assert set(ours) == set(theirs) and theirs
    for chain in sorted(theirs):
        assert compare_listings(tree_listing(theirs[chain]), tree_listing(ours[chain])) == [], chain
    names = sorted({n for key in INPUT_KEYS for n in fixture_set.input(key)["names"]})
    daemon = private_containerd(root=roots.native)
    _assert_checked(daemon, fixture_set, "default", names, "native")
    for key in ("bbx-oci", "bbx-sparse"):
        name, chains = sorted(host_chains(fixture_set, key).items())[0]
        out = run_probe(daemon, name, "default", "--snapshotter", "native")
        assert out == expected_probe(merged_view(fixture_set, chains))
    assert_rich_facts(run_probe(daemon, "docker.io/library/bbx:zstd", "default", "--snapshotter", "native"))
    daemon.stop()
    gc_restart_keeps(private_containerd, roots.native, ["default"], "native")


# -- 2./3. hostile layers and bad inputs into a copy of the populated root --------------------


def root_state(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root``: type/mode, owner, size, mtime and content hash or link target.

    Directory mtimes are left out: a refused import streams blobs through a temp directory in the
    content store and removes what it wrote, which touches the parents' mtimes (containerd reads
    neither); the entry set of every directory is compared instead, through the paths.
    """
    state: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath) / name if name != "." else Path(dirpath)
            st = path.lstat()
            what: Any = ""
            if path.is_symlink():
                what = os.readlink(path)
            elif path.is_file():
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            elif not path.is_dir():
                what = st.st_rdev
            mtime = None if path.is_dir() and not path.is_symlink() else st.st_mtime_ns
            state[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, mtime, what)
    return state


@dataclass(frozen=True)
class Victim:
    root: Path
    baseline: dict[str, tuple[Any, ...]]
    canary: Path
    inputs: Path


@pytest.fixture(scope="module")
def victim(fixture_set: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victim]:
    """A copy of the populated fixture root that every refused import must leave byte-identical."""
    base = tmp_path_factory.mktemp("victim")
    root = base / "root"
    subprocess.run(["cp", "-a", str(fixture_set.root), str(root)], check=True)
    canary = base / "canary-dir"
    canary.mkdir()
    (base / "inputs").mkdir()
    yield Victim(root, root_state(root), canary, base / "inputs")
    shutil.rmtree(base, ignore_errors=True)


def _layer_image(*entries: Any) -> bytes:
    return image([tar(list(entries))])


def _deep(canary: Path) -> str:
    return "../" * 40 + str(canary).lstrip("/")


HOSTILE_LAYERS = {
    "dotdot-etc": lambda c: _layer_image(member("../../etc/x", data=b"x")),
    "dotdot-to-canary": lambda c: _layer_image(member(_deep(c) + "/pwned", data=b"x")),
    "hardlink-absolute-outside": lambda c: _layer_image(member("h", tarfile.LNKTYPE, linkname="/etc/passwd")),
    "hardlink-dotdot-outside": lambda c: _layer_image(member("h", tarfile.LNKTYPE, linkname="../../../../etc/passwd")),
    "hardlink-through-abs-symlink": lambda c: _layer_image(
        member("link", tarfile.SYMTYPE, linkname=str(c)), member("h", tarfile.LNKTYPE, linkname="link/x")),
    "whiteout-dotdot": lambda c: _layer_image(member("a/", tarfile.DIRTYPE, mode=0o755), member("a/.wh..", data=b"")),
    "whiteout-dotdot-top": lambda c: _layer_image(member(".wh..", data=b"")),
    # the first layer unpacks fine into a temp snapshot; the second is refused: nothing stays
    "second-layer-dotdot": lambda c: image([tar([member("etc/", tarfile.DIRTYPE, mode=0o755), member("etc/ok", data=b"ok")]),
                                            tar([member("etc/../../x", data=b"x")])]),
}


def _manifest_image(manifest: bytes, extra: dict[str, bytes] | None = None, **index_fields: Any) -> bytes:
    """An OCI tar whose index names ``manifest`` (its blob stored, digest and size correct unless overridden)."""
    def edit(index: dict[str, Any], blobs: dict[str, bytes]) -> dict[str, Any]:
        blobs.update({"manifest": manifest, **(extra or {})})
        index["manifests"][0].update(desc(OCI_MANIFEST, manifest), **index_fields)
        return index
    return image([tar([member("f", data=b"x")])], edit_index=edit)


def _without_blob(data: bytes, role: str) -> bytes:
    """The archive with the blob of ``role`` (config or layer) left out."""
    src = tarfile.open(fileobj=io.BytesIO(data))
    manifest = json.loads(src.extractfile("blobs/sha256/" + _index_target(src)[7:]).read())  # type: ignore[union-attr]
    drop = "blobs/sha256/" + (manifest["config"] if role == "config" else manifest["layers"][0])["digest"][7:]
    return tar([(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers() if m.name != drop])  # type: ignore[union-attr]


def _index_target(src: tarfile.TarFile) -> str:
    return json.loads(src.extractfile("index.json").read())["manifests"][0]["digest"]  # type: ignore[union-attr]


def _corrupt_layer(data: bytes) -> bytes:
    """The layer blob's bytes changed, its name (digest) kept."""
    src = tarfile.open(fileobj=io.BytesIO(data))
    manifest = json.loads(src.extractfile("blobs/sha256/" + _index_target(src)[7:]).read())  # type: ignore[union-attr]
    victim = "blobs/sha256/" + manifest["layers"][0]["digest"][7:]
    out = []
    for m in src.getmembers():
        body = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
        if m.name == victim and body:
            body = body[:-1] + bytes([body[-1] ^ 1])
        out.append((m, body))
    return tar(out)


def _good() -> bytes:
    return _layer_image(member("etc/", tarfile.DIRTYPE, mode=0o755), member("etc/ok", data=b"ok\n"))


def _index_edit(**fields: Any) -> bytes:
    def edit(index: dict[str, Any], blobs: dict[str, bytes]) -> dict[str, Any]:
        index["manifests"][0].update(fields)
        return index
    return image([tar([member("f", data=b"x")])], edit_index=edit)


BAD_INPUTS = {
    "truncated-tar": lambda fx: fx.file(fx.input("bbx-oci")["path"]).read_bytes()[: 1 << 20],
    "truncated-tar-in-header": lambda fx: _good()[:1536 + 100],
    "manifest-invalid-json": lambda fx: _manifest_image(b'{"schemaVersion": 2, "config": '),
    "manifest-not-an-object": lambda fx: _manifest_image(b'["schemaVersion", 2]'),
    "config-blob-missing": lambda fx: _without_blob(_good(), "config"),
    "layer-blob-missing": lambda fx: _without_blob(_good(), "layer"),
    "layer-blob-corrupt": lambda fx: _corrupt_layer(_good()),
    "index-size-too-small": lambda fx: _index_edit(size=10),
    "index-size-too-large": lambda fx: _index_edit(size=100_000),
    "digest-traversal": lambda fx: _index_edit(digest="sha256:../../x"),
    "digest-unknown-algorithm": lambda fx: _index_edit(digest="md5:d41d8cd98f00b204e9800998ecf8427e"),
    "digest-sha512-absent": lambda fx: _index_edit(digest="sha512:" + "ab" * 64),
}


def _assert_refused(res: Run, codes: tuple[int, ...]) -> None:
    assert res.code in codes, (res.code, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctrconv: error: "), res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr


def _assert_untouched(victim: Victim, before_inputs: set[str]) -> None:
    assert list(victim.canary.iterdir()) == []
    assert not Path("/etc/x").exists()
    assert {p.name for p in victim.inputs.parent.iterdir()} == before_inputs
    now = root_state(victim.root)
    changed = sorted(p for p in now.keys() | victim.baseline.keys() if now.get(p) != victim.baseline.get(p))
    assert changed == [], f"target root changed: {changed[:10]}"


@pytest.mark.parametrize("case", sorted(HOSTILE_LAYERS))
def test_hostile_layer_is_refused_and_root_unchanged(victim: Victim, case: str) -> None:
    path = victim.inputs / f"{case}.tar"
    path.write_bytes(HOSTILE_LAYERS[case](victim.canary))
    before = {p.name for p in victim.inputs.parent.iterdir()}
    res = ctrconv("import", "--root", victim.root, "-i", path, "-q")
    _assert_refused(res, (1,))
    _assert_untouched(victim, before)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_and_root_unchanged(fixture_set: Any, victim: Victim, case: str) -> None:
    path = victim.inputs / f"{case}.tar"
    path.write_bytes(BAD_INPUTS[case](fixture_set))
    before = {p.name for p in victim.inputs.parent.iterdir()}
    res = ctrconv("import", "--root", victim.root, "-i", path, "-q")
    _assert_refused(res, (1, 2))
    _assert_untouched(victim, before)


def test_write_through_absolute_symlink_is_confined_like_containerd(tmp_path: Path, private_containerd) -> None:
    """``link -> /abs/canary`` then ``link/file``: containerd resolves the link inside the rootfs
    (the file lands in ``<snapshot>/abs/canary/file``); ctrconv must do the same, never escape."""
    canary = tmp_path / "canary-dir"
    canary.mkdir()
    layer = tar([member("link", tarfile.SYMTYPE, linkname=str(canary)), member("link/file", data=b"inside\n")])
    archive = tmp_path / "symlink.tar"
    archive.write_bytes(image([layer], name="docker.io/library/symlink:1"))
    ours_root = tmp_path / "ours"
    res = ctrconv("import", "--root", ours_root, "-i", archive, "-q")
    assert res.code == 0, res.stderr
    assert list(canary.iterdir()) == []

    theirs_root = tmp_path / "theirs"
    daemon = private_containerd(root=theirs_root)
    daemon.ctr("images", "import", archive)
    daemon.stop()
    assert list(canary.iterdir()) == []
    chain = sha256(layer)
    ours = snapshot_dirs(ours_root, "default", "overlayfs")
    theirs = snapshot_dirs(theirs_root, "default", "overlayfs")
    assert list(ours) == list(theirs) == [chain]
    assert compare_listings(tree_listing(theirs[chain]), tree_listing(ours[chain])) == []
    assert (ours[chain] / str(canary).lstrip("/") / "file").read_bytes() == b"inside\n"


# -- 4. round trip through ctr export, skopeo docker-archive, GC ----------------------------


def _tar_layout(path: Path) -> tuple[set[str], set[tuple[str, str, int, str]]]:
    """Blob digests and index targets (digest, media type, size, image name) of an OCI tar."""
    with tarfile.open(path) as tf:
        blobs = {"sha256:" + m.name.rsplit("/", 1)[1] for m in tf.getmembers()
                 if m.isfile() and m.name.startswith("blobs/sha256/")}
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
    targets = {(d["digest"], d["mediaType"], d["size"], d.get("annotations", {}).get("io.containerd.image.name", ""))
               for d in index["manifests"]}
    return blobs, targets


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_no_unpack_round_trip_skopeo_and_gc(fixture_set: Any, tmp_path: Path, private_containerd) -> None:
    root = tmp_path / "root"
    for key in ("bbx-oci", "bbx-multi"):
        import_ok(root, fixture_set, key, "--no-unpack")
    skopeo_tar = tmp_path / "skopeo-docker.tar"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q",
                    f"oci-archive:{fixture_set.file(fixture_set.input('bbx-oci')['path'])}:oci",
                    f"docker-archive:{skopeo_tar}:docker.io/library/skopeo:1"], check=True, capture_output=True)
    assert ctrconv("import", "--root", root, "-i", skopeo_tar, "--no-unpack", "-q").code == 0
    throwaway = tmp_path / "throwaway.tar"
    throwaway_layer = tar([member("gone", data=b"collected\n")])
    throwaway.write_bytes(image([throwaway_layer], name="docker.io/library/throwaway:1"))
    assert ctrconv("import", "--root", root, "-i", throwaway, "--no-unpack", "-q").code == 0

    daemon = private_containerd(root=root)
    for key in ("bbx-oci", "bbx-multi"):
        rec = fixture_set.input(key)
        out = tmp_path / f"{key}.export.tar"
        daemon.export(out, *rec["names"], args=tuple(rec["import_args"]))
        assert _tar_layout(out) == _tar_layout(fixture_set.file(rec["path"])), key
    rows = {r.ref: r for r in daemon.images_check()}
    assert rows["docker.io/library/skopeo:1"].complete and not rows["docker.io/library/skopeo:1"].unpacked
    before = set(daemon.ctr("content", "ls", "-q").stdout.split())
    with tarfile.open(throwaway) as tf:
        throwaway_blobs = {"sha256:" + m.name.rsplit("/", 1)[1] for m in tf.getmembers() if m.name.startswith("blobs/sha256/")}
    assert throwaway_blobs < before
    daemon.ctr("images", "rm", "--sync", "docker.io/library/throwaway:1")
    after = set(daemon.ctr("content", "ls", "-q").stdout.split())
    assert after == before - throwaway_blobs
    daemon.stop()

    daemon = private_containerd(root=root)
    assert set(daemon.ctr("content", "ls", "-q").stdout.split()) == after
    for key in ("bbx-oci", "bbx-multi"):
        assert _tar_layout(fixture_set.file(fixture_set.input(key)["path"]))[0] <= after, key
    rows = {r.ref: r for r in daemon.images_check()}
    assert sorted(rows) == sorted(["docker.io/library/bbx:oci", "docker.io/library/bbx:alias",
                                   "docker.io/library/bbx:multi", "docker.io/library/skopeo:1"])
    assert all(r.complete for r in rows.values()), rows
    daemon.stop()
