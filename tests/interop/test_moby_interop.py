"""Docker Engine's containerd image store (namespace ``moby``) as a source and a target, judged
by real engines: Docker 26.1 on containerd 1.7 and Docker 28.5 on containerd 2.1 (Debian
trixie / sid, fetched privately), and Debian 12's Docker 20.10 for the classic loader.

The root comes from :mod:`support.moby_set`: Docker pulled images whose layer blobs it never
fetched (their snapshots existed), loaded a multi-platform index, and left a dangling image.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.dockerd import PrivateDockerd
from support.dockerd import skip_reason as classic_skip_reason
from support.interop_checks import expected_file
from support.moby import LINES, MobyDocker, skip_reason
from support.moby_set import CONTAINERD_LINE, MobySet, get_moby_set

pytestmark = pytest.mark.interop

#: a file every bbx variant but bbx:multi holds (same layers, other compressions)
PROBE = "/data/modify.txt"


@pytest.fixture(scope="module", params=LINES, ids=[f"docker{line}" for line in LINES])
def line(request: pytest.FixtureRequest) -> str:
    reason = skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(scope="module")
def moby_set(line: str, fixture_set_for) -> MobySet:
    return get_moby_set(line, fixture_set_for(CONTAINERD_LINE[line]))


@pytest.fixture(scope="module")
def fresh_docker(line: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MobyDocker]:
    """An empty Docker of the same line on the containerd store, for loading exports."""
    with MobyDocker(line, tmp_path_factory.mktemp(f"fresh{line}")) as docker:
        yield docker


@pytest.fixture(scope="module")
def classic_docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDockerd]:
    reason = classic_skip_reason()
    if reason:
        pytest.skip(reason)
    with PrivateDockerd(tmp_path_factory.mktemp("docker20")) as docker:
        yield docker


def _forget_all(docker: Any) -> None:
    ids = docker.docker("images", "-aq", "--no-trunc").stdout.split()
    if ids:
        docker.docker("rmi", "-f", *sorted(set(ids)))


def _stored_images(cli, root: Path) -> list[dict[str, Any]]:
    listed = json.loads(cli("ls", "--root", str(root), "-n", "moby", "--json").stdout)
    return listed["images"] if isinstance(listed, dict) else listed


def _ref_for(image: dict[str, Any]) -> str:
    """How a user names it: the name, or for Docker's dangling record its 12-hex image ID."""
    if image["name"].startswith("moby-dangling@"):
        return image["digest"][7:19]
    return image["name"]


def _probe(docker: Any, ref: str, name: str) -> str:
    cmd = ["/bin/busybox", "true"] if name.endswith("bbx:multi") else ["/bin/busybox", "cat", PROBE]
    return docker.docker("run", "--rm", "--network", "none", ref, *cmd).stdout


def test_verify_and_ls_call_layers_docker_never_fetched_normal(moby_set, cli) -> None:
    """verify exits 0 on the healthy Docker root; the skipped layers are info, and ls says the
    images run."""
    res = cli("verify", "--root", str(moby_set.root), "-n", "moby")
    assert res.code == 0, res.stdout + res.stderr
    skipped = [line for line in res.stdout.splitlines() if "discarded-layers" in line]
    assert skipped and all(line.startswith("info") and "never fetched" in line for line in skipped)
    statuses = {i["name"]: i["status"] for i in _stored_images(cli, moby_set.root)}
    registry = moby_set.info["registry"]
    assert statuses[f"{registry}/bbx:oci"] == "layers-discarded"
    assert statuses[f"{registry}/bbx:uncompressed"] == "complete", statuses


