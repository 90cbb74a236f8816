"""``ctrconv convert``: every file format to every file format, judged by real consumers.

Inputs are written by other tools: an OCI archive and an OCI layout directory from the fixture
set (``ctr``/skopeo), skopeo's classic ``docker-archive:`` (no index.json) and a skopeo ``dir:``
layout. Each is converted to oci-dir, oci-tar, docker-archive and dir, and every output is read
by a real consumer that hashes every blob it reads: ``skopeo copy`` (all four formats),
``umoci unpack`` (OCI layouts of OCI manifests), ``ctr images import`` + ``ctr images check``
(the tars, and every oci-dir packed into one) and ``docker load`` + ``docker run`` (docker
archives). The image ID (config digest) and the layer diff IDs survive every conversion.
Errors leave nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from support.interop_checks import expected_file
from support.json_schemas import check

pytestmark = pytest.mark.interop

OCI_IMAGE = "docker.io/library/bbx:oci"  # OCI manifest, 3 gzip layers
DOCKER_IMAGE = "docker.io/library/bbx:docker"  # docker schema2 manifest (skopeo's docker-archive)
FORMATS = ("oci-dir", "oci-tar", "docker-archive", "dir")
#: what each output is called (a tar format by its name, a directory without a suffix)
SUFFIX = {"oci-dir": "", "oci-tar": ".tar", "docker-archive": ".tar", "dir": ""}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300)


def _skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo is not installed")
    return path


@pytest.fixture(scope="module")
def inputs(fixture_set: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str], str]]:
    """Input format -> (path, extra convert arguments, the image it holds)."""
    skopeo = _skopeo()
    base = tmp_path_factory.mktemp("convert-inputs")
    oci_tar = fixture_set.file(fixture_set.input("bbx-oci")["path"])
    skopeo_dir = base / "skopeo-dir"
    r = _run(skopeo, "--insecure-policy", "copy", "-q", f"oci-archive:{oci_tar}:oci", f"dir:{skopeo_dir}")
    assert r.returncode == 0, r.stderr
    return {
        "oci-tar": (oci_tar, ["--image", OCI_IMAGE], OCI_IMAGE),
        "oci-dir": (fixture_set.file(fixture_set.input("oci-layout")["path"]), ["--image", "bbx:oci"], OCI_IMAGE),
        "docker-archive": (fixture_set.file(fixture_set.input("bbx-docker")["path"]), [], DOCKER_IMAGE),
        "dir": (skopeo_dir, ["--name", OCI_IMAGE], OCI_IMAGE),
    }


def _image(fixture_set: Any, name: str) -> dict[str, Any]:
    return fixture_set.image("default", name)


def _convert(cli: Any, inputs: dict[str, tuple[Path, list[str], str]], src: str, fmt: str,
             tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path, extra, _ = inputs[src]
    out = tmp_path / f"{src}-to-{fmt}{SUFFIX[fmt]}"
    result = cli("convert", "-i", str(path), "-o", str(out), "--format", fmt, "--json", *extra)
    assert result.code == 0, (src, fmt, result.stderr)
    check("convert", result.json)  # schemas/cli/convert.json, every field described
    return out, result.json


def _transport(fmt: str, out: Path, tag: str) -> str:
    return {"oci-dir": f"oci:{out}:{tag}", "oci-tar": f"oci-archive:{out}:{tag}",
            "docker-archive": f"docker-archive:{out}", "dir": f"dir:{out}"}[fmt]


def _config_and_diff_ids(skopeo: str, transport: str) -> tuple[str, list[str]]:
    raw = _run(skopeo, "inspect", "--raw", transport)
    assert raw.returncode == 0, (transport, raw.stderr)
    config = _run(skopeo, "inspect", "--config", "--raw", transport)
    assert config.returncode == 0, (transport, config.stderr)
    return json.loads(raw.stdout)["config"]["digest"], json.loads(config.stdout)["rootfs"]["diff_ids"]


def _check_layout_hashes(out: Path, fmt: str, name: str) -> None:
    """Every blob of an OCI layout hashes to its name, and index.json names ``name``."""
    files: dict[str, bytes] = {}
    if fmt == "oci-tar":
        with tarfile.open(out) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    else:
        files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    blobs = [k for k in files if k.startswith("blobs/sha256/")]
    assert len(blobs) >= 5
    for key in blobs:
        assert hashlib.sha256(files[key]).hexdigest() == key.rsplit("/", 1)[1], key
    index = json.loads(files["index.json"])
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == [name]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("src", FORMATS)
def test_every_pair_is_read_by_skopeo_with_the_same_image(src, fmt, inputs, fixture_set, cli, tmp_path):
    """skopeo reads the output, copies every blob out of it (digests checked as it reads), and
    sees the source's config digest (the image ID) and diff IDs."""
    skopeo = _skopeo()
    name = inputs[src][2]
    want = _image(fixture_set, name)["manifests"][0]
    out, report = _convert(cli, inputs, src, fmt, tmp_path)
    assert [i["name"] for i in report["images"]] == [name]
    assert report["images"][0]["image_id"] == want["config"]["digest"]
    assert report["input"] == str(inputs[src][0]) and report["format"] == fmt and report["blobs"] >= 5
    transport = _transport(fmt, out, name.rsplit(":", 1)[1])
    docker_typed_oci = name == DOCKER_IMAGE and fmt in ("oci-dir", "oci-tar")
    if docker_typed_oci:  # containers/image only selects OCI-typed entries of an OCI layout: ctr reads them below
        _check_layout_hashes(out, fmt, name)
        return
    config, diff_ids = _config_and_diff_ids(skopeo, transport)
    assert (config, diff_ids) == (want["config"]["digest"], want["diff_ids"])
    copy = tmp_path / "copy"
    r = _run(skopeo, "--insecure-policy", "copy", "-q", transport, f"oci:{copy}:x")
    assert r.returncode == 0, (src, fmt, r.stderr)
    if fmt == "oci-dir" and shutil.which("umoci"):
        r = _run("umoci", "unpack", "--image", transport[len("oci:"):], str(tmp_path / "bundle"))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "bundle" / "rootfs" / "data" / "modify.txt").is_file()


