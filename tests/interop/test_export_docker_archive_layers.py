"""docker-archive exports hold no zstd layer: every ``docker load`` reads them.

A zstd layer of every manifest the archive holds (the host's; every present platform's with
``--all-platforms``) is written as its plain tar (decompressed while it streams,
or the namespace's own blob of that tar when it has one), so each layer file hashes to the
config's diff ID and the config, hence the image ID, is unchanged; ``index.json`` names a
manifest listing those plain layers. Judged by Docker 20.10 (Debian's ``docker.io``, which
loads by ``manifest.json``) and by containerd (``ctr images import`` reads ``index.json``).
Layers regenerated from snapshots for a docker archive are never zstd either.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest


pytestmark = pytest.mark.interop

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
IMAGE = "docker.io/library/bbx:zstd"



def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _check_archive(archive: Path, config_digest: str) -> dict[str, Any]:
    """No zstd layer; layer files hash to the diff IDs; index.json's manifest lists them."""
    files = _members(archive)
    manifest_json = json.loads(files["manifest.json"])
    assert len(manifest_json) == 1
    entry = manifest_json[0]
    assert entry["Config"] == "blobs/sha256/" + config_digest.split(":")[1]
    config = json.loads(files[entry["Config"]])
    diff_ids = config["rootfs"]["diff_ids"]
    assert len(entry["Layers"]) == len(diff_ids) >= 1
    for path, diff_id in zip(entry["Layers"], diff_ids):
        data = files[path]
        assert not data.startswith(ZSTD_MAGIC), path
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
    index = json.loads(files["index.json"])
    manifest = json.loads(files["blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]])
    if "manifests" in manifest:  # a multi-platform image keeps its index (as docker save does)
        present = [json.loads(files["blobs/sha256/" + m["digest"].split(":")[1]]) for m in manifest["manifests"]
                   if "blobs/sha256/" + m["digest"].split(":")[1] in files]
        manifest, = [m for m in present if m["config"]["digest"] == config_digest]
    assert manifest["config"]["digest"] == config_digest
    assert [layer["digest"] for layer in manifest["layers"]] == diff_ids
    assert all(not layer["mediaType"].endswith("zstd") for layer in manifest["layers"])
    assert manifest["annotations"]["io.ctrconv.original-manifest"].startswith("sha256:")
    return manifest


def _zstd_only_root(fixture_set: Any, cli, tmp_path: Path) -> Path:
    """A root holding the zstd image only (no plain-tar blob of its layers to reuse)."""
    root = tmp_path / "zroot"
    result = cli("import", "--root", str(root), "-i", str(fixture_set.file(fixture_set.input("bbx-zstd")["path"])),
                 "--no-unpack", "-q")
    assert result.code == 0, result.stderr
    return root


def test_zstd_layers_are_plain_tars_in_a_docker_archive(fixture_set, cli, tmp_path, dockerd, private_containerd):
    image = fixture_set.image("default", IMAGE)
    config = image["manifests"][0]["config"]["digest"]
    assert all(layer["mediaType"].endswith("+zstd") for layer in image["manifests"][0]["layers"])
    archives = []
    for label, root in (("decompressed", _zstd_only_root(fixture_set, cli, tmp_path)),
                        ("namespace's plain blobs", fixture_set.root)):
        out = tmp_path / f"{len(archives)}.tar"
        result = cli("export", "--root", str(root), "--image", IMAGE, "-o", str(out), "--format", "docker-archive",
                     "--json")
        assert result.code == 0, (label, result.stderr)
        assert "3 zstd layer(s) decompressed; image ID unchanged" in result.stderr, result.stderr
        report = result.json["images"][0]
        assert report["image_id"] == report["original_image_id"] == config and report["decompressed_layers"] == 3
        _check_archive(out, config)
        archives.append(out)
    assert archives[0].read_bytes() == archives[1].read_bytes()  # same plain tars either way

    loaded = dockerd.docker("load", "-i", str(archives[0])).stdout
    assert "Loaded image: bbx:zstd" in loaded, loaded
    inspected = json.loads(dockerd.docker("image", "inspect", "bbx:zstd").stdout)[0]
    assert inspected["Id"] == config
    out = dockerd.docker("run", "--rm", "--network", "none", "bbx:zstd", "/bin/busybox", "cat", "/data/modify.txt").stdout
    from support.interop_checks import expected_file

    assert hashlib.sha256(out.encode()).hexdigest() == expected_file(fixture_set, IMAGE, "/data/modify.txt")

    daemon = private_containerd()
    daemon.ctr("images", "import", str(archives[0]), timeout=120)
    rows = {row.ref: row for row in daemon.images_check("default")}
    assert rows[IMAGE].complete and rows[IMAGE].unpacked, rows


def test_all_platforms_zstd_archive_holds_no_zstd_layer_for_any_platform(fixture_set, cli, tmp_path, dockerd,
                                                                          private_containerd):
    """``--all-platforms`` of a three-platform image whose every layer is zstd: each platform's
    manifest in the kept index lists plain tars hashing to its config's diff IDs, every config
    (each platform's image ID) is the stored one, and no file of the archive is zstd. skopeo's
    ``docker-archive:`` copies it, Docker 20.10 loads it under the host config and runs it,
    containerd imports every platform's plain layers and finds the image complete."""
    import subprocess

    from support import zstd_multi

    made = zstd_multi.build(fixture_set, tmp_path)
    host_config = made.configs[fixture_set.info["host_platform"]]
    out = tmp_path / "zmulti.tar"
    result = cli("export", "--root", str(made.root), "--image", zstd_multi.NAME, "--all-platforms", "-o", str(out),
                 "--format", "docker-archive", "--json")
    assert result.code == 0, result.stderr
    report, = result.json["images"]
    assert report["decompressed_layers"] == 6 and report["image_id"] == report["original_image_id"] == host_config
    assert result.json["image_ids_changed"] == [] and len(result.json["rewritten"]) == 3
    held = zstd_multi.check_archive(out, made.configs)
    assert sorted(held) == sorted(made.configs)

    copied = tmp_path / "skopeo"
    r = subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", f"docker-archive:{out}", f"oci:{copied}:x"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    top = json.loads((copied / "index.json").read_text())["manifests"][0]
    config = json.loads((copied / "blobs/sha256" / top["digest"][7:]).read_text())["config"]["digest"]
    diff_ids = [layer["digest"] for layer in held[fixture_set.info["host_platform"]]["layers"]]
    assert json.loads((copied / "blobs/sha256" / config[7:]).read_text())["rootfs"]["diff_ids"] == diff_ids

    loaded = dockerd.docker("load", "-i", str(out)).stdout
    assert "Loaded image: bbx:zmulti" in loaded, loaded
    assert json.loads(dockerd.docker("image", "inspect", "bbx:zmulti").stdout)[0]["Id"] == host_config
    dockerd.docker("run", "--rm", "--network", "none", "bbx:zmulti", "/bin/busybox", "true")

    daemon = private_containerd()
    daemon.ctr("images", "import", "--all-platforms", str(out), timeout=120)
    rows = {row.ref: row for row in daemon.images_check("default")}
    assert rows[zstd_multi.NAME].complete, rows
    stored = daemon.ctr("content", "ls", "-q").stdout.split()
    assert {d for m in held.values() for d in (layer["digest"] for layer in m["layers"])} <= set(stored)


def test_oci_formats_keep_zstd_layers(fixture_set, cli, tmp_path):
    """Only docker archives change layers: an OCI tar of the same image keeps its zstd blobs."""
    out = tmp_path / "oci.tar"
    result = cli("export", "--root", str(fixture_set.root), "--image", IMAGE, "-o", str(out), "-q")
    assert result.code == 0, result.stderr
    files = _members(out)
    for layer in fixture_set.image("default", IMAGE)["manifests"][0]["layers"]:
        assert files["blobs/sha256/" + layer["digest"].split(":")[1]].startswith(ZSTD_MAGIC)


def test_zstd_compression_is_refused_for_a_docker_archive(fixture_set, cli, tmp_path):
    out = tmp_path / "x.tar"
    result = cli("export", "--root", str(fixture_set.root), "--image", IMAGE, "-o", str(out),
                 "--format", "docker-archive", "--compression", "zstd")
    assert result.code == 2 and "zstd" in result.stderr and not out.exists()


@pytest.mark.parametrize("line", ["1.6"])
def test_discarded_layers_export_as_a_docker_archive_docker_loads(line, realnode_set_for, cli, tmp_path, dockerd):
    """Regenerated layers in a docker archive: docker load takes the new config as image ID
    (the one the export reports) and runs the image."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for(line)
    image = corpus.image("index")
    out = tmp_path / "index.tar"
    result = cli("export", "--root", str(corpus.root(DISCARDED)), "-n", "k8s.io", "--image", image["ref"],
                 "-o", str(out), "--format", "docker-archive", "--compression", "none", "--json")
    assert result.code == 0, result.stderr
    report = result.json["images"][0]
    assert report["regenerated_layers"] == len(image["layers"])
    manifest = _check_archive(out, report["image_id"])
    assert manifest["annotations"]["io.ctrconv.original-manifest"] == image["manifest_digest"]
    tag = json.loads(_members(out)["manifest.json"])[0]["RepoTags"][0]
    loaded = dockerd.docker("load", "-i", str(out)).stdout
    assert f"Loaded image: {tag}" in loaded, loaded
    assert json.loads(dockerd.docker("image", "inspect", tag).stdout)[0]["Id"] == report["image_id"]
    run = dockerd.docker("run", "--rm", "--network", "none", tag, "/bin/busybox", "cat", "/etc/platform")
    assert "realnode index" in run.stdout


def test_a_rewritten_manifest_keeps_where_the_image_came_from(fixture_set, cli, tmp_path):
    """The distribution-source labels of the image (a CRI-mode import writes them, as a pull
    does) go into the docker archive's index.json also when its zstd layers were inflated and
    the manifest rewritten; they were dropped there and kept for a gzip image (a red-team run)."""
    root = tmp_path / "k8s"
    done = cli("import", "--root", str(root), "-n", "k8s.io", "-q", "--no-unpack",
               "-i", str(fixture_set.file(fixture_set.input("bbx-zstd")["path"])))
    assert done.code == 0, done.stderr
    out = tmp_path / "zstd.tar"
    result = cli("export", "--root", str(root), "-n", "k8s.io", "--image", IMAGE, "-o", str(out),
                 "--format", "docker-archive", "-q")
    assert result.code == 0, result.stderr
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    [entry] = [e for e in index["manifests"] if e.get("annotations", {}).get("io.containerd.image.name") == IMAGE]
    sources = {k: v for k, v in entry["annotations"].items() if k.startswith("containerd.io/distribution.source.")}
    assert sources == {"containerd.io/distribution.source.docker.io": "library/bbx"}, entry
