"""Roots written by ``ctrconv import``/``rebuild`` for containerd 1.6, 1.7 and 2.x, judged by that line.

For each line: an import into a new root made for it (``--containerd-version``) and into a copy
of a root that line's daemon made itself, and an ``export --format containerd-root``; every bolt file passes Go's ``tx.Check``; the meta.db
has the form that line writes (freelist persisted only by 1.6, schema version 4 only by 2.x,
nothing but ``v1`` at the root level); that line's daemon lists, checks, runs, garbage-collects
and restarts without losing anything. A damaged copy of each line's root is rebuilt and accepted.
Across lines: a 1.6 root started by 2.x (node upgrade) and by 1.7, a 1.7 root started by 1.6.
The observations are written up in docs/containerd-versions.md ("Writing roots for each version").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
import pytest

from ctrconv.bolt import BoltFile
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.sinks.containerd_root.transaction import detect_containerd_version
from support.daemon import META_DB, OVERLAY_DB, PrivateContainerd, containerd_version
from support.damage import meta_current_meta_zeroed, snapshot_dir_deleted
from support.fixture_set import FixtureSet, get_fixture_set
from support.versions import SCHEMA_VERSION, bin_dir_for, fixture_set_for
from support.go_bbolt import go_check

pytestmark = pytest.mark.interop

LINES = ("1.6", "1.7", "2.x")
OCI = "docker.io/library/bbx:oci"
NS = "ctrconv"  # namespace our import uses in a copy of a daemon-made root

#: what ``ctr run`` of bbx:oci must print: layer 2 modified the file, deleted ``remove-me``
#: and made ``opq`` opaque (only ``new`` left); layer 3 deleted ``gone-dir``; layer 3's hostname
RUN_SCRIPT = "cat /data/modify.txt /etc/hostname; ls /data/opq; ls /data/remove-me /data/gone-dir 2>&1 | wc -l; ls -a /data | grep -c -e remove-me -e gone-dir -e '^.wh.'; true"
RUN_EXPECTED = "version 2, modified by layer 2\nbbx\nnew\n2\n0\n"


@dataclass(frozen=True)
class Line:
    """One containerd line: its binaries and the fixture set its daemon built."""

    version: str
    bin_dir: str | None
    fixtures: FixtureSet

    def daemon(self, root: Path) -> PrivateContainerd:
        return PrivateContainerd(self.bin_dir, root=root).start()

    def input(self, key: str) -> Path:
        return self.fixtures.file(self.fixtures.input(key)["path"])


def _line(version: str) -> Line:
    """1.6 is the system containerd (skip unless it is 1.6); 1.7/2.x are fetched .debs."""
    if version == "1.6":
        if shutil.which("containerd") is None or shutil.which("ctr") is None:
            pytest.skip("containerd 1.6 (system package) is not installed")
        if not containerd_version(None).startswith("1.6."):
            pytest.skip(f"system containerd is {containerd_version(None)}, not 1.6")
        return Line("1.6", None, get_fixture_set(None))
    return Line(version, str(bin_dir_for(version)), fixture_set_for(version))


@pytest.fixture(scope="session")
def lines() -> dict[str, Line]:
    """Lines by version, resolved lazily (a line that cannot be fetched skips only its tests)."""
    if os.geteuid() != 0:
        pytest.skip("containerd roots need root (overlayfs mounts, device nodes)")
    return _LazyLines()


class _LazyLines(dict):
    def __missing__(self, version: str) -> Line:
        self[version] = _line(version)
        return self[version]


# -- helpers ------------------------------------------------------------------------------


def ctrconv(*args: str) -> dict:
    """Run the ``ctrconv`` CLI in-process with ``--json``; fail with its stderr on a non-zero exit."""
    from ctrconv.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*args, "--json", "-q"])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    assert code == 0, f"ctrconv {' '.join(args)}: exit {code}\n{err.getvalue()}"
    return json.loads(out.getvalue())


def copy_root(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


@dataclass(frozen=True)
class MetaForm:
    """What distinguishes the lines' meta.db files."""

    freelist_synced: bool
    schema_version: int | None
    root_keys: tuple[bytes, ...]