@pytest.mark.parametrize("fmt", ["oci-tar", "docker-archive", "oci-dir"])
def test_ctr_imports_every_layout_output_complete(fmt, inputs, cli, tmp_path, private_containerd):
    """``ctr images import`` takes every input's conversion (the docker-typed OCI layouts skopeo
    leaves out included; an oci-dir packed into a tar as it stands) and ``ctr images check``
    calls each image complete."""
    daemon = private_containerd()
    for n, src in enumerate(FORMATS):
        out, _ = _convert(cli, inputs, src, fmt, tmp_path)
        if fmt == "oci-dir":
            packed = tmp_path / f"{out.name}.tar"
            with tarfile.open(packed, "w") as tar:
                for path in sorted(out.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(out)), recursive=False)
            out = packed
        ns = f"n{n}"
        daemon.ctr("images", "import", str(out), namespace=ns, timeout=300)
        rows = daemon.images_check(ns)
        assert [row.ref for row in rows] == [inputs[src][2]], (src, rows)
        assert rows[0].complete, (src, fmt, rows)


def test_docker_loads_and_runs_every_conversion_to_a_docker_archive(inputs, fixture_set, cli, tmp_path, dockerd):
    """Each input's docker-archive conversion loads with the config digest as image ID and runs
    with the layer content containerd unpacked from the original."""
    want_file = expected_file(fixture_set, OCI_IMAGE, "/data/modify.txt")
    for src in FORMATS:
        ids = dockerd.docker("images", "-aq").stdout.split()
        if ids:
            dockerd.docker("rmi", "-f", *sorted(set(ids)))
        name = inputs[src][2]
        out, report = _convert(cli, inputs, src, "docker-archive", tmp_path)
        tag = name.removeprefix("docker.io/library/")
        assert f"Loaded image: {tag}" in dockerd.docker("load", "-i", str(out)).stdout, src
        inspected = json.loads(dockerd.docker("image", "inspect", tag).stdout)[0]
        assert inspected["Id"] == report["images"][0]["image_id"], src
        ran = dockerd.docker("run", "--rm", "--network", "none", tag, "/bin/busybox", "cat", "/data/modify.txt").stdout
        assert hashlib.sha256(ran.encode()).hexdigest() == want_file, src


def test_all_platforms_of_an_index_and_host_only_by_default(fixture_set, cli, tmp_path):
    """An index converts with every platform (--all-platforms) or the host's only, like export."""
    multi = fixture_set.file(fixture_set.input("bbx-multi")["path"])
    every = _image(fixture_set, "docker.io/library/bbx:multi")["platforms"]
    assert len(every) >= 2
    res = cli("convert", "-i", str(multi), "-o", str(tmp_path / "all"), "--all-platforms", "--json")
    assert res.code == 0, res.stderr
    assert sorted(res.json["platforms"]) == sorted(every) and res.json["skipped_platforms"] == []
    res = cli("convert", "-i", str(multi), "-o", str(tmp_path / "host"), "--json")
    assert res.code == 0, res.stderr
    assert len(res.json["platforms"]) == 1 and len(res.json["skipped_platforms"]) == len(every) - 1
    with tarfile.open(multi) as tar:
        stored = {Path(m.name).name for m in tar.getmembers() if m.name.startswith("blobs/")}
    written = {p.name for p in (tmp_path / "host" / "blobs" / "sha256").iterdir()}
    assert written < stored  # the other platforms' manifests, configs and layers are left out


