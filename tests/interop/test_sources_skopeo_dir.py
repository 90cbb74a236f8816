"""skopeo ``dir:`` layouts: an import source and an export format (``--format dir``).

Judged by real tools: directories written by ``skopeo copy ... dir:`` import with the target
digest and media type ``ctr images import`` records for the same image from its OCI archive,
and a containerd started on the result runs it; ctrconv's ``dir`` exports are byte-identical
to skopeo's own ``dir:`` copies of the same image and ``skopeo copy dir:...`` reads them (with
``--all`` too), and the copy loads into containerd. A directory ctrconv cannot read is refused
naming every format it reads.
"""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop


def _skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo is not installed")
    return path


def _copy(*args: str) -> None:
    result = subprocess.run([_skopeo(), "copy", "--quiet", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def _ref_name(name: str) -> str:
    return name.rsplit(":", 1)[1]


#: (input key, image name, skopeo --all): single-manifest images copy as they are; for an index
#: ``--all`` keeps it (without, skopeo keeps only the host's manifest, as ``ctr`` does not)
CASES = [
    ("bbx-oci", "docker.io/library/bbx:oci", False),
    ("bbx-zstd", "docker.io/library/bbx:zstd", False),
    ("bbx-uncompressed", "docker.io/library/bbx:uncompressed", False),
    ("bbx-multi", "docker.io/library/bbx:multi", True),
]


def _skopeo_dir(fixture_set, key: str, name: str, all_platforms: bool, dest: Path) -> Path:
    archive = fixture_set.file(fixture_set.input(key)["path"])
    _copy(*(["--all"] if all_platforms else []), f"oci-archive:{archive}:{_ref_name(name)}", f"dir:{dest}")
    assert (dest / "version").read_text() == "Directory Transport Version: 1.1\n"
    return dest


def test_skopeo_dir_imports_like_ctr_imports_the_oci_archive(fixture_set, cli, tmp_path, private_containerd):
    root = tmp_path / "root"
    for key, name, all_platforms in CASES:
        layout = _skopeo_dir(fixture_set, key, name, all_platforms, tmp_path / key)
        result = cli("import", "--root", str(root), "-i", str(layout), "--name", name, "-q")
        assert result.code == 0, (key, result.stderr)
    listed = {i["name"]: i for i in cli("ls", "--root", str(root), "--json").json["images"]}
    for key, name, _ in CASES:
        want = fixture_set.image("default", name)["target"]
        assert (listed[name]["digest"], listed[name]["media_type"]) == (want["digest"], want["mediaType"]), key
        assert listed[name]["complete"], listed[name]
    daemon = private_containerd(root=root)
    rows = {row.ref: row for row in daemon.images_check("default")}
    for _, name, _ in CASES:
        assert rows[name].complete and rows[name].unpacked, rows[name]
    run = daemon.ctr("run", "--rm", "docker.io/library/bbx:zstd", "skopeo-dir", "/bin/busybox", "cat",
                     "/data/modify.txt", check=False)
    assert run.returncode == 0, run.stderr


def test_a_skopeo_dir_needs_a_name(fixture_set, cli, tmp_path):
    layout = _skopeo_dir(fixture_set, "bbx-oci", "docker.io/library/bbx:oci", False, tmp_path / "d")
    result = cli("import", "--root", str(tmp_path / "root"), "-i", str(layout), "-q")
    assert result.code == 2 and "--name" in result.stderr


@pytest.mark.parametrize("key,name,all_platforms", CASES)
def test_dir_export_equals_skopeos_own_dir_copy(fixture_set, cli, tmp_path, key, name, all_platforms):
    ours = tmp_path / "ours"
    args = ["--all-platforms"] if all_platforms else []
    result = cli("export", "--root", str(fixture_set.root), "--image", name, "-o", str(ours), "--format", "dir",
                 "-q", *args)
    assert result.code == 0, result.stderr
    theirs = _skopeo_dir(fixture_set, key, name, all_platforms, tmp_path / "theirs")
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(ours, theirs, [p.name for p in theirs.iterdir()], shallow=False)
    assert mismatch == [] and errors == []


def test_skopeo_reads_dir_exports_and_containerd_loads_the_copy(fixture_set, cli, tmp_path, private_containerd):
    daemon = private_containerd()
    for key, name, all_platforms in [*CASES, ("bbx-docker", "docker.io/library/bbx:docker", False)]:
        out = tmp_path / key
        args = ["--all-platforms"] if all_platforms else []
        result = cli("export", "--root", str(fixture_set.root), "--image", name, "-o", str(out), "--format", "dir",
                     "-q", *args)
        assert result.code == 0, result.stderr
        archive = tmp_path / f"{key}.tar"
        preserve = [] if key == "bbx-docker" else ["--preserve-digests"]
        _copy(*(["--all"] if all_platforms else []), *preserve, f"dir:{out}", f"oci-archive:{archive}:{name}")
        daemon.ctr("images", "import", *(["--all-platforms"] if all_platforms else []), str(archive), timeout=120)
        rows = {row.ref: row for row in daemon.images_check("default")}
        assert rows[name].complete, (key, rows[name])
        if preserve:  # skopeo's oci transport converts a docker manifest; OCI ones keep their digest
            assert rows[name].digest == fixture_set.image("default", name)["target"]["digest"], key
    run = daemon.ctr("run", "--rm", "docker.io/library/bbx:docker", "dir-docker", "/bin/busybox", "true", check=False)
    assert run.returncode == 0, run.stderr


def test_dir_export_round_trips_through_import(fixture_set, cli, tmp_path):
    name = "docker.io/library/bbx:multi"
    out = tmp_path / "multi"
    assert cli("export", "--root", str(fixture_set.root), "--image", name, "-o", str(out), "--format", "dir",
               "--all-platforms", "-q").code == 0
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-i", str(out), "--name", name, "--no-unpack", "-q")
    assert result.code == 0, result.stderr
    listed = cli("ls", "--root", str(root), "--json").json["images"]
    assert [(i["name"], i["digest"]) for i in listed] == [(name, fixture_set.image("default", name)["target"]["digest"])]


def test_dir_holds_one_image(fixture_set, cli, tmp_path):
    out = tmp_path / "two"
    result = cli("export", "--root", str(fixture_set.root), "--image", "docker.io/library/bbx:oci",
                 "--image", "docker.io/library/bbx:zstd", "-o", str(out), "--format", "dir")
    assert result.code == 2 and "one image" in result.stderr and not out.exists()
    # two names of one image are one image
    result = cli("export", "--root", str(fixture_set.root), "--image", "docker.io/library/bbx:oci",
                 "--image", "docker.io/library/bbx:alias", "-o", str(out), "--format", "dir", "-q")
    assert result.code == 0, result.stderr
    assert json.loads((out / "manifest.json").read_bytes())["schemaVersion"] == 2


def test_unknown_directory_names_the_formats_ctrconv_reads(cli, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "readme.txt").write_text("not an image")
    result = cli("import", "--root", str(tmp_path / "root"), "-i", str(empty))
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fmt in ("OCI image layout", "OCI layout tar", "docker-archive", "skopeo dir:", "docker://"):
        assert fmt in result.stderr, fmt
    from ctrconv.errors import UsageError
    from ctrconv.sources import open_source

    with pytest.raises(UsageError) as info:
        open_source(empty)
    assert "skopeo dir:" in str(info.value) + str(getattr(info.value, "hint", ""))


def test_discarded_layers_image_exports_as_a_dir_skopeo_reads(realnode_set_for, cli, tmp_path):
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for("1.6")
    image = corpus.image("oci")
    out = tmp_path / "oci"
    result = cli("export", "--root", str(corpus.root(DISCARDED)), "-n", "k8s.io", "--image", image["ref"], "-o",
                 str(out), "--format", "dir", "--json")
    assert result.code == 0, result.stderr
    assert result.json["images"][0]["regenerated_layers"] == len(image["layers"])
    _copy(f"dir:{out}", f"oci:{tmp_path / 'layout'}:x")
    index = json.loads((tmp_path / "layout" / "index.json").read_bytes())
    assert index["manifests"][0]["digest"] == result.json["images"][0]["manifest"]