def meta_form(root: Path) -> MetaForm:
    with BoltFile(root / META_DB) as db:
        keys = tuple(k for k, _ in db.root.items())
        return MetaForm(db.meta.freelist_synced, MetadataDB(db).schema_version, keys)


def expected_form(version: str) -> MetaForm:
    return MetaForm(version == "1.6", SCHEMA_VERSION[version], (b"v1",))


def assert_go_clean(root: Path) -> None:
    for rel in (META_DB, OVERLAY_DB):
        assert go_check(root / rel) == [], rel


@dataclass(frozen=True)
class State:
    """Everything a GC or restart must not change, as the daemon lists it."""

    images: tuple[tuple[str, str, str, bool], ...]
    content: tuple[str, ...]
    snapshots: str


def daemon_state(daemon: PrivateContainerd, namespace: str) -> State:
    rows = tuple(sorted((r.ref, r.digest, r.status, r.unpacked) for r in daemon.images_check(namespace)))
    content = tuple(sorted(daemon.ctr("content", "ls", "-q", namespace=namespace).stdout.split()))
    return State(rows, content, daemon.ctr("snapshots", "ls", namespace=namespace).stdout)


def assert_complete_and_unpacked(state: State, names: set[str]) -> None:
    rows = {ref: (status, unpacked) for ref, _, status, unpacked in state.images}
    assert names <= set(rows), (sorted(names), sorted(rows))
    for name in names:
        status, unpacked = rows[name]
        assert status.startswith("complete") and unpacked, (name, status, unpacked)


def assert_runs(daemon: PrivateContainerd, namespace: str, container: str) -> None:
    """``ctr run`` of bbx:oci sees the merged layers: whiteouts and the opaque dir applied."""
    out = daemon.ctr("run", "--rm", OCI, container, "/bin/busybox", "sh", "-c", RUN_SCRIPT, namespace=namespace).stdout
    assert out == RUN_EXPECTED


def judge(line: Line, root: Path, namespace: str, names: set[str]) -> State:
    """That line's daemon: complete + unpacked, runs, and a forced GC and a restart lose nothing."""
    daemon = line.daemon(root)
    try:
        before = daemon_state(daemon, namespace)
        assert_complete_and_unpacked(before, names)
        assert_runs(daemon, namespace, f"t-{line.version.replace('.', '')}")
        assert daemon_state(daemon, namespace) == before
        daemon.force_gc(namespace)
        assert daemon_state(daemon, namespace) == before
    finally:
        daemon.close()
    daemon = line.daemon(root)
    try:
        assert daemon_state(daemon, namespace) == before
    finally:
        daemon.close()
    return before


# -- import into a new root and into a copy of the line's own root -------------------------


@pytest.fixture(scope="module", params=LINES)
def line(request, lines) -> Line:
    return lines[request.param]


@dataclass
class Written:
    new_root: Path
    new_names: set[str]
    copy_root: Path
    copy_names: set[str]
    fixture_form: MetaForm


@pytest.fixture(scope="module")
def written(line: Line, tmp_path_factory) -> Written:
    """Both imports for ``line``, shared by the asserts below (no daemon has seen them yet)."""
    base = tmp_path_factory.mktemp(f"write-{line.version}")
    new_root = base / "new"
    names: set[str] = set()
    for key, extra in (("bbx-oci", ()), ("bbx-multi", ("--all-platforms",)), ("bbx-docker", ())):
        report = ctrconv("import", "--root", str(new_root), "-i", str(line.input(key)),
                         "--containerd-version", line.version, *extra)
        names |= {i["name"] for i in report["images"]}
    copied = copy_root(line.fixtures.root, base / "copy")
    report = ctrconv("import", "--root", str(copied), "-n", NS, "-i", str(line.input("bbx-oci")),
                     "--containerd-version", line.version)
    return Written(new_root, names, copied, {i["name"] for i in report["images"]}, meta_form(line.fixtures.root))


def test_new_root_has_the_form_that_line_writes(line, written):
    assert written.new_names == {OCI, "docker.io/library/bbx:alias", "docker.io/library/bbx:multi",
                                 "docker.io/library/bbx:docker"}
    assert meta_form(written.new_root) == expected_form(line.version)
    assert detect_containerd_version(written.new_root / META_DB) == line.version
    with BoltFile(written.new_root / OVERLAY_DB) as db:
        assert db.meta.freelist_synced  # the snapshotter db keeps a freelist on every line
    assert_go_clean(written.new_root)


