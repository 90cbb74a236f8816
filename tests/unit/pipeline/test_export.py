"""``ctrconv export`` on a synthetic root: formats, platforms, sparse images, corruption, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ctrconv import api
from support.synthetic_root import SyntheticRoot, host_arch, other_arch, standard_root

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def synth(tmp_path: Path) -> SyntheticRoot:
    return standard_root(tmp_path / "root")


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def _members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return {m.name: m for m in tf.getmembers()}


def _read(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tf:
        return tf.extractfile(name).read()  # type: ignore[union-attr]


def _blobs_of(members) -> set[str]:
    return {"sha256:" + n.rsplit("/", 1)[1] for n in members if n.startswith("blobs/sha256/") and len(n) > 14}


def _descendants(synth: SyntheticRoot, digest: str) -> set[str]:
    """Every digest reachable from ``digest`` among the stored and unstored blobs."""
    doc = json.loads(synth.blobs[digest])
    out = {digest}
    for child in doc.get("manifests", []) + doc.get("layers", []) + ([doc["config"]] if "config" in doc else []):
        if child["digest"] in synth.blobs and ("manifest" in child["mediaType"] or "index" in child["mediaType"]):
            out |= _descendants(synth, child["digest"])
        else:
            out.add(child["digest"])
    return out


def _target(synth: SyntheticRoot, name: str) -> dict:
    return synth.images["default"][name][0]


def _manifest_for(synth: SyntheticRoot, index_name: str, arch: str) -> dict:
    index = json.loads(synth.blobs[_target(synth, index_name)["digest"]])
    return next(m for m in index["manifests"] if m["platform"]["architecture"] == arch)


def test_oci_tar_layout_modes_and_documents(synth, out_dir, cli):
    out = out_dir / "app.tar"
    res = cli("export", "--root", str(synth.path), "--image", "docker.io/library/app:1", "-o", str(out), "-q")
    assert res.code == 0, res.stderr
    members = _members(out)
    names = list(members)
    assert names == sorted(names)
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names[-3:] == ["index.json", "manifest.json", "oci-layout"]
    assert {n: members[n].mode for n in names if not n.startswith("blobs/sha256/")} == {
        "blobs": 0o755, "blobs/sha256": 0o755, "index.json": 0o644, "manifest.json": 0o644, "oci-layout": 0o444}
    assert all(m.mode == 0o444 and m.mtime == 0 for n, m in members.items() if n.startswith("blobs/sha256/"))
    target = _target(synth, "docker.io/library/app:1")
    assert _blobs_of(members) == _descendants(synth, target["digest"])
    index = json.loads(_read(out, "index.json"))
    assert "mediaType" not in index
    assert index["manifests"] == [{**target, "annotations": {
        "io.containerd.image.name": "docker.io/library/app:1", "org.example.note": "<kept & escaped>",
        "org.opencontainers.image.ref.name": "1"}}]
    assert json.loads(_read(out, "manifest.json"))[0]["RepoTags"] == ["app:1"]
    assert _read(out, "oci-layout") == b'{"imageLayoutVersion":"1.0.0"}'
    assert os.stat(out).st_size % 512 == 0
    assert _read(out, "index.json")[-1:] == b"}"


def test_multi_platform_default_is_host_only(synth, out_dir, cli):
    out = out_dir / "m.tar"
    res = cli("export", "--root", str(synth.path), "--image", "docker.io/library/multi:1", "-o", str(out), "--json")
    assert res.code == 0, res.stderr
    report = res.json
    assert report["platforms"] == [f"linux/{host_arch()}"]
    assert report["skipped_platforms"] == [f"linux/{other_arch()}"]
    blobs = _blobs_of(_members(out))
    index_digest = _target(synth, "docker.io/library/multi:1")["digest"]
    host = _manifest_for(synth, "docker.io/library/multi:1", host_arch())["digest"]
    other = _manifest_for(synth, "docker.io/library/multi:1", other_arch())["digest"]
    assert blobs == {index_digest} | _descendants(synth, host)
    assert other not in blobs
    assert report["blobs"] == len(blobs)
    assert report["bytes"] == sum(len(synth.blobs[d]) for d in blobs)


def test_all_platforms_and_explicit_platform(synth, out_dir, cli):
    name = "docker.io/library/multi:1"
    out = out_dir / "all.tar"
    assert cli("export", "--root", str(synth.path), "--image", name, "-o", str(out), "--all-platforms", "-q").code == 0
    assert _blobs_of(_members(out)) == _descendants(synth, _target(synth, name)["digest"])
    # manifest.json still describes the host platform (ctr keeps DefaultStrict for it)
    host = json.loads(synth.blobs[_manifest_for(synth, name, host_arch())["digest"]])
    assert json.loads(_read(out, "manifest.json"))[0]["Config"] == "blobs/sha256/" + host["config"]["digest"][7:]
    out2 = out_dir / "other.tar"
    assert cli("export", "--root", str(synth.path), "--image", name, "-o", str(out2), "--platform", f"linux/{other_arch()}", "-q").code == 0
    other = json.loads(synth.blobs[_manifest_for(synth, name, other_arch())["digest"]])
    assert json.loads(_read(out2, "manifest.json"))[0]["Config"] == "blobs/sha256/" + other["config"]["digest"][7:]
    assert _manifest_for(synth, name, host_arch())["digest"] not in _blobs_of(_members(out2))


def test_sparse_index_default_succeeds_missing_platform_fails_cleanly(synth, out_dir, cli):
    name = "docker.io/library/sparse:1"
    ok = out_dir / "ok.tar"
    assert cli("export", "--root", str(synth.path), "--image", name, "-o", str(ok), "-q").code == 0
    missing = _manifest_for(synth, name, other_arch())["digest"]
    for extra in (["--all-platforms"], ["--platform", f"linux/{other_arch()}"]):
        out = out_dir / "bad.tar"
        res = cli("export", "--root", str(synth.path), "--image", name, "-o", str(out), *extra)
        assert res.code == 1
        assert f"linux/{other_arch()}" in res.stderr and missing in res.stderr
        assert sorted(p.name for p in out_dir.iterdir()) == ["ok.tar"]
    res = cli("export", "--root", str(synth.path), "--image", name, "-o", str(out_dir / "d"), "--all-platforms")
    assert res.code == 1 and not (out_dir / "d").exists()
    assert sorted(p.name for p in out_dir.iterdir()) == ["ok.tar"]


def test_no_platform_match_fails(synth, out_dir, cli):
    res = cli("export", "--root", str(synth.path), "--image", "docker.io/library/multi:1",
              "-o", str(out_dir / "x.tar"), "--platform", "linux/s390x")
    assert res.code == 1 and "no manifest found" in res.stderr
    assert not any(out_dir.iterdir())


def test_reference_resolution(synth, out_dir, cli):
    res = cli("export", "--root", str(synth.path), "app:1", "-o", str(out_dir / "a.tar"), "--json")
    assert res.code == 0, res.stderr
    assert res.json["images"][0]["name"] == "docker.io/library/app:1"
    for bad in ("app:2", "nope", "Bad Ref"):
        res = cli("export", "--root", str(synth.path), "--image", bad, "-o", str(out_dir / "b.tar"))
        assert res.code == 2, (bad, res.stderr)
    assert cli("export", "--root", str(synth.path), "-o", str(out_dir / "c.tar")).code == 2
    assert cli("export", "--root", str(synth.path), "-n", "empty", "--all", "-o", str(out_dir / "c.tar")).code == 2
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.tar"]


def test_exact_stored_name_wins_over_normalisation(tmp_path, out_dir, cli):
    r = SyntheticRoot(tmp_path / "root")
    exact = r.image_manifest("exact", host_arch())
    normal = r.image_manifest("normal", host_arch())
    r.name("default", "app:1", exact)  # a non-normalised name, as some tools store them
    r.name("default", "docker.io/library/app:1", normal)
    r.write()
    res = cli("export", "--root", str(r.path), "--image", "app:1", "-o", str(out_dir / "x.tar"), "--json")
    assert res.code == 0, res.stderr
    assert res.json["images"][0]["digest"] == exact["digest"]


def test_oci_dir_copy_and_link(synth, tmp_path, cli):
    store = synth.path / "io.containerd.content.v1.content" / "blobs" / "sha256"
    copied, linked = tmp_path / "copied", tmp_path / "linked"
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(copied), "-q").code == 0
    res = cli("export", "--root", str(synth.path), "--all", "-o", str(linked), "--link", "--json")
    assert res.code == 0, res.stderr
    assert res.json["format"] == "oci-dir" and res.json["linked"] == res.json["blobs"]
    for layout in (copied, linked):
        assert sorted(p.name for p in layout.iterdir()) == ["blobs", "index.json", "manifest.json", "oci-layout"]
        assert (layout / "oci-layout").stat().st_mode & 0o777 == 0o444
        assert (layout / "index.json").stat().st_mode & 0o777 == 0o644
        for blob in (layout / "blobs" / "sha256").iterdir():
            assert blob.stat().st_mode & 0o777 == 0o444
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    for blob in (linked / "blobs" / "sha256").iterdir():
        assert blob.stat().st_ino == (store / blob.name).stat().st_ino
        assert (copied / "blobs" / "sha256" / blob.name).stat().st_ino != blob.stat().st_ino
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(copied)).code == 2  # not empty
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(empty), "-q").code == 0
    assert (empty / "index.json").is_file()


def test_link_options_are_checked(synth, out_dir, cli):
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(out_dir / "x.tar"), "--link").code == 2
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(out_dir / "d"), "--no-verify").code == 2
    res = cli("export", "--root", str(synth.path), "--all", "-o", str(out_dir / "d"), "--link", "--no-verify", "--json")
    assert res.code == 0 and res.json["linked"] == res.json["blobs"]


def _layer_of(synth: SyntheticRoot, name: str) -> str:
    manifest = json.loads(synth.blobs[_target(synth, name)["digest"]])
    return manifest["layers"][0]["digest"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "remove"])
@pytest.mark.parametrize("fmt", ["oci-tar", "oci-dir", "docker-archive"])
def test_corrupt_or_missing_blob_fails_and_leaves_nothing(synth, out_dir, cli, damage, fmt):
    layer = _layer_of(synth, "docker.io/library/app:1")
    path = synth.path / "io.containerd.content.v1.content" / "blobs" / "sha256" / layer[7:]
    path.chmod(0o644)
    data = path.read_bytes()
    if damage == "flip":
        path.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])
    elif damage == "truncate":
        path.write_bytes(data[:-5])
    elif damage == "extend":
        path.write_bytes(data + b"\0")
    else:
        path.unlink()
    out = out_dir / ("x" if fmt == "oci-dir" else "x.tar")
    res = cli("export", "--root", str(synth.path), "--all", "-o", str(out), "--format", fmt)
    assert res.code == 1
    assert layer in res.stderr
    assert list(out_dir.iterdir()) == []


def test_linked_corrupt_blob_is_caught_unless_verification_is_off(synth, out_dir, cli):
    layer = _layer_of(synth, "docker.io/library/app:1")
    path = synth.path / "io.containerd.content.v1.content" / "blobs" / "sha256" / layer[7:]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(bytes(data))
    res = cli("export", "--root", str(synth.path), "--image", "app:1", "-o", str(out_dir / "d"), "--link")
    assert res.code == 1 and layer in res.stderr
    assert list(out_dir.iterdir()) == []
    # --no-verify trusts the store: only sizes are checked (documented trade-off)
    res = cli("export", "--root", str(synth.path), "--image", "app:1", "-o", str(out_dir / "d"), "--link", "--no-verify", "-q")
    assert res.code == 0


def test_invalid_manifest_is_refused_before_writing(tmp_path, out_dir, cli):
    r = SyntheticRoot(tmp_path / "root")
    bad = r.add_blob(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}',
                     "application/vnd.oci.image.manifest.v1+json")
    r.name("default", "docker.io/library/bad:1", bad)
    r.name("default", "docker.io/library/good:1", r.image_manifest("good", host_arch()))
    r.write()
    res = cli("export", "--root", str(r.path), "--all", "-o", str(out_dir / "x.tar"))
    assert res.code == 1 and bad["digest"] in res.stderr
    assert list(out_dir.iterdir()) == []


def test_docker_archive_shape(synth, out_dir, cli):
    """Docker 25+'s ``docker save`` shape: index.json names each stored target (an index keeps
    its index, so a Docker on the containerd store loads it under the same ID), the blobs are
    the host platform's (every platform with --all-platforms), manifest.json describes the host
    platform's manifest."""
    out = out_dir / "d.tar"
    res = cli("export", "--root", str(synth.path), "--image", "multi:1", "--image", "app:1", "-o", str(out),
              "--format", "docker-archive", "--json")
    assert res.code == 0, res.stderr
    members = _members(out)
    multi = _target(synth, "docker.io/library/multi:1")
    host = _manifest_for(synth, "docker.io/library/multi:1", host_arch())
    app = _target(synth, "docker.io/library/app:1")
    assert _blobs_of(members) == {multi["digest"]} | _descendants(synth, host["digest"]) | _descendants(synth, app["digest"])
    manifest = json.loads(_read(out, "manifest.json"))
    assert [m["RepoTags"] for m in manifest] == [["multi:1"], ["app:1"]]
    host_doc = json.loads(synth.blobs[host["digest"]])
    assert manifest[0]["Config"] == "blobs/sha256/" + host_doc["config"]["digest"][7:]
    for item in manifest:
        assert item["Config"] in members and all(layer in members for layer in item["Layers"])
    index = json.loads(_read(out, "index.json"))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [e["digest"] for e in index["manifests"]] == [multi["digest"], app["digest"]]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/multi:1"

    every = out_dir / "e.tar"
    res = cli("export", "--root", str(synth.path), "--image", "multi:1", "-o", str(every),
              "--format", "docker-archive", "--all-platforms", "-q")
    assert res.code == 0, res.stderr
    assert _blobs_of(_members(every)) == _descendants(synth, multi["digest"])
    assert json.loads(_read(every, "manifest.json")) == manifest[:1]