@pytest.mark.parametrize("fmt", ["oci-tar", "docker-archive"])
def test_every_image_exports_and_loads_with_its_image_id_and_runs(
        moby_set, fresh_docker, classic_docker, fixture_set_for, line, cli, tmp_path, fmt) -> None:
    """Each image of the Docker root, exported alone (the dangling one by its 12-hex ID), loads
    into a fresh Docker on the containerd store under the ID the export reports (the source's
    target digest when no layer had to be written again; a new manifest otherwise, since the
    original compressed blobs are gone) and into Docker 20.10 (docker-archive) under the
    source's config digest, and runs with the original file content."""
    want = expected_file(fixture_set_for(CONTAINERD_LINE[line]), "docker.io/library/bbx:oci", PROBE)
    for image in _stored_images(cli, moby_set.root):
        _forget_all(fresh_docker)
        out = tmp_path / f"{image['digest'][7:19]}-{fmt}.tar"
        res = cli("export", "--root", str(moby_set.root), "-n", "moby", "--image", _ref_for(image),
                  "-o", str(out), "--format", fmt, "--json")
        assert res.code == 0, (image["name"], res.stderr)
        report, = res.json["images"]
        if not res.json.get("rewritten"):
            assert report["digest"] == image["digest"], image["name"]
        # a layer Docker never fetched is copied from the blob that unpacked its snapshot: the
        # config, and so Docker 20.10's image ID, stay
        assert report["image_id"] == report["original_image_id"], (image["name"], res.stderr)
        loaded = fresh_docker.docker("load", "-i", str(out)).stdout
        inspected = json.loads(fresh_docker.docker("image", "inspect", report["digest"]).stdout)[0]
        assert inspected["Id"] == report["digest"], (image["name"], loaded)
        ran = _probe(fresh_docker, report["digest"], image["name"])
        if not image["name"].endswith("bbx:multi"):
            assert hashlib.sha256(ran.encode()).hexdigest() == want, image["name"]
        if fmt == "docker-archive":
            _forget_all(classic_docker)
            classic_docker.docker("load", "-i", str(out))
            inspected = json.loads(classic_docker.docker("image", "inspect", report["image_id"]).stdout)[0]
            assert inspected["Id"] == report["image_id"], image["name"]
            ran = _probe(classic_docker, report["image_id"], image["name"])
            if not image["name"].endswith("bbx:multi"):
                assert hashlib.sha256(ran.encode()).hexdigest() == want, image["name"]


def test_imports_into_moby_show_in_docker_images_with_docker_ids_and_run(
        moby_set, fixture_set_for, line, cli, tmp_path) -> None:
    """Exports of the Docker root (a multi-platform index, the dangling image by its ID, a
    plain image, one with regenerated layers), imported with ``-n moby`` into a new root: a
    Docker of the same line started on it lists each under its name (the unnamed one as
    ``<none>``) with the target digest as image ID, and runs each."""
    registry = moby_set.info["registry"]
    dangling = next(i for i in _stored_images(cli, moby_set.root) if i["name"].startswith("moby-dangling@"))
    wanted = {"bbx:multi": "docker-archive", dangling["digest"][7:19]: "docker-archive",
              f"{registry}/bbx:uncompressed": "oci-tar", f"{registry}/bbx:zstd": "oci-tar"}
    root = tmp_path / "root"
    expected: dict[str, str] = {}
    for ref, fmt in wanted.items():
        out = tmp_path / f"{len(expected)}.tar"
        res = cli("export", "--root", str(moby_set.root), "-n", "moby", "--image", ref, "-o", str(out),
                  "--format", fmt, "--json")
        assert res.code == 0, res.stderr
        report, = res.json["images"]
        expected[report["name"]] = report["digest"]
        res = cli("import", "--root", str(root), "-n", "moby", "-i", str(out), "-q",
                  "--containerd-version", CONTAINERD_LINE[line])
        assert res.code == 0, res.stderr
    assert expected[dangling["digest"]] == dangling["digest"]
    want = expected_file(fixture_set_for(CONTAINERD_LINE[line]), "docker.io/library/bbx:oci", PROBE)
    with MobyDocker(line, tmp_path, root=root) as docker:
        rows = [json.loads(r) for r in docker.docker("images", "--no-trunc", "--format", "{{json .}}").stdout.splitlines()]
        shown = {("<none>" if r["Repository"] == "<none>" else f"{r['Repository']}:{r['Tag']}"): r["ID"] for r in rows}
        assert shown == {
            "bbx:multi": expected["docker.io/library/bbx:multi"],
            f"{registry}/bbx:uncompressed": expected[f"{registry}/bbx:uncompressed"],
            f"{registry}/bbx:zstd": expected[f"{registry}/bbx:zstd"],
            "<none>": dangling["digest"],
        }, rows
        for name, image_id in shown.items():
            ran = _probe(docker, image_id, name)
            if name != "bbx:multi":
                assert hashlib.sha256(ran.encode()).hexdigest() == want, name


def test_all_platforms_docker_archive_loads_with_the_index_id(moby_set, fresh_docker, classic_docker, cli,
                                                              tmp_path) -> None:
    """``--all-platforms``: every platform's blobs, index.json naming the index; Docker on the
    containerd store loads it under the index digest (its ``docker images`` ID), Docker 20.10
    under the host manifest's config digest."""
    multi = next(i for i in _stored_images(cli, moby_set.root) if i["name"].endswith("bbx:multi"))
    out = tmp_path / "multi.tar"
    res = cli("export", "--root", str(moby_set.root), "-n", "moby", "--image", multi["name"], "--all-platforms",
              "-o", str(out), "--format", "docker-archive", "--json")
    assert res.code == 0, res.stderr
    report, = res.json["images"]
    assert report["digest"] == multi["digest"] and len(report["platforms"]) == 3
    _forget_all(fresh_docker)
    fresh_docker.docker("load", "-i", str(out))
    assert json.loads(fresh_docker.docker("image", "inspect", "bbx:multi").stdout)[0]["Id"] == multi["digest"]
    _forget_all(classic_docker)
    classic_docker.docker("load", "-i", str(out))
    assert json.loads(classic_docker.docker("image", "inspect", "bbx:multi").stdout)[0]["Id"] == report["image_id"]