def test_existing_root_keeps_the_form_its_daemon_wrote(line, written):
    assert written.fixture_form == expected_form(line.version)
    assert meta_form(written.copy_root) == written.fixture_form
    assert detect_containerd_version(written.copy_root / META_DB) == line.version
    assert_go_clean(written.copy_root)


def test_that_line_runs_gcs_and_restarts_on_the_new_root(line, written):
    judge(line, written.new_root, "default", written.new_names)
    after = meta_form(written.new_root)
    assert after.schema_version == SCHEMA_VERSION[line.version] and after.root_keys == (b"v1",)
    assert after.freelist_synced is (line.version == "1.6")  # its own writes kept the form
    assert_go_clean(written.new_root)


def test_that_line_runs_gcs_and_restarts_on_its_own_root_after_import(line, written):
    judge(line, written.copy_root, NS, written.copy_names)
    # the daemon's own images next to ours are untouched: same rows as recorded at build time
    recorded = (line.fixtures.file("refs/images-check/default.txt")).read_text()
    daemon = line.daemon(written.copy_root)
    try:
        assert daemon.ctr("images", "check").stdout == recorded
    finally:
        daemon.close()
    assert meta_form(written.copy_root) == written.fixture_form
    assert_go_clean(written.copy_root)


def test_export_to_a_new_root_for_that_line(line, tmp_path):
    """``export --format containerd-root`` from that line's root into a new root made for it."""
    out = tmp_path / "out"
    ctrconv("export", "--root", str(line.fixtures.root), OCI, "-o", str(out),
            "--format", "containerd-root", "--containerd-version", line.version)
    assert meta_form(out) == expected_form(line.version)
    assert_go_clean(out)
    judge(line, out, "default", {OCI})


@pytest.mark.parametrize("flag", LINES)
def test_the_existing_root_decides_whatever_the_flag_says(line, flag, tmp_path):
    """``--containerd-version`` shapes new roots only; an existing meta.db keeps its line's form."""
    from ctrconv.sinks.containerd_root.transaction import RootTransaction

    root = copy_root(line.fixtures.root, tmp_path / "root")
    with RootTransaction(root, (), flag, backup=False) as txn:
        assert txn.detected_version == line.version
        provable = line.version == "2.x" and flag != "2.x" or line.version == "1.7" and flag == "1.6"
        assert (txn.version_mismatch is not None) is provable, txn.version_mismatch
    report = ctrconv("import", "--root", str(root), "-n", NS, "-i", str(line.input("bbx-docker")), "--containerd-version", flag)
    assert bool(report["warnings"]) is provable, report["warnings"]
    assert meta_form(root) == expected_form(line.version)
    assert_go_clean(root)


# -- rebuild -------------------------------------------------------------------------------


def test_rebuild_of_a_damaged_root_is_accepted_by_that_line(line, tmp_path):
    """Newest meta page zeroed and a snapshot directory deleted; rebuild in place."""
    root = copy_root(line.fixtures.root, tmp_path / "root")
    form = meta_form(root)
    meta_current_meta_zeroed(root, line.fixtures)
    snapshot_dir_deleted(root, line.fixtures)
    report = ctrconv("rebuild", "--root", str(root))
    assert report["snapshots_unpacked"] > 0
    assert meta_form(root) == form  # version key kept (never 4 -> 3), freelist style kept
    assert_go_clean(root)
    complete = {i["name"] for i in line.fixtures.images("default") if i["complete"]}
    judge(line, root, "default", complete)
    assert meta_form(root) == form


def test_rebuild_regenerates_lost_layers_that_line_accepts(line, tmp_path):
    """Every layer blob of bbx:oci deleted (its snapshots survive); ``rebuild --regenerate-layers``
    in place writes them again from the overlayfs snapshots (whiteouts, opaque directory) and
    that line's daemon runs the image with the same merged tree."""
    from support.damage import blob_path

    root = copy_root(line.fixtures.root, tmp_path / "root")
    form = meta_form(root)
    manifest = line.fixtures.image("default", OCI)["manifests"][0]
    for layer in manifest["layers"]:
        blob_path(root, layer["digest"]).unlink(missing_ok=True)
    report = ctrconv("rebuild", "--root", str(root), "--regenerate-layers")
    entry = {r["name"]: r for r in report["regenerated"] if r["namespace"] == "default"}[OCI]
    assert [x["original"] for x in entry["manifests"][0]["layers"]] == [x["digest"] for x in manifest["layers"]]
    assert not [d for d in report["dropped"] if d["kind"] == "image"], report["dropped"]
    assert meta_form(root) == form
    assert_go_clean(root)
    complete = {i["name"] for i in line.fixtures.images("default") if i["complete"]}
    judge(line, root, "default", complete)