def test_docker_archive_of_an_untagged_name_is_unnamed(tmp_path, out_dir, cli):
    """A name docker cannot tag (a digest reference) gives ``RepoTags: null`` as ``docker save``
    writes for an untagged image (loads as ``Loaded image ID``); index.json keeps the name."""
    r = SyntheticRoot(tmp_path / "root")
    m = r.image_manifest("d", host_arch())
    r.name("default", "docker.io/library/d@" + m["digest"], m)
    r.write()
    out = out_dir / "x.tar"
    res = cli("export", "--root", str(r.path), "--all", "-o", str(out), "--format", "docker-archive", "-q")
    assert res.code == 0, res.stderr
    assert [item["RepoTags"] for item in json.loads(_read(out, "manifest.json"))] == [None]
    entry, = json.loads(_read(out, "index.json"))["manifests"]
    assert entry["digest"] == m["digest"]
    assert entry["annotations"]["io.containerd.image.name"] == "docker.io/library/d@" + m["digest"]


def test_docker_archive_by_image_id_is_unnamed_like_docker_save(synth, out_dir, cli):
    """``docker save <ID>``: an image asked for only by its ID (a 12-hex prefix of the target
    digest, as Docker on the containerd store shows it) is written unnamed; asked for by a name
    as well, it keeps its names."""
    app = _target(synth, "docker.io/library/app:1")
    out = out_dir / "id.tar"
    res = cli("export", "--root", str(synth.path), "--image", app["digest"][7:19], "-o", str(out),
              "--format", "docker-archive", "--json")
    assert res.code == 0, res.stderr
    assert [i["name"] for i in res.json["images"]] == [app["digest"]]
    assert [item["RepoTags"] for item in json.loads(_read(out, "manifest.json"))] == [None]
    entry, = json.loads(_read(out, "index.json"))["manifests"]
    assert entry["digest"] == app["digest"] and "io.containerd.image.name" not in entry.get("annotations", {})
    both = out_dir / "both.tar"
    res = cli("export", "--root", str(synth.path), "--image", app["digest"][7:19], "--image", "app:1",
              "-o", str(both), "--format", "docker-archive", "-q")
    assert res.code == 0, res.stderr
    assert [item["RepoTags"] for item in json.loads(_read(both, "manifest.json"))] == [["app:1"]]