def test_all_platforms_zstd_docker_archive_loads_under_its_index_id(line, fresh_docker, fixture_set_for, cli,
                                                                    tmp_path) -> None:
    """A three-platform image whose every layer is zstd, exported with ``--all-platforms``: the
    archive holds no zstd layer for any platform (each keeps its config), and Docker on the
    containerd store, which reads ``index.json``, loads it under the rewritten index digest the
    export reports, and runs it."""
    from support import zstd_multi

    fixtures = fixture_set_for(CONTAINERD_LINE[line])
    made = zstd_multi.build(fixtures, tmp_path)
    out = tmp_path / "zmulti.tar"
    res = cli("export", "--root", str(made.root), "--image", zstd_multi.NAME, "--all-platforms", "-o", str(out),
              "--format", "docker-archive", "--json")
    assert res.code == 0, res.stderr
    report, = res.json["images"]
    assert report["decompressed_layers"] == 6 and report["original_digest"] and report["digest"] != report["original_digest"]
    assert sorted(zstd_multi.check_archive(out, made.configs)) == sorted(made.configs)
    _forget_all(fresh_docker)
    fresh_docker.docker("load", "-i", str(out))
    assert json.loads(fresh_docker.docker("image", "inspect", "bbx:zmulti").stdout)[0]["Id"] == report["digest"]
    fresh_docker.docker("run", "--rm", "--network", "none", "bbx:zmulti", "/bin/busybox", "true")


def test_export_says_which_layers_were_copied_and_which_regenerated(moby_set, cli, tmp_path) -> None:
    """A layer Docker never fetched is taken from the stored blob of the same tar (the image
    that unpacked its snapshot): stderr and ``--json`` call it copied, naming that blob, not
    regenerated from snapshots. A layer written from its snapshot (``--from-snapshots always``)
    is called regenerated, with its snapshot."""
    from support.json_schemas import check

    registry = moby_set.info["registry"]
    res = cli("export", "--root", str(moby_set.root), "-n", "moby", "--image", f"{registry}/bbx:oci",
              "-o", str(tmp_path / "oci.tar"), "--json")
    assert res.code == 0, res.stderr
    check("export", res.json)
    report, = res.json["images"]
    assert (report["copied_layers"], report["regenerated_layers"]) == (3, 0), report
    assert "3 layer(s) never fetched into the namespace copied from a stored blob" in res.stderr
    assert "regenerated" not in res.stderr
    layers = [layer for change in res.json["rewritten"] for layer in change["layers"]]
    assert {layer["how"] for layer in layers} == {"copied"} and all(layer["matches_diff_id"] for layer in layers)
    # bbx:uncompressed unpacked those snapshots; its layer blobs are the plain tars themselves
    assert all(layer["snapshot"] is None and layer["source_blob"] == layer["original_diff_id"] for layer in layers)

    res = cli("export", "--root", str(moby_set.root), "-n", "moby", "--image", f"{registry}/bbx:uncompressed",
              "--from-snapshots", "always", "-o", str(tmp_path / "u.tar"), "--json")
    assert res.code == 0, res.stderr
    check("export", res.json)
    report, = res.json["images"]
    assert (report["copied_layers"], report["regenerated_layers"]) == (0, 3), report
    assert "3 layer(s) regenerated from snapshots" in res.stderr and "copied" not in res.stderr
    layers = [layer for change in res.json["rewritten"] for layer in change["layers"]]
    assert {layer["how"] for layer in layers} == {"regenerated"}
    assert all(layer["snapshot"] and layer["source_blob"] is None for layer in layers)


def _push_tags(cli, fixtures, host: str, tags) -> None:  # type: ignore[no-untyped-def]
    """Push ``bbx:<tag>`` of the fixture root to the private registry at ``host``."""
    for tag in tags:
        res = cli("export", "--root", str(fixtures.root), "--image", f"docker.io/library/bbx:{tag}",
                  "--to", f"{host}/bbx:{tag}", "--plain-http", "-q")
        assert res.code == 0, res.stderr