def test_rebuild_restores_a_lost_version_key_for_that_line(line, tmp_path):
    """A lost ``v1/version`` becomes 4 on a 2.x root (never 3 there), 3 on a 1.x root."""
    from ctrconv.bolt.reader import read_tree
    from ctrconv.bolt.writer import write_bolt

    root = copy_root(line.fixtures.root, tmp_path / "root")
    form = meta_form(root)
    tree = read_tree(root / META_DB)
    del tree.bucket(b"v1").entries[b"version"]
    with BoltFile(root / META_DB) as db:
        page_size = db.page_size
    write_bolt(root / META_DB, tree, page_size=page_size, freelist=form.freelist_synced)
    assert meta_form(root).schema_version is None
    ctrconv("rebuild", "--root", str(root), "--no-unpack")
    assert meta_form(root) == form
    assert_go_clean(root)


# -- across lines --------------------------------------------------------------------------


@pytest.mark.parametrize(("written_for", "started_by"), [("1.6", "2.x"), ("1.6", "1.7"), ("1.7", "1.6")])
def test_a_root_written_for_one_line_started_by_another(lines, tmp_path, written_for, started_by):
    """Node upgrade 1.6 -> 2.x migrates 3 -> 4; 1.7+ drops a persisted freelist; 1.6 writes one."""
    writer, daemon_line = lines[written_for], lines[started_by]
    root = tmp_path / "root"
    ctrconv("import", "--root", str(root), "-i", str(writer.input("bbx-oci")), "--containerd-version", written_for)
    assert meta_form(root) == expected_form(written_for)
    judge(daemon_line, root, "default", {OCI, "docker.io/library/bbx:alias"})
    after = meta_form(root)
    assert after.root_keys == (b"v1",)
    assert after.schema_version == max(SCHEMA_VERSION[written_for], SCHEMA_VERSION[started_by])
    assert after.freelist_synced is (started_by == "1.6")
    assert_go_clean(root)


def test_rebuild_after_a_node_upgrade_writes_for_the_new_line(lines, tmp_path):
    """A 1.6 root that 2.x has started (migrated) is rebuilt in 2.x's form, not 1.6's."""
    old, new = lines["1.6"], lines["2.x"]
    root = copy_root(old.fixtures.root, tmp_path / "root")
    new.daemon(root).close()
    with BoltFile(root / META_DB) as db:
        # the newest meta page is 2.x's (no freelist); the older one may still be 1.6's
        assert max(db.metas, key=lambda m: m.txid).freelist_synced is False
    assert detect_containerd_version(root / META_DB) == "2.x"
    ctrconv("rebuild", "--root", str(root))
    assert meta_form(root) == expected_form("2.x")
    assert_go_clean(root)
    judge(new, root, "default", {i["name"] for i in old.fixtures.images("default") if i["complete"]})


def test_rebuild_from_content_alone_is_clean_for_that_line(line, tmp_path):
    """meta.db deleted: images are re-derived from the content store. On 2.x, manifests of
    platforms whose config and layers were never fetched (a transfer-service import keeps them)
    must keep their content records and index labels, or verify flags them and GC takes them."""
    from support.damage import meta_deleted

    root = copy_root(line.fixtures.root, tmp_path / "root")
    meta_deleted(root, line.fixtures)
    ctrconv("rebuild", "--root", str(root))
    verify = subprocess.run([sys.executable, "-m", "ctrconv", "verify", "--root", str(root), "-A", "-q", "--json"],
                            capture_output=True, text=True)
    problems = [p for p in json.loads(verify.stdout)["problems"] if p["severity"] != "info"]
    assert verify.returncode == 0, problems
    assert_go_clean(root)
