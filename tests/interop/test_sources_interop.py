"""Image sources against what a real containerd (1.6) did with the same inputs.

* every fixture input (OCI tars, the OCI layout dir, the skopeo docker-archive) yields the names
  and target digests containerd stored when it imported it, and all of its blobs verify;
* the docker-archive manifest ctrconv synthesises has the digest ctr computed (fixture root);
* freshly built docker archives (raw, gzip and zstd layers, symlinked layers, several tags, an
  untagged image) and OCI tars with bare ref names are imported by a private ``ctr`` and compared
  name by name, byte for byte, through :class:`ContainerdRootSource`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zstandard

from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, NotFoundError
from ctrconv.oci import mediatypes as mt
from ctrconv.image.plan import plan_image
from ctrconv.sources import ContainerdRootSource, DockerArchiveSource, RootEntry, open_source
from ctrconv.streams import VerifyingReader
from support.daemon import parse_table
from support.fixture_set import FixtureSet
from support.archives import LAYOUT, layer_tar, make_tar, sha

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.interop

FILE_INPUTS = ["bbx-docker", "bbx-oci", "bbx-zstd", "bbx-uncompressed", "bbx-multi", "bbx-sparse",
               "oci-layout"]


def verify_all(source: Any, blobs: list[dict[str, Any]]) -> None:
    for desc in blobs:
        d = Digest.parse(desc["digest"])
        with source.open(d) as stream:
            VerifyingReader(stream, d, desc["size"]).verify_to_end()


@pytest.mark.parametrize("key", FILE_INPUTS)
def test_fixture_inputs_match_containerd(fixture_set: FixtureSet, key: str) -> None:
    record = fixture_set.input(key)
    with open_source(fixture_set.file(record["path"])) as src:
        entries = src.entries()
        assert sorted(e.name for e in entries) == sorted(record["names"])
        for entry in entries:
            stored = fixture_set.image("default", entry.name)["target"]
            assert {k: entry.descriptor[k] for k in ("mediaType", "digest", "size")} == stored
            plan = plan_image(src, entry.descriptor)
            assert plan.missing == []
            verify_all(src, plan.blobs)


def test_ctr_export_tars_open_as_oci(fixture_set: FixtureSet) -> None:
    """``ctr images export`` output (OCI layout + manifest.json) reads back with its names."""
    for ns in ("default", "k8s.io"):
        for image in fixture_set.images(ns):
            with open_source(fixture_set.file(image["export"])) as src:
                [entry] = src.entries()
                assert entry.name == image["name"]
                assert entry.descriptor["digest"] == image["target"]["digest"]


def test_docker_archive_manifest_digest_equals_ctr(fixture_set: FixtureSet) -> None:
    with open_source(fixture_set.file(fixture_set.input("bbx-docker")["path"])) as src:
        assert isinstance(src, DockerArchiveSource)
        [manifest] = src.manifests
        for ns in ("default", "k8s.io"):
            target = fixture_set.image(ns, "docker.io/library/bbx:docker")["target"]
            assert manifest["digest"] == target["digest"]
            assert manifest["size"] == target["size"]
        stored = fixture_set.root / "io.containerd.content.v1.content/blobs/sha256" / manifest["digest"][7:]
        assert src.read_small(manifest["digest"], manifest["size"]) == stored.read_bytes()


def test_containerd_root_source(fixture_set: FixtureSet) -> None:
    for ns in ("default", "k8s.io"):
        with ContainerdRootSource(fixture_set.root, ns) as src:
            entries = src.entries()
            assert all(isinstance(e, RootEntry) for e in entries)
            assert {e.name: e.descriptor for e in entries} == {
                i["name"]: i["target"] for i in fixture_set.images(ns)}
            oci = next(e for e in entries if e.name == "docker.io/library/bbx:oci")
            plan = plan_image(src, oci.descriptor)
            assert plan.missing == []
            verify_all(src, plan.blobs)
    with ContainerdRootSource(fixture_set.root, "default", namespace_content_only=True) as src:
        sparse = fixture_set.image("default", "docker.io/library/bbx:sparse")
        assert src.exists(sparse["target"]["digest"])
        missing = [b["digest"] for b in sparse["blobs"] if not b["present"]]
        assert missing and not any(src.exists(d) for d in missing)
    with pytest.raises(NotFoundError, match="namespace"):
        ContainerdRootSource(fixture_set.root, "nope")


def test_containerd_root_source_answers_what_export_asks(fixture_set: FixtureSet) -> None:
    """Images by name (the resolve protocol), the writing line, the target's labels: from the
    records read at open; labels need the meta.db held open (``keep_open``), closed with the source."""
    name = "docker.io/library/bbx:oci"
    with ContainerdRootSource(fixture_set.root, "default") as src:
        assert src.image("default", name).target.descriptor() == fixture_set.image("default", name)["target"]
        assert src.image("k8s.io", name) is None and src.images("k8s.io") == []
        assert [r.name for r in src.images("default")] == sorted(i["name"] for i in fixture_set.images("default"))
        assert src.writer_line == "1.6"  # the fixture set is written by containerd 1.6
        with pytest.raises(CtrconvError, match="not held open"):
            src.blob_labels(fixture_set.image("default", name)["target"]["digest"])
    with ContainerdRootSource(fixture_set.root, "default", keep_open=True) as src:
        assert isinstance(src.blob_labels(fixture_set.image("default", name)["target"]["digest"]), dict)
        assert src.blob_labels("sha256:" + "0" * 64) == {}
    with pytest.raises(CtrconvError, match="not held open"):
        src.meta  # closed with the source


# -- fresh archives imported by a private ctr ---------------------------------------------


def _config(arch: str, marker: str) -> bytes:
    return json.dumps({"architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
                       "config": {"Env": [f"M={marker}"]},
                       "rootfs": {"type": "layers", "diff_ids": []}}).encode()


def build_docker_archive(path: Path) -> Path:
    raw = layer_tar(b"raw\n")
    gz = gzip.compress(layer_tar(b"gz\n"), mtime=0)
    zst = zstandard.ZstdCompressor().compress(layer_tar(b"zstd\n"))
    manifest = [
        {"Config": "c1.json", "RepoTags": ["one:latest", "example.com/team/one:v1", "two"],
         "Layers": ["a/layer.tar", "b/layer.tar", "c/layer.tar", "d/layer.tar"]},
        {"Config": "c2.json", "RepoTags": ["arm-image:7"], "Layers": ["b/layer.tar"]},
        {"Config": "c3.json", "RepoTags": [], "Layers": ["a/layer.tar"]},
    ]
    return make_tar(path, [
        ("c1.json", _config("amd64", "1")),
        ("c2.json", _config("arm", "2")),
        ("c3.json", _config("amd64", "3")),
        ("a/layer.tar", raw),
        ("b/layer.tar", gz),
        ("c/layer.tar", zst),
        ("d/layer.tar", "symlink", "../a/layer.tar"),
        ("manifest.json", json.dumps(manifest).encode()),
    ])


def build_oci_tar(path: Path) -> Path:
    config = _config("amd64", "oci")
    layer = gzip.compress(layer_tar(b"oci\n"), mtime=0)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": sha(layer), "size": len(layer)}],
    }).encode()
    desc = {"mediaType": mt.OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest)}
    refs = ["bare", "example.com/base/img:full", "other.io/x:y"]
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {**desc, "annotations": {"org.opencontainers.image.ref.name": r}} for r in refs]}).encode()
    blobs = [config, layer, manifest]
    return make_tar(path, [("oci-layout", LAYOUT), ("index.json", index)] + [
        (f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b) for b in blobs])


def ctr_import(private_containerd: Any, root: Path, archive: Path, *args: str) -> dict[str, dict[str, Any]]:
    """Import ``archive`` with a private ctr into ``root``; return name -> target descriptor."""
    daemon = private_containerd(root=root)
    daemon.ctr("images", "import", "--no-unpack", "--all-platforms", *args, str(archive))
    daemon.stop()
    with ContainerdRootSource(root, "default") as src:
        return {e.name: e.descriptor for e in src.entries()}


def test_docker_archive_names_and_digests_equal_ctr(private_containerd: Any, tmp_path: Path) -> None:
    archive = build_docker_archive(tmp_path / "docker.tar")
    stored = ctr_import(private_containerd, tmp_path / "root", archive, "--index-name", "idx:1")
    with open_source(archive) as src:
        assert stored.pop("idx:1") == src.index_descriptor  # the synthesised index, byte-exact
        ours = {e.name: {k: e.descriptor[k] for k in ("mediaType", "digest", "size")}
                for e in src.entries() if e.name}
        assert ours == stored
        assert [e.name for e in src.entries()].count(None) == 1  # the untagged image
        content = tmp_path / "root/io.containerd.content.v1.content/blobs/sha256"
        for manifest in src.manifests[:2]:  # the untagged one is collected by ctr's GC
            data = src.read_small(manifest["digest"], manifest["size"])
            assert data == (content / manifest["digest"][7:]).read_bytes()
        layers = json.loads(src.read_small(src.manifests[0]["digest"], src.manifests[0]["size"]))["layers"]
        assert [layer["mediaType"] for layer in layers] == [
            mt.DOCKER_LAYER, mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER]
        assert src.manifests[1]["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}


@pytest.mark.parametrize("base_name", [None, "example.com/base/img"])
def test_oci_tar_names_equal_ctr(private_containerd: Any, tmp_path: Path, base_name: str | None) -> None:
    archive = build_oci_tar(tmp_path / "oci.tar")
    args = ("--base-name", base_name) if base_name else ()
    stored = ctr_import(private_containerd, tmp_path / "root", archive, *args)
    with open_source(archive, base_name=base_name) as src:
        ours = {e.name: {k: e.descriptor[k] for k in ("mediaType", "digest", "size")}
                for e in src.entries() if e.name}
    assert ours == stored


def test_docker_archive_reimport_into_labelled_namespace(
    private_containerd: Any, tmp_root_copy: Path, fixture_set: FixtureSet
) -> None:
    """Re-importing into a namespace whose layer blobs are these very tars (containerd's
    unpacker labels each one ``containerd.io/uncompressed`` with its own digest) yields the
    sniffed manifest: the blob it finds is the tar itself, plain."""
    archive = fixture_set.file(fixture_set.input("bbx-docker")["path"])
    stored = ctr_import(private_containerd, tmp_root_copy, archive)["docker.io/library/bbx:docker"]
    with open_source(archive) as src:
        [entry] = src.entries()
        assert {k: entry.descriptor[k] for k in ("mediaType", "digest", "size")} == stored


@pytest.mark.parametrize("namespace", ["default", "k8s.io"])
def test_docker_archive_onto_the_images_gzip_layers_names_them_as_ctr_does(
    private_containerd: Any, tmp_path: Path, fixture_set: FixtureSet, namespace: str
) -> None:
    """A node that holds an image's gzip layers (an OCI import, unpacked: each labelled
    ``containerd.io/uncompressed``) and then imports its ``docker save`` tar: containerd's
    ``resolveLayers`` puts the stored gzip blobs in the manifest, so ``ctr images import``
    records another manifest digest than on an empty root, and no plain copy of the layers.
    ``ctrconv import`` recorded the plain tars (found by a red-team run on 1.6 and 2.x)."""
    base = tmp_path / "base"
    daemon = private_containerd(root=base)
    daemon.ctr("images", "import", fixture_set.file(fixture_set.input("bbx-oci")["path"]), namespace=namespace)
    daemon.stop()
    docker = fixture_set.file(fixture_set.input("bbx-docker")["path"])
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root in (ours, theirs):
        subprocess.run(["cp", "-a", str(base), str(root)], check=True)
    result = subprocess.run([sys.executable, "-m", "ctrconv", "import", "--root", str(ours), "-n", namespace, "-q",
                             "--no-cri-names", "-i", str(docker)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    daemon = private_containerd(root=theirs)
    daemon.ctr("images", "import", str(docker), namespace=namespace)
    daemon.stop()
    targets = []
    for root in (ours, theirs):
        with ContainerdRootSource(root, namespace) as src:
            targets.append({e.name: e.descriptor["digest"] for e in src.entries()}["docker.io/library/bbx:docker"])
    assert targets[0] == targets[1]
    with open_source(docker) as plain:  # the manifest an empty root gets: not this one
        assert plain.manifests[0]["digest"] != targets[0]
    daemon = private_containerd(root=ours)
    rows = {r["REF"]: r for r in parse_table(daemon.ctr("images", "check", namespace=namespace).stdout)}
    assert rows["docker.io/library/bbx:docker"]["STATUS"].startswith("complete")
    assert rows["docker.io/library/bbx:docker"]["UNPACKED"] == "true"