def test_layers_docker_skipped_whose_blobs_another_namespace_holds_export_unchanged(
        line, fresh_docker, fixture_set_for, cli, tmp_path) -> None:
    """``ctr images import`` put ``bbx:oci`` into namespace ``default``; Docker then pulled
    ``bbx:uncompressed`` and ``bbx:oci`` (same diff IDs): Docker never fetched ``bbx:oci``'s
    layers (their snapshots existed), but the very blob files are on disk, ``default``'s.
    That is no lost record: ``verify`` exits 0 calling the layers never fetched, ``ls`` says
    the image runs, and ``export`` takes those exact bytes, so the image is exported as stored
    (same target, no rewrite) and a fresh Docker loads it under Docker's own image ID."""
    from support.registry import PrivateRegistry

    fixtures = fixture_set_for(CONTAINERD_LINE[line])
    with PrivateRegistry(workdir=tmp_path) as registry:
        _push_tags(cli, fixtures, registry.host, ("uncompressed", "oci"))
        ref = f"{registry.host}/bbx:oci"
        with MobyDocker(line, tmp_path, root=tmp_path / "root") as docker:
            docker.containerd.ctr("images", "import", str(fixtures.file(fixtures.input("bbx-oci")["path"])),
                                  timeout=120)
            docker.docker("pull", "-q", f"{registry.host}/bbx:uncompressed")
            docker.docker("pull", "-q", ref)
            docker_id = docker.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
            docker.stop()
    root = tmp_path / "root"
    res = cli("verify", "--root", str(root), "-A")
    assert res.code == 0, res.stdout
    assert any(line_.startswith("info") and "never fetched" in line_ and "bbx:oci" in line_
               for line_ in res.stdout.splitlines()), res.stdout
    statuses = {i["name"]: i["status"] for i in _stored_images(cli, root)}
    assert statuses[ref] == "layers-discarded", statuses

    out = tmp_path / "oci.tar"
    res = cli("export", "--root", str(root), "-n", "moby", "--image", ref, "-o", str(out), "--json")
    assert res.code == 0, res.stderr
    report, = res.json["images"]
    assert (report["copied_layers"], report["regenerated_layers"]) == (3, 0), report
    assert report["digest"] == docker_id and report["original_digest"] is None, report
    layers = [layer for change in res.json["rewritten"] for layer in change["layers"]]
    assert all(layer["source_blob"] == layer["original_digest"] == layer["digest"] for layer in layers)
    assert "manifest unchanged" in res.stderr, res.stderr
    _forget_all(fresh_docker)
    fresh_docker.docker("load", "-i", str(out))
    assert json.loads(fresh_docker.docker("image", "inspect", docker_id).stdout)[0]["Id"] == docker_id
    want = expected_file(fixtures, "docker.io/library/bbx:oci", PROBE)
    assert hashlib.sha256(_probe(fresh_docker, docker_id, ref).encode()).hexdigest() == want


def test_commit_says_base_layers_docker_never_fetched_were_copied(line, fixture_set_for, cli, tmp_path) -> None:
    """A container Docker ran from ``bbx:oci``, whose layers it never fetched (``bbx:uncompressed``
    unpacked the same chain first): ``commit`` takes those base layers from the stored blobs of
    the same tars and says so (``copied_layers``, stderr ``copied``), not that it regenerated
    them; the new image's diff IDs are the base's exactly, then the container's."""
    from support.json_schemas import check
    from support.registry import PrivateRegistry

    fixtures = fixture_set_for(CONTAINERD_LINE[line])
    with PrivateRegistry(workdir=tmp_path) as registry:
        _push_tags(cli, fixtures, registry.host, ("uncompressed", "oci"))
        ref = f"{registry.host}/bbx:oci"
        with MobyDocker(line, tmp_path, root=tmp_path / "root") as docker:
            docker.docker("pull", "-q", f"{registry.host}/bbx:uncompressed")
            docker.docker("pull", "-q", ref)
            docker.docker("run", "--name", "cc", "--network", "none", ref, "/bin/busybox", "sh", "-c",
                          "echo committed > /data/written.txt")
            short = docker.docker("inspect", "-f", "{{.Id}}", "cc").stdout.strip()[:12]
            docker.stop()
    res = cli("commit", "--root", str(tmp_path / "root"), "-n", "moby", short, "-o", str(tmp_path / "c.tar"), "--json")
    assert res.code == 0, res.stderr
    check("commit", res.json)
    base = res.json["base"]
    assert base["name"] == ref and (base["copied_layers"], base["regenerated_layers"]) == (3, 0), base
    assert "3 base layer(s) never fetched into the namespace copied from a stored blob" in res.stderr \
        and "regenerated" not in res.stderr, res.stderr
    import tarfile

    with tarfile.open(tmp_path / "c.tar") as tar:
        def blob(digest: str) -> Any:
            return json.loads(tar.extractfile("blobs/sha256/" + digest[7:]).read())  # type: ignore[union-attr]

        new_ids = blob(res.json["image_id"])["rootfs"]["diff_ids"]
        stored = json.loads((tmp_path / "root/io.containerd.content.v1.content/blobs/sha256" /
                             base["image_id"][7:]).read_bytes())["rootfs"]["diff_ids"]
    assert new_ids[:-1] == stored and len(new_ids) == 4  # the base tars exactly, then the container's
