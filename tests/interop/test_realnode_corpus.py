"""Checks of the real-node fixture corpus itself (``fixtures/build_realnode.py``).

The corpus is what later tests judge ctrconv against, so it must be what a node really holds:
images pulled from a registry by ``ctr`` (``default``, ``other``) and by CRI (``k8s.io``), one
image removed, container records, a root left by a crashed daemon, and a root whose CRI
discards unpacked layers. Read-only: every check reads the cached corpus (a bolt lock probe
takes and drops a shared flock, nothing else).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import tarfile
from pathlib import Path

import pytest

from support.daemon import META_DB, OVERLAY_DB
from support.realnode_set import DISCARDED, LINES, ROOTS, RealnodeSet

CRI_LABEL = "io.cri-containerd.image=managed"
MULTI = ("index", "list", "nested")


@pytest.fixture(params=LINES)
def corpus(request: pytest.FixtureRequest, realnode_set_for) -> RealnodeSet:
    return realnode_set_for(request.param)


def test_built_by_its_line(corpus: RealnodeSet) -> None:
    info = corpus.info
    assert info["schema_version"] == 1
    major_minor = {"1.6": "1.6.", "1.7": "1.7.", "2.x": "2."}[corpus.line]
    assert info["containerd_version"].startswith(major_minor)
    assert [i["key"] for i in info["images"]] == [
        "oci", "docker", "index", "list", "nested", "empty", "shared-a", "shared-b"]
    for name in ROOTS:
        assert (corpus.root(name) / META_DB).is_file()
        assert (corpus.root(name) / OVERLAY_DB).is_file()


def test_registry_shapes(corpus: RealnodeSet) -> None:
    kinds = {i["key"]: i["target"]["mediaType"] for i in corpus.images()}
    assert kinds["oci"] == kinds["empty"] == "application/vnd.oci.image.manifest.v1+json"
    assert kinds["docker"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert kinds["index"] == kinds["nested"] == "application/vnd.oci.image.index.v1+json"
    assert kinds["list"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    for key in MULTI:
        rec = corpus.image(key)
        assert rec["platforms"] == [corpus.info["host_platform"], corpus.info["other_platform"]]
        assert rec["index_digest"] == rec["target"]["digest"]
    assert corpus.image("nested")["inner_index_digest"]
    assert corpus.image("empty")["layers"] == []
    a, b = corpus.image("shared-a")["layers"], corpus.image("shared-b")["layers"]
    assert a[:2] == b[:2] and a[2] != b[2]
    # every image has its own config, so no two share a CRI image ID
    assert len({i["config_digest"] for i in corpus.images()}) == len(corpus.images())


def test_default_namespace_is_ctr_pulls(corpus: RealnodeSet) -> None:
    ns = corpus.info["roots"]["node"]["namespaces"]["default"]
    for rec in corpus.images():
        names = rec["roots"]["node"]["names"]["default"]
        if rec["key"] == corpus.info["removed"]["key"]:
            assert names == []
            continue
        assert names == [rec["ref"]]
        row = rec["roots"]["node"]["check"]["default"][rec["ref"]]
        assert row["complete"], row
        assert row["unpacked"] == (rec["key"] != "empty")  # nothing to unpack without layers
        assert ns["labels"][rec["ref"]] in ("", "-")  # ctr pull sets no image labels


def test_removed_image_keeps_shared_layers(corpus: RealnodeSet) -> None:
    content = set(corpus.info["roots"]["node"]["namespaces"]["default"]["content"])
    removed = corpus.image("shared-b")
    assert removed["manifest_digest"] not in content
    assert removed["config_digest"] not in content
    assert removed["layers"][2] not in content
    assert set(removed["layers"][:2]) <= content  # still used by shared-a


def test_k8s_namespace_has_cri_names(corpus: RealnodeSet) -> None:
    ns = corpus.info["roots"]["node"]["namespaces"]["k8s.io"]
    for rec in corpus.images():
        image_id = rec["cri_image_id"]
        assert image_id == rec["config_digest"]
        repo_digest = f"{rec['repository']}@{rec['target']['digest']}"
        assert sorted(rec["roots"]["node"]["names"]["k8s.io"]) == sorted(
            [rec["ref"], repo_digest, image_id])
        for name in (rec["ref"], repo_digest, image_id):
            assert ns["labels"][name] == CRI_LABEL
            assert ns["check"][name]["complete"]
        for how in ("tag", "digest", "id"):
            status = rec["cri"][how]
            assert status is not None, (rec["key"], how)
            assert status["id"] == image_id
            assert status["repo_tags"] == [rec["ref"]]
            assert status["repo_digests"] == [repo_digest]
    listed = {i["id"] for i in corpus.info["roots"]["node"]["cri_list_images"]}
    assert listed == {rec["cri_image_id"] for rec in corpus.images()}


def test_other_namespace_holds_other_platform_only(corpus: RealnodeSet) -> None:
    index = corpus.image("index")
    ns = corpus.info["roots"]["node"]["namespaces"]["other"]
    assert ns["images"] == [index["ref"]]
    other = index["platform_manifests"][corpus.info["other_platform"]]
    host = index["platform_manifests"][corpus.info["host_platform"]]
    present = set(index["roots"]["node"]["present"]["other"])
    assert {index["index_digest"], other["manifest"], other["config"], *other["layers"]} <= present
    assert host["layers"][1] not in present  # the host platform's marker layer
    # 2.x's transfer service also fetches the manifest and config of every other platform
    # (not their layers); 1.6/1.7 never fetch the unwanted platforms' blobs
    assert ({host["manifest"], host["config"]} <= present) == (corpus.line == "2.x")
    assert not ({host["manifest"], host["config"]} & present) or corpus.line == "2.x"
    assert not ns["check"][index["ref"]]["complete"]  # ctr checks the host platform


def test_pulled_platforms_per_line(corpus: RealnodeSet) -> None:
    """ctr pull on 2.x (transfer service) also fetches other platforms' manifests and configs
    (not their layers); 1.6/1.7 ctr pull and CRI on every line fetch the host platform only."""
    for key in MULTI:
        rec = corpus.image(key)
        host = rec["platform_manifests"][corpus.info["host_platform"]]
        other = rec["platform_manifests"][corpus.info["other_platform"]]
        for ns in ("default", "k8s.io"):
            present = set(rec["roots"]["node"]["present"][ns])
            assert {host["manifest"], host["config"], *host["layers"]} <= present
            assert other["layers"][1] not in present
            fetched = {other["manifest"], other["config"]} & present
            if ns == "default" and corpus.line == "2.x":
                assert fetched == {other["manifest"], other["config"]}, key
            else:
                assert not fetched, (key, ns)


def test_reference_exports(corpus: RealnodeSet) -> None:
    for rec in corpus.images():
        path = corpus.export(rec["key"])
        if path is None:
            # ctr cannot export what its own puller stored for a nested index
            assert rec["key"] == "nested" and rec["export_error"]
            continue
        with tarfile.open(path) as tar:
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
            members = set(tar.getnames())
        assert index["manifests"][0]["digest"] == rec["target"]["digest"]
        assert f"blobs/sha256/{rec['manifest_digest'].split(':')[1]}" in members
    assert corpus.file(corpus.image("index")["export_other"]).is_file()


def test_container_records(corpus: RealnodeSet) -> None:
    names = corpus.info["containers"]
    node = corpus.info["roots"]["node"]["containers"]
    crashed = corpus.info["roots"]["crashed"]["containers"]
    assert set(node) == {names["stopped"], names["created"]}
    assert set(crashed) == {names["stopped"], names["created"], names["running_at_crash"]}
    for cid, rec in crashed.items():
        assert rec["snapshot_key"] == cid and rec["snapshotter"] == "overlayfs"
    for root in ROOTS:
        active = {s["key"] for s in corpus.info["roots"][root]["namespaces"]["default"]["snapshots"]
                  if s["kind"] == "Active"}
        assert set(corpus.info["roots"][root]["containers"]) <= active


def _lockable(path: Path) -> bool:
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def test_roots_are_offline_and_unlocked(corpus: RealnodeSet) -> None:
    mounts = Path("/proc/self/mountinfo").read_text()
    for name in (*ROOTS, DISCARDED):
        root = corpus.root(name)
        assert _lockable(root / META_DB) and _lockable(root / OVERLAY_DB)
        assert f" {root}/" not in mounts and f" {root} " not in mounts
    assert corpus.info["roots"]["crashed"]["stop"] == "SIGKILL"
    work_dir = Path("io.containerd.runtime.v2.task/default") / corpus.info["containers"][
        "running_at_crash"]
    assert (corpus.crashed_root / work_dir).is_dir()  # what the killed shim left behind
    assert not (corpus.node_root / work_dir).exists()
    pid = corpus.info["roots"]["crashed"]["running_task"]["pid"]
    assert pid > 0 and _not_a_container_task(pid)  # the task died with the clean-up


def _not_a_container_task(pid: int) -> bool:
    """The recorded task pid may have been reused by an unrelated process since."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"sleep\x003600" not in cmdline