def test_zstd_layers_become_plain_tars_in_a_docker_archive(fixture_set, cli, tmp_path):
    """docker load before 25 reads no zstd: the layers are decompressed, the image ID kept."""
    zstd = fixture_set.file(fixture_set.input("bbx-zstd")["path"])
    want = _image(fixture_set, "docker.io/library/bbx:zstd")["manifests"][0]
    out = tmp_path / "d.tar"
    res = cli("convert", "-i", str(zstd), "-o", str(out), "-f", "docker-archive", "--json")
    assert res.code == 0, res.stderr
    check("convert", res.json)
    assert res.json["images"][0]["decompressed_layers"] == len(want["layers"])
    assert res.json["images"][0]["image_id"] == want["config"]["digest"]
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        for layer, diff_id in zip(manifest["Layers"], want["diff_ids"]):
            assert "sha256:" + hashlib.sha256(tar.extractfile(layer).read()).hexdigest() == diff_id  # type: ignore[union-attr]


def test_stdout_and_stdin(fixture_set, cli, tmp_path):
    """``-o -`` streams the tar; ``-i -`` reads one (spooled) and the result is the same."""
    oci_tar = fixture_set.file(fixture_set.input("bbx-oci")["path"])
    piped = subprocess.run(
        ["python3", "-m", "ctrconv", "convert", "-i", "-", "-o", "-", "--image", "bbx:oci", "-q"],
        stdin=oci_tar.open("rb"), capture_output=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert piped.returncode == 0, piped.stderr
    direct = tmp_path / "direct.tar"
    assert cli("convert", "-i", str(oci_tar), "-o", str(direct), "--image", "bbx:oci", "-q").code == 0
    assert piped.stdout == direct.read_bytes()


def test_errors_say_one_line_and_leave_nothing(fixture_set, cli, tmp_path):
    oci_tar = fixture_set.file(fixture_set.input("bbx-oci")["path"])
    multi = fixture_set.file(fixture_set.input("bbx-multi")["path"])
    layout = fixture_set.file(fixture_set.input("oci-layout")["path"])  # (several images)
    out = tmp_path / "out.tar"
    cases = [
        (["-i", str(tmp_path / "nope.tar"), "-o", str(out)], 2, "nope.tar"),
        (["-i", str(oci_tar), "-o", str(out), "-f", "squashfs"], 2, "unknown format"),
        (["-i", str(oci_tar), "-o", str(out), "--image", "bbx:nothere"], 2, "not found in the input"),
        (["-i", str(oci_tar), "-o", str(oci_tar)], 2, "is the input"),
        (["-i", str(multi), "-o", str(out), "--platform", "windows/amd64"], 1, "no manifest found for the requested platform"),
        (["-i", str(multi), "-o", str(out), "--platform", "linux/amd64", "--all-platforms"], 2, "mutually exclusive"),
        (["-i", str(layout), "-o", str(out), "--name", "x:1"], 2, "exactly one image"),
        (["-i", str(oci_tar), "-o", "-", "--json"], 2, "--json cannot be combined"),
        (["-i", "docker://example.invalid/x:1", "-o", str(out)], 2, "convert reads files"),
    ]
    for args, code, text in cases:
        res = cli("convert", *args)
        assert res.code == code, (args, res.code, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) <= 2 and lines[0].startswith("ctrconv: error: ") and text in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_corrupt_blob_fails_the_conversion_and_leaves_no_output(fixture_set, cli, tmp_path):
    """A layer whose bytes do not match its digest is caught while it streams; no output, no temp."""
    src = tmp_path / "layout"
    shutil.copytree(fixture_set.file(fixture_set.input("oci-layout")["path"]), src)
    layer = _image(fixture_set, OCI_IMAGE)["manifests"][0]["layers"][-1]["digest"]
    blob = src / "blobs" / "sha256" / layer.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    for fmt in FORMATS:
        out = tmp_path / "out" / f"x{SUFFIX[fmt]}"
        out.parent.mkdir(exist_ok=True)
        res = cli("convert", "-i", str(src), "-o", str(out), "-f", fmt, "--image", "bbx:oci")
        assert res.code == 1, (fmt, res.stderr)
        assert "digest" in res.stderr.lower() and layer in res.stderr, (fmt, res.stderr)
        assert list(out.parent.iterdir()) == [], fmt


def test_name_takes_one_image_that_carries_several_names(fixture_set, cli, tmp_path):
    """``bbx-oci`` is one image under two names: ``--name`` names it (it counted the names and
    refused: a red-team run)."""
    oci_tar = fixture_set.file(fixture_set.input("bbx-oci")["path"])
    out = tmp_path / "out.tar"
    res = cli("convert", "-i", str(oci_tar), "-o", str(out), "--name", "docker.io/library/x:1", "--json")
    assert res.code == 0, res.stderr
    assert [i["name"] for i in res.json["images"]] == ["docker.io/library/x:1"]