def test_index_media_type_option(synth, out_dir, cli):
    out = out_dir / "a.tar"
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(out), "--index-media-type", "-q").code == 0
    assert _read(out, "index.json").startswith(
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[')
    out2 = out_dir / "b.tar"
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(out2), "--skip-manifest-json", "-q").code == 0
    assert "manifest.json" not in _members(out2)


def test_stdout_stream_equals_file_output(synth, out_dir, cli):
    out = out_dir / "f.tar"
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(out), "-q").code == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(synth.path), "--all", "-o", "-"],
                          capture_output=True, env=env, check=True)
    assert proc.stdout == out.read_bytes()
    assert cli("export", "--root", str(synth.path), "--all", "-o", "-", "--json").code == 2
    assert cli("export", "--root", str(synth.path), "--all", "-o", "-", "--format", "oci-dir").code == 2


def test_api_and_progress(synth, out_dir):
    from support.progress import RecordingProgress

    progress = RecordingProgress()
    report = api.export_images(synth.path, out_dir / "x", image=["app:1", "multi:1"], progress=progress)
    assert report.format == "oci-dir"
    (export,) = progress.stages  # one stage, its total known before the first byte
    assert (export.name, export.total, export.done, export.closed) == ("export", report.bytes, report.bytes, True)
    assert [i.name for i in report.images] == ["docker.io/library/app:1", "docker.io/library/multi:1"]