def test_cache_is_reused(corpus: RealnodeSet, realnode_set_for) -> None:
    assert realnode_set_for(corpus.line).path == corpus.path


def test_cri_client_on_a_copy(corpus: RealnodeSet, tmp_path: Path) -> None:
    """The CRI client against a daemon of the line, on a copy: status, list, remove."""
    from support.cri import ImageServiceClient
    from support.daemon import PrivateContainerd

    binary_dir = None if corpus.line == "1.6" else str(Path(corpus.info["containerd_bin"]).parent)
    root = corpus.copy_root("node", tmp_path / "root")
    victim = corpus.image("shared-b")
    with PrivateContainerd(binary_dir, root=root, workdir=tmp_path, cri=True) as d, \
            ImageServiceClient(d.address) as client:
        client.wait_ready()
        assert {i["id"] for i in client.list_images()} == {
            i["id"] for i in corpus.info["roots"]["node"]["cri_list_images"]}
        assert client.image_status(victim["ref"]) == victim["cri"]["tag"]
        client.remove_image(victim["ref"])
        assert client.image_status(victim["ref"]) is None
        assert client.image_status(victim["cri_image_id"]) is None
        left = set(d.image_names("k8s.io"))
        assert not left & set(victim["roots"]["node"]["names"]["k8s.io"])
        assert left == set(corpus.names("k8s.io")) - set(victim["roots"]["node"]["names"]["k8s.io"])


