"""``ctrconv export`` against real containerd output and real consumers.

* oci-tar is byte-identical to the ``ctr images export`` tars recorded with the fixture set
  (every image, both namespaces, host-only and ``--all-platforms``);
* every format is accepted by skopeo (and umoci for single-manifest layouts);
* ``ctr images import`` of each format into a fresh private containerd gives images that
  ``ctr images check`` calls complete;
* corruption in a copy of the real root fails the export and leaves nothing behind.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import shutil
import subprocess
import tarfile

import pytest

pytestmark = pytest.mark.interop


def _exports(fixture_set):
    for rec in fixture_set.images():
        yield rec["namespace"], rec["name"], rec["export"], []
        if rec.get("export_all_platforms"):
            yield rec["namespace"], rec["name"], rec["export_all_platforms"], ["--all-platforms"]


def test_oci_tar_is_byte_identical_to_ctr_export(fixture_set, tmp_path, cli):
    checked = 0
    for ns, name, recorded, extra in _exports(fixture_set):
        out = tmp_path / f"{ns}-{checked}.tar"
        res = cli("export", "--root", str(fixture_set.root), "-n", ns, "--image", name, "-o", str(out), "-q", *extra)
        assert res.code == 0, (ns, name, res.stderr)
        ref = fixture_set.file(recorded)
        if not filecmp.cmp(out, ref, shallow=False):
            with tarfile.open(out) as a, tarfile.open(ref) as b:
                assert a.getnames() == b.getnames(), (ns, name)
                for m in a.getmembers():
                    n = b.getmember(m.name)
                    assert (m.mode, m.size, m.type) == (n.mode, n.size, n.type), m.name
                    if m.isfile():
                        assert a.extractfile(m).read() == b.extractfile(n).read(), m.name
            pytest.fail(f"{ns}/{name}: same members and contents, but tar bytes differ")
        checked += 1
    assert checked >= 8


def test_index_media_type_option_only_adds_the_field(fixture_set, tmp_path, cli):
    rec = fixture_set.image("default", "docker.io/library/bbx:multi")
    out = tmp_path / "m.tar"
    assert cli("export", "--root", str(fixture_set.root), "--image", rec["name"], "-o", str(out),
               "--index-media-type", "-q").code == 0
    with tarfile.open(out) as a, tarfile.open(fixture_set.file(rec["export"])) as b:
        ours = json.loads(a.extractfile("index.json").read())  # type: ignore[union-attr]
        theirs = json.loads(b.extractfile("index.json").read())  # type: ignore[union-attr]
    assert ours.pop("mediaType") == "application/vnd.oci.image.index.v1+json"
    assert ours == theirs


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_accepts_every_format(fixture_set, tmp_path, cli):
    root = str(fixture_set.root)
    for name in ("docker.io/library/bbx:oci", "docker.io/library/bbx:docker", "docker.io/library/bbx:multi",
                 "docker.io/library/bbx:zstd"):
        tag = name.rsplit(":", 1)[1]
        layout, tar, docker = tmp_path / f"{tag}-dir", tmp_path / f"{tag}.tar", tmp_path / f"{tag}-docker.tar"
        for out, fmt in ((layout, "oci-dir"), (tar, "oci-tar"), (docker, "docker-archive")):
            res = cli("export", "--root", root, "--image", name, "-o", str(out), "--format", fmt, "-q")
            assert res.code == 0, res.stderr
        transports = [f"docker-archive:{docker}"]
        if tag != "docker":  # containers/image only selects OCI-typed entries of an OCI layout
            transports += [f"oci:{layout}:{tag}", f"oci-archive:{tar}:{tag}"]
        for transport in transports:
            r = _run("skopeo", "inspect", transport)
            assert r.returncode == 0, (transport, r.stderr)
        # reading every layer through skopeo's docker-archive source (it decompresses them)
        r = _run("skopeo", "--insecure-policy", "copy", "-q", f"docker-archive:{docker}", f"oci:{tmp_path / (tag + '-copy')}:x")
        assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed")
def test_umoci_reads_the_layout(fixture_set, tmp_path, cli):
    layout = tmp_path / "layout"
    assert cli("export", "--root", str(fixture_set.root), "--image", "docker.io/library/bbx:oci",
               "--image", "docker.io/library/bbx:zstd", "-o", str(layout), "-q").code == 0
    for tag in ("oci", "zstd"):  # umoci reads OCI-typed manifests only
        r = _run("umoci", "stat", "--image", f"{layout}:{tag}")
        assert r.returncode == 0, r.stderr
    r = _run("umoci", "unpack", "--image", f"{layout}:oci", str(tmp_path / "bundle"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bundle" / "rootfs" / "bin").is_dir()


@pytest.mark.skipif(shutil.which("oci-image-tool") is None, reason="oci-image-tool not installed")
def test_oci_image_tool_validates_the_layout(fixture_set, tmp_path, cli):
    """Debian's oci-image-tool (1.0.0-rc1 era) validates one OCI image of a layout at a time and
    knows neither docker media types, indexes nor zstd layers (OCI 1.1), nor reads tars that
    list directories first (ctr's tars do); so: every single-manifest OCI image with gzip or
    plain layers, exported as an oci-dir."""
    images = [
        i for i in fixture_set.images("default")
        if i["target"]["mediaType"].startswith("application/vnd.oci.image.manifest")
        and not any(layer["mediaType"].endswith("+zstd") for m in i["manifests"] for layer in m["layers"])
    ]
    assert images
    for image in images:
        layout = tmp_path / image["name"].rsplit(":", 1)[1]
        assert cli("export", "--root", str(fixture_set.root), "--image", image["name"], "-o", str(layout), "-q").code == 0
        tag = image["name"].rsplit(":", 1)[1]
        r = _run("oci-image-tool", "validate", "--type", "image", "--ref", f"name={tag}", str(layout))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Validation succeeded" in r.stdout + r.stderr


def test_ctr_import_accepts_every_format(fixture_set, tmp_path, cli, private_containerd):
    root = str(fixture_set.root)
    outputs = {
        "oci-tar": tmp_path / "all.tar",
        "docker-archive": tmp_path / "docker.tar",
        "all-platforms": tmp_path / "multi-all.tar",
    }
    assert cli("export", "--root", root, "--all", "-o", str(outputs["oci-tar"]), "-q").code == 0
    assert cli("export", "--root", root, "--all", "-o", str(outputs["docker-archive"]), "-f", "docker-archive", "-q").code == 0
    assert cli("export", "--root", root, "--image", "bbx:multi", "-o", str(outputs["all-platforms"]),
               "--all-platforms", "-q").code == 0
    expected = {rec["name"] for rec in fixture_set.images("default")}
    daemon = private_containerd()
    for ns, (kind, path) in zip(("n1", "n2", "n3"), outputs.items()):
        args = ["--all-platforms"] if kind == "all-platforms" else []
        daemon.ctr("images", "import", *args, str(path), namespace=ns, timeout=300)
        rows = daemon.images_check(ns)
        names = {row.ref for row in rows}
        assert names == ({"docker.io/library/bbx:multi"} if kind == "all-platforms" else expected), kind
        assert all(row.complete for row in rows), (kind, [(r.ref, r.status) for r in rows])


def test_corrupt_blob_in_real_root_fails_cleanly(tmp_root_copy, tmp_path, cli):
    content = tmp_root_copy / "io.containerd.content.v1.content" / "blobs" / "sha256"
    layer = max(content.iterdir(), key=lambda p: p.stat().st_size)  # the busybox layer
    layer.chmod(0o644)
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0x01
    layer.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    for fmt, target in (("oci-tar", out / "a.tar"), ("oci-dir", out / "d"), ("docker-archive", out / "c.tar")):
        res = cli("export", "--root", str(tmp_root_copy), "--all", "-o", str(target), "--format", fmt)
        assert res.code == 1, (fmt, res.stderr)
        assert f"sha256:{layer.name}" in res.stderr
    assert list(out.iterdir()) == []


def test_export_never_changes_the_root(tmp_root_copy, tmp_path, cli):
    def state() -> dict[str, tuple]:
        out = {}
        for p in sorted(tmp_root_copy.rglob("*")):
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
            out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
        return out

    before = state()
    for ns in ("default", "k8s.io"):
        assert cli("export", "--root", str(tmp_root_copy), "-n", ns, "--all", "-o", str(tmp_path / f"{ns}.tar"), "-q").code == 0
        assert cli("export", "--root", str(tmp_root_copy), "-n", ns, "--all", "-o", str(tmp_path / f"{ns}-d"), "--link", "-q").code == 0
    assert state() == before


def test_locked_root_needs_ignore_lock(tmp_root_copy, tmp_path, cli, private_containerd, fixture_set):
    daemon = private_containerd(root=tmp_root_copy)
    assert daemon.running
    out = tmp_path / "o.tar"
    res = cli("export", "--root", str(tmp_root_copy), "--image", "bbx:oci", "-o", str(out))
    assert res.code == 1 and "--ignore-lock" in res.stderr
    assert not out.exists()
    res = cli("export", "--root", str(tmp_root_copy), "--image", "bbx:oci", "-o", str(out), "--ignore-lock", "-q")
    assert res.code == 0, res.stderr
    recorded = fixture_set.file(fixture_set.image("default", "docker.io/library/bbx:oci")["export"])
    assert out.read_bytes() == recorded.read_bytes()


def _foreign_layer_image(tmp_path):
    """An OCI layout tar whose image has a gzip layer and a non-distributable gzip layer."""
    import gzip
    import io

    from support.layouts import LayoutBuilder

    def layer(name: str, data: bytes) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    builder = LayoutBuilder(tmp_path / "layout")
    raws = [layer("foreign.txt", b"windows base, say"), layer("app.txt", b"app")]
    descs = [builder.blob(gzip.compress(raws[0], mtime=0), "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
             builder.blob(gzip.compress(raws[1], mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")]
    descs[0]["urls"] = ["https://example.invalid/foreign"]
    config = builder.blob(json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(r).hexdigest() for r in raws]},
    }).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config, "layers": descs}
    mdesc = builder.blob(json.dumps(manifest).encode(), manifest["mediaType"])
    mdesc["annotations"] = {"io.containerd.image.name": "docker.io/library/foreign:1",
                            "org.opencontainers.image.ref.name": "1"}
    (builder.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    archive = tmp_path / "foreign.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(builder.path), "."], check=True)
    return archive, descs[0]["digest"]


def test_skip_non_distributable_matches_ctr(private_containerd, tmp_path, cli):
    """``--skip-non-distributable`` writes what ``ctr images export --skip-non-distributable``
    writes; without it the foreign layer is exported too, as by ctr; and a foreign layer that
    was never pulled only fails the export when it is asked for."""
    archive, foreign = _foreign_layer_image(tmp_path)
    root = tmp_path / "root"
    daemon = private_containerd(root=root)
    daemon.ctr("images", "import", "--no-unpack", str(archive))
    refs = {}
    for label, extra in (("all", []), ("skip", ["--skip-non-distributable"])):
        refs[label] = tmp_path / f"ctr-{label}.tar"
        daemon.export(refs[label], "docker.io/library/foreign:1", args=tuple(extra))
    daemon.stop()
    for label, extra in (("all", []), ("skip", ["--skip-non-distributable"])):
        ours = tmp_path / f"ctrconv-{label}.tar"
        res = cli("export", "--root", str(root), "--image", "foreign:1", "-o", str(ours), "-q", *extra)
        assert res.code == 0, res.stderr
        assert ours.read_bytes() == refs[label].read_bytes(), label
    with tarfile.open(refs["skip"]) as tar:
        assert f"blobs/sha256/{foreign[7:]}" not in tar.getnames()

    (root / "io.containerd.content.v1.content/blobs/sha256" / foreign[7:]).unlink()
    res = cli("export", "--root", str(root), "--image", "foreign:1", "-o", str(tmp_path / "no.tar"), "-q")
    assert res.code == 1 and foreign in res.stderr, res.stderr
    assert not (tmp_path / "no.tar").exists()
    res = cli("export", "--root", str(root), "--image", "foreign:1", "-o", str(tmp_path / "yes.tar"), "-q",
              "--skip-non-distributable")
    assert res.code == 0, res.stderr
    assert (tmp_path / "yes.tar").read_bytes() == refs["skip"].read_bytes()
    res = cli("export", "--root", str(root), "--image", "foreign:1", "-o", str(tmp_path / "d.tar"), "-q",
              "--skip-non-distributable", "--format", "docker-archive")
    assert res.code == 2, res.stderr