def test_source_root_is_not_modified(synth, out_dir, cli):
    def state() -> dict[str, tuple]:
        out = {}
        for p in sorted(synth.path.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns,
                           hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
        return out

    before = state()
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(out_dir / "a.tar"), "-q").code == 0
    assert cli("export", "--root", str(synth.path), "--all", "-o", str(out_dir / "d"), "--link", "-q").code == 0
    assert state() == before


def _nested(root: Path, *, arm_present: bool) -> SyntheticRoot:
    """``docker.io/library/nested:1``: an index whose one child (no platform) is an index of
    the host's and another platform's manifests."""
    r = SyntheticRoot(root)
    host = r.image_manifest("nested", host_arch())
    other = r.image_manifest("nested", other_arch(), store=arm_present)
    inner = r.index([(host, {"os": "linux", "architecture": host_arch()}),
                     (other, {"os": "linux", "architecture": other_arch()})])
    r.name("default", "docker.io/library/nested:1", r.index([(inner, None)]))
    r.write()
    return r


@pytest.mark.parametrize("platform", [None, "other"])
def test_a_nested_index_is_exported_whole_below_the_chosen_child(tmp_path, out_dir, cli, platform):
    """``ctr images export`` filters platforms among the image index's children only and walks
    each chosen child whole: an index nested in it goes with every platform it lists, whichever
    platform is asked for (a red-team run: ctrconv's archive held half the blobs ctr's holds)."""
    r = _nested(tmp_path / "root", arm_present=True)
    args = ["--platform", f"linux/{other_arch()}"] if platform else []
    out = out_dir / "nested.tar"
    res = cli("export", "--root", str(r.path), "--image", "nested:1", "-o", str(out), "-q", "--skip-manifest-json", *args)
    assert res.code == 0, res.stderr
    blobs = {n for n in _members(out) if n.startswith("blobs/sha256/") and _members(out)[n].isfile()}
    assert blobs == {"blobs/sha256/" + d.split(":")[1] for d in r.blobs}