# -- the discarded root: CRI with discard_unpacked_layers = true -----------------------------------

#: Where each line's ``containerd config dump`` shows the setting (2.x migrates our version-2
#: config, but only the ``io.containerd.cri.v1.images`` table we also write carries it).
DISCARD_TABLE = {"1.6": '[plugins."io.containerd.grpc.v1.cri".containerd]',
                 "1.7": '[plugins."io.containerd.grpc.v1.cri".containerd]',
                 "2.x": "[plugins.'io.containerd.cri.v1.images']"}
GC_LAYER = "containerd.io/gc.ref.content.l."


def _discarded(corpus: RealnodeSet) -> dict:
    return corpus.info["roots"][DISCARDED]


def _blob(root: Path, digest: str) -> Path:
    algo, hexdigest = digest.split(":", 1)
    return root / "io.containerd.content.v1.content" / "blobs" / algo / hexdigest


def _chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: the overlayfs snapshot keys of an unpacked image's layers."""
    chain: list[str] = []
    for diff in diff_ids:
        chain.append(diff if not chain else
                     "sha256:" + hashlib.sha256(f"{chain[-1]} {diff}".encode()).hexdigest())
    return chain


def test_discarded_setting_took_effect(corpus: RealnodeSet) -> None:
    """Each line really ran with the setting: its config dump, and its log (1.6/1.7 print it in
    the CRI config; 2.x warns that it falls back from the transfer service to local pulls)."""
    root = _discarded(corpus)
    assert root["path"] == DISCARDED and root["stop"] == "SIGTERM"
    setting = root["discard_unpacked_layers"]
    assert setting["config_dump"] == [{"table": DISCARD_TABLE[corpus.line], "value": True}]
    if corpus.line == "2.x":
        assert setting["log"] == [{"level": "warning", "msg": (
            "Found 'DiscardUnpackedLayers' in CRI config which is incompatible with transfer "
            "service (not supported with transfer service). Falling back to local image pull "
            "mode.")}]
    else:
        assert setting["log"] == [{"level": "info", "msg": (
            "Start cri plugin with config {... DiscardUnpackedLayers:true ...}")}]
    assert (corpus.discarded_root / META_DB).is_file()
    assert (corpus.discarded_root / OVERLAY_DB).is_file()
    assert corpus.root(DISCARDED) == corpus.discarded_root
    assert DISCARDED not in ROOTS


def test_discarded_root_lacks_layer_blobs(corpus: RealnodeSet) -> None:
    """GC took every layer (records and files); index, manifest and config of the pulled
    platform stay, nothing of another platform was fetched."""
    root = corpus.discarded_root
    ns = _discarded(corpus)["namespaces"]
    assert list(ns) == ["k8s.io"]  # CRI pulls only; ctr run added no namespace
    content = set(ns["k8s.io"]["content"])
    kept_total = set()
    for rec in corpus.images():
        per = rec["roots"][DISCARDED]
        assert per["layers_gone"] == rec["layers"], rec["key"]
        for layer in rec["layers"]:
            assert layer not in content and not _blob(root, layer).exists(), (rec["key"], layer)
        kept = [d for d in (rec["index_digest"], rec["inner_index_digest"]) if d]
        kept += [rec["manifest_digest"], rec["config_digest"]]
        assert sorted(per["present"]["k8s.io"]) == sorted(kept), rec["key"]
        for digest in kept:
            assert _blob(root, digest).is_file(), (rec["key"], digest)
        kept_total |= set(kept)
    assert content == kept_total  # nothing else: no layer of any image survived
    # the node root of the same line holds every layer of the same CRI pulls
    node = set(corpus.info["roots"]["node"]["namespaces"]["k8s.io"]["content"])
    assert {layer for rec in corpus.images() for layer in rec["layers"]} <= node
    assert content <= node


def test_discarded_manifests_reference_their_config_only(corpus: RealnodeSet) -> None:
    """``images.ChildGCLabelsFilterLayers``: a manifest keeps ``gc.ref.content.config`` and
    loses ``gc.ref.content.l.*``; indexes still reference every manifest child (including
    the other platform's, never fetched); configs hold the unpacked snapshot."""
    for rec in corpus.images():
        labels = rec["roots"][DISCARDED]["content_labels"]
        manifest = labels[rec["manifest_digest"]]
        assert manifest["containerd.io/gc.ref.content.config"] == rec["config_digest"]
        assert not [k for k in manifest if k.startswith(GC_LAYER)], rec["key"]
        config = labels[rec["config_digest"]]
        assert ("containerd.io/gc.ref.snapshot.overlayfs" in config) == bool(rec["layers"])
        if rec["key"] in MULTI:
            index = labels[rec["inner_index_digest"] or rec["index_digest"]]
            children = {v for k, v in index.items() if k.startswith("containerd.io/gc.ref.content.m.")}
            assert children == {m["manifest"] for m in rec["platform_manifests"].values()}
        # the node root's CRI pull of the same image labels the layers too
        node_present = set(rec["roots"]["node"]["present"]["k8s.io"])
        assert set(rec["layers"]) <= node_present