def test_a_nested_index_with_one_platform_present_still_exports_it(tmp_path, out_dir, cli):
    """Where the node pulled the host's platform only, the inner index cannot go whole (ctr
    fails there): the platforms present are exported, as before."""
    r = _nested(tmp_path / "root", arm_present=False)
    out = out_dir / "nested.tar"
    res = cli("export", "--root", str(r.path), "--image", "nested:1", "-o", str(out), "-q", "--skip-manifest-json")
    assert res.code == 0, res.stderr
    blobs = {n for n in _members(out) if n.startswith("blobs/sha256/") and _members(out)[n].isfile()}
    assert blobs == {"blobs/sha256/" + d.split(":")[1] for d in r.blobs}  # (only what is stored)


def test_an_artifact_exports_to_a_dir_layout_but_not_to_a_docker_archive(tmp_path, out_dir, cli):
    """A helm chart (an OCI manifest whose config is no image config): ``skopeo copy ... dir:``
    writes it, and so does ``--format dir`` (it refused it unless --all-platforms, a red-team
    run); a docker archive needs an image config (``docker load``) and refuses it (exit 2)."""
    r = SyntheticRoot(tmp_path / "root")
    config = r.add_blob(b'{"name":"app","version":"1.0.0"}', "application/vnd.cncf.helm.config.v1+json")
    chart = r.add_blob(b"chart bytes", "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config, "layers": [chart]}
    r.name("default", "registry.example/charts/app:1",
           r.add_blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"))
    r.write()
    res = cli("export", "--root", str(r.path), "--image", "registry.example/charts/app:1", "-o", str(out_dir / "d"),
              "--format", "dir", "-q")
    assert res.code == 0, res.stderr
    assert (out_dir / "d" / "manifest.json").read_bytes() == json.dumps(manifest).encode()
    assert {p.name for p in (out_dir / "d").iterdir()} == {"manifest.json", "version", config["digest"][7:],
                                                          chart["digest"][7:]}
    res = cli("export", "--root", str(r.path), "--image", "registry.example/charts/app:1", "-o", str(out_dir / "x.tar"),
              "--format", "docker-archive", "-q")
    assert res.code == 2 and "is not a container image config" in res.stderr
    assert not (out_dir / "x.tar").exists()