def test_discarded_root_keeps_the_snapshots(corpus: RealnodeSet) -> None:
    """Every layer's snapshot stays, keyed by the chain IDs of the config's diff IDs (read
    from the config blob that is still there), and the config labels the top one."""
    root = corpus.discarded_root
    snapshots = _discarded(corpus)["namespaces"]["k8s.io"]["snapshots"]
    committed = {s["key"]: s["parent"] for s in snapshots if s["kind"] == "Committed"}
    expected: set[str] = set()
    for rec in corpus.images():
        config = json.loads(_blob(root, rec["config_digest"]).read_bytes())
        chain = _chain_ids(config["rootfs"]["diff_ids"])
        assert len(chain) == len(rec["layers"])
        for i, chain_id in enumerate(chain):
            assert committed.get(chain_id) == (chain[i - 1] if i else ""), (rec["key"], i)
        if chain:
            label = rec["roots"][DISCARDED]["content_labels"][rec["config_digest"]]
            assert label["containerd.io/gc.ref.snapshot.overlayfs"] == chain[-1]
        expected |= set(chain)
    assert set(committed) == expected
    assert (root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots").is_dir()


def test_discarded_images_check(corpus: RealnodeSet) -> None:
    """What ``ctr images check`` says of a discarded root (recorded, pinned here): exit 0, no
    stderr; every image with layers ``incomplete (1/<config + layers>)`` and unpacked; the
    zero-layer image ``complete (1/1)`` and not unpacked. The same on every line."""
    ns = _discarded(corpus)["namespaces"]["k8s.io"]
    assert ns["check_exit"] == 0 and ns["check_stderr"] == ""
    for rec in corpus.images():
        per = rec["roots"][DISCARDED]
        names = sorted(per["names"]["k8s.io"])
        repo_digest = f"{rec['repository']}@{rec['target']['digest']}"
        assert names == sorted([rec["ref"], repo_digest, rec["cri_image_id"]])
        assert per["cri_image_id"] == rec["cri_image_id"]
        for name in names:
            assert ns["labels"][name] == CRI_LABEL
            row = per["check"]["k8s.io"][name]
            assert row["digest"] == rec["target"]["digest"]
            # SIZE: what is there (the config) / config + layers
            config_size = _blob(corpus.discarded_root, rec["config_digest"]).stat().st_size
            assert row["size"].split("/")[0] == f"{config_size}.0 B", row
            if rec["layers"]:
                assert row["status"] == f"incomplete (1/{1 + len(rec['layers'])})", row
                assert row["unpacked"] and not row["complete"]
            else:
                assert row["status"] == "complete (1/1)" and not row["unpacked"], row
    listed = {i["id"] for i in _discarded(corpus)["cri_list_images"]}
    assert listed == {rec["cri_image_id"] for rec in corpus.images()}
    text = (corpus.refs / DISCARDED / "images-check" / "k8s.io.txt").read_text()
    assert "incomplete (1/3)" in text


def test_discarded_root_ran_a_container(corpus: RealnodeSet) -> None:
    """After GC, ``ctr -n k8s.io run`` of ``index`` ran to exit 0 a command that needs the
    base layer (busybox) and the host platform's marker layer in its rootfs: the snapshots
    are enough. Its container record and active snapshot stay."""
    ran = _discarded(corpus)["container"]
    rec = corpus.image("index")
    assert ran["exit_code"] == 0 and ran["stderr"] == ""
    assert ran["image"] == rec["ref"] and ran["namespace"] == "k8s.io"
    assert ran["command"][-2:] == [f"realnode index {corpus.info['host_platform']}",
                                   "/etc/platform"]
    containers = _discarded(corpus)["containers"]
    assert containers == {ran["id"]: {
        "namespace": "k8s.io", "image": rec["ref"], "snapshotter": "overlayfs",
        "snapshot_key": ran["id"], "runtime": "io.containerd.runc.v2"}}
    config = json.loads(_blob(corpus.discarded_root, rec["config_digest"]).read_bytes())
    active = [s for s in _discarded(corpus)["namespaces"]["k8s.io"]["snapshots"]
              if s["kind"] == "Active"]
    assert active == [{"key": ran["id"], "parent": _chain_ids(config["rootfs"]["diff_ids"])[-1],
                       "kind": "Active"}]


def _content_labels(listing: Path) -> dict[str, dict[str, str]]:
    """``{digest: labels}`` from a recorded ``ctr content ls`` (tab-padded; a label value may
    hold commas, so a piece without ``=`` continues the value before it)."""
    out: dict[str, dict[str, str]] = {}
    for line in listing.read_text().splitlines()[1:]:
        cells = re.split(r"\t+", line.strip())
        labels: dict[str, str] = {}
        last = None
        for piece in cells[3].split(",") if len(cells) > 3 and cells[3] != "-" else []:
            if "=" in piece:
                last, value = piece.split("=", 1)
                labels[last] = value
            elif last is not None:
                labels[last] += "," + piece
        out[cells[0]] = labels
    return out


def test_discarded_labels_are_the_node_ones_without_layers(corpus: RealnodeSet) -> None:
    """The same CRI pulls with and without discard_unpacked_layers (on 2.x also local pull vs
    transfer service) label index, manifest and config alike, bar the manifest's layer refs."""
    node = _content_labels(corpus.refs / "node" / "content-ls" / "k8s.io.txt")
    discarded = _content_labels(corpus.refs / DISCARDED / "content-ls" / "k8s.io.txt")
    for rec in corpus.images():
        recorded = rec["roots"][DISCARDED]["content_labels"]
        for digest in rec["roots"][DISCARDED]["present"]["k8s.io"]:
            assert recorded[digest] == discarded[digest]
            expected = {k: v for k, v in node[digest].items() if not k.startswith(GC_LAYER)}
            assert discarded[digest] == expected, (rec["key"], digest)
