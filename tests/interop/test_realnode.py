"""Real nodes are the judge: roots made by registry pulls, CRI pulls, GC, containers and a crash.

The corpus (``fixtures/build_realnode.py``, one per containerd line) is what a node looks like:
``ctr images pull`` into ``default``, CRI pulls into ``k8s.io`` (three names per image), the
foreign platform of an index in ``other``, ``ctr images rm --sync`` of an image sharing layers,
containers created and run, and a root whose daemon was killed with a task running. On every
healthy root ``verify`` finds no problem, ``ls`` agrees with ``ctr images check``, exports equal
``ctr images export`` byte for byte, and a rebuilt root is accepted by that line's containerd.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.realnode_set import LINES, ROOTS

pytestmark = pytest.mark.interop


def _bin_dir(line: str) -> str | None:
    if line == "1.6":
        return None
    from support.versions import bin_dir_for

    return str(bin_dir_for(line))


def _check_rows(daemon, namespace: str) -> dict[str, dict[str, str]]:
    """``ctr images check`` rows by name; ctr 1.6 exits 1 after printing when a namespace holds
    only a foreign platform of an index (as it did on the original root)."""
    from support.daemon import parse_table

    out = daemon.ctr("images", "check", namespace=namespace, check=False).stdout
    return {row["REF"]: row for row in parse_table(out)}


def _problems(result) -> list[str]:
    return [f"{p['kind']}: {p['object']}: {p['message']}" for p in result.json["problems"]]


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("line", LINES)
def test_verify_is_clean_on_every_healthy_root(line, root, realnode_set_for, cli):
    corpus = realnode_set_for(line)
    for deep in ([], ["--deep"]):
        result = cli("verify", "--root", str(corpus.root(root)), "-A", "-q", "--json", *deep)
        assert result.code == 0, _problems(result)
        assert "Traceback" not in result.stderr
    # the never-pulled platforms and the labels pointing at them are information, said so
    kinds = {p["kind"] for p in result.json["info"]}
    assert "absent-platform" in kinds


@pytest.mark.parametrize("line", LINES)
def test_ls_completeness_agrees_with_ctr_images_check(line, realnode_set_for, cli):
    corpus = realnode_set_for(line)
    for root in ROOTS:
        listed = cli("ls", "--root", str(corpus.root(root)), "-A", "--json").json["images"]
        by_name = {(i["namespace"], i["name"]): i for i in listed}
        for ns, info in corpus.info["roots"][root]["namespaces"].items():
            assert sorted(n for (space, n) in by_name if space == ns) == sorted(info["images"]), (root, ns)
            for name, row in info["check"].items():
                assert by_name[(ns, name)]["complete"] == row["complete"], (root, ns, name, row)
        # ls and verify agree: verify finds these roots clean, so ls calls no image broken; an
        # image whose judged platform the namespace never pulled says so
        assert {i["status"] for i in listed} <= {"complete", "platform-absent"}, listed
        assert all(i["judged_platform"] == corpus.info["host_platform"] for i in listed)


@pytest.mark.parametrize("line", LINES)
def test_foreign_platform_preload_is_complete_for_its_platform(line, realnode_set_for, cli, tmp_path):
    """An arm64 node image built on this machine: ls says the host platform was not pulled
    (and that the image holds arm64), complete for arm64; verify is clean."""
    corpus = realnode_set_for(line)
    foreign = corpus.info["other_platform"]
    archive = corpus.file(corpus.image("index")["export_other"]) if corpus.image("index").get("export_other") else None
    if archive is None:
        pytest.skip("this line's ctr could not export the foreign platform")
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-n", "k8s.io", "-i", str(archive), "--platform", foreign, "-q",
                 "--containerd-version", line)
    assert result.code == 0, result.stderr
    listed = cli("ls", "--root", str(root), "-n", "k8s.io", "--json").json["images"]
    assert listed and all(i["status"] == "platform-absent" and i["present_platforms"] == [foreign] for i in listed)
    judged = cli("ls", "--root", str(root), "-n", "k8s.io", "--platform", foreign, "--json").json["images"]
    assert all(i["complete"] for i in judged)
    verify = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert verify.code == 0, _problems(verify)


@pytest.mark.parametrize("line", LINES)
def test_exports_equal_ctr_images_export(line, realnode_set_for, cli, tmp_path):
    corpus = realnode_set_for(line)
    pulled = set(corpus.names("default"))
    compared = 0
    for image in corpus.images():
        reference = corpus.export(image["key"])
        if reference is None or image["ref"] not in pulled:
            continue
        out = tmp_path / f"{image['key']}.tar"
        result = cli("export", "--root", str(corpus.node_root), "--image", image["ref"], "-o", str(out), "-q")
        assert result.code == 0, result.stderr
        assert out.read_bytes() == reference.read_bytes(), image["key"]
        compared += 1
    assert compared >= 5


@pytest.mark.parametrize("line", LINES)
def test_export_of_a_platform_the_namespace_never_pulled_fails_like_ctr(line, realnode_set_for, cli, tmp_path):
    """``other`` holds only the foreign platform of the index, while ``default`` holds the
    host's blobs on the same disk: exporting the host platform from ``other`` fails."""
    corpus = realnode_set_for(line)
    index = corpus.image("index")
    host = corpus.info["host_platform"]
    for extra in ([], ["--platform", host], ["--all-platforms"]):
        out = tmp_path / "out.tar"
        result = cli("export", "--root", str(corpus.node_root), "-n", "other", "--image", index["ref"],
                     "-o", str(out), "-q", *extra)
        assert result.code == 1, (extra, result.stderr)
        assert host in result.stderr and "Traceback" not in result.stderr
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    other = corpus.info["other_platform"]
    ok = cli("export", "--root", str(corpus.node_root), "-n", "other", "--image", index["ref"],
             "-o", str(tmp_path / "foreign.tar"), "-q", "--platform", other)
    assert ok.code == 0, ok.stderr


@pytest.mark.parametrize("line", LINES)
def test_rebuild_in_place_of_a_healthy_root_changes_nothing(line, realnode_set_for, cli, tmp_path):
    corpus = realnode_set_for(line)
    root = corpus.copy_root("crashed", tmp_path / "root")
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    before = meta.read_bytes()
    entries = sorted(p.name for p in root.iterdir())
    result = cli("rebuild", "--root", str(root), "-q")
    assert result.code == 0, result.stderr
    assert "nothing to repair" in result.stdout
    assert meta.read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == entries


@pytest.mark.parametrize("root_name", ROOTS)
@pytest.mark.parametrize("line", LINES)
def test_rebuilt_healthy_root_is_accepted_by_containerd(line, root_name, realnode_set_for, cli, tmp_path, private_containerd):
    corpus = realnode_set_for(line)
    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(corpus.root(root_name)), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert not report["damage_found"], json.dumps(report, indent=1)[:3000]
    assert not report["dropped"] and not report["corrupt_blobs"]
    verify = cli("verify", "--root", str(new), "-A", "-q", "--json")
    assert verify.code == 0, _problems(verify)

    recorded = corpus.info["roots"][root_name]["namespaces"]
    daemon = private_containerd(root=new, binary_dir=_bin_dir(line))
    for ns, info in recorded.items():
        assert sorted(daemon.image_names(ns)) == sorted(info["images"]), ns
        rows = _check_rows(daemon, ns)
        for name, row in info["check"].items():
            assert rows[name]["STATUS"].startswith("complete") == row["complete"], (ns, name, rows[name])
            assert (rows[name]["UNPACKED"] == "true") == row["unpacked"], (ns, name, rows[name])
    oci = corpus.image("oci")["ref"]
    run = daemon.ctr("run", "--rm", oci, "ctrconv-realnode-check", "/bin/busybox", "true", check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    daemon.force_gc("default")
    daemon.stop()
    daemon.start()
    for ns, info in recorded.items():
        assert sorted(daemon.image_names(ns)) == sorted(info["images"]), ns
        rows = _check_rows(daemon, ns)
        assert all(rows[n]["STATUS"].startswith("complete") == row["complete"] for n, row in info["check"].items()), ns


# -- a node whose CRI let layer blobs go after unpacking (discard_unpacked_layers) ----------


@pytest.mark.parametrize("line", LINES)
def test_discarded_layers_node_is_healthy_to_verify_and_ls(line, realnode_set_for, cli):
    """EKS and GKE nodes: layer blobs are collected once unpacked. The node runs every image;
    verify says so as information, ls names the state and agrees with ctr images check."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for(line)
    root = corpus.root(DISCARDED)
    for deep in ([], ["--deep"]):
        result = cli("verify", "--root", str(root), "-A", "-q", "--json", *deep)
        assert result.code == 0, _problems(result)
    assert any(p["kind"] == "discarded-layers" for p in result.json["info"])
    listed = {i["name"]: i for i in cli("ls", "--root", str(root), "-n", "k8s.io", "--json").json["images"]}
    for name, row in corpus.info["roots"][DISCARDED]["namespaces"]["k8s.io"]["check"].items():
        assert listed[name]["complete"] == row["complete"], (name, row)
        if not row["complete"]:
            assert listed[name]["status"] == "layers-discarded", listed[name]


@pytest.mark.parametrize("line", LINES)
def test_discarded_layers_node_rebuilt_keeps_every_image(line, realnode_set_for, cli, tmp_path, private_containerd):
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for(line)
    source = corpus.root(DISCARDED)
    in_place = corpus.copy_root(DISCARDED, tmp_path / "copy")
    result = cli("rebuild", "--root", str(in_place), "-q")
    assert result.code == 0 and "nothing to repair" in result.stdout, result.stdout + result.stderr

    new = tmp_path / "new"
    result = cli("rebuild", "--root", str(source), "-o", str(new), "-q", "--json")
    assert result.code == 0, result.stderr
    assert not result.json["dropped"] and not result.json["damage_found"], result.json
    recorded = corpus.info["roots"][DISCARDED]["namespaces"]["k8s.io"]
    daemon = private_containerd(root=new, binary_dir=_bin_dir(line))
    assert sorted(daemon.image_names("k8s.io")) == sorted(recorded["images"])
    rows = _check_rows(daemon, "k8s.io")
    for name, row in recorded["check"].items():
        assert rows[name]["STATUS"] == row["status"] and (rows[name]["UNPACKED"] == "true") == row["unpacked"], name
    ran = corpus.info["roots"][DISCARDED]["container"]
    run = daemon.ctr("run", "--rm", ran["image"], "ctrconv-discarded-check", *ran["command"],
                     namespace="k8s.io", check=False, timeout=120)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("line", LINES)
def test_export_of_discarded_layers_without_regeneration_fails_in_one_line(line, realnode_set_for, cli, tmp_path):
    """``--from-snapshots never``: the layers are not written again from the snapshots, so the
    export fails up front, saying why and what would work (the default regenerates them:
    tests/interop/test_export_regenerate.py)."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for(line)
    out = tmp_path / "x.tar"
    result = cli("export", "--root", str(corpus.root(DISCARDED)), "-n", "k8s.io", "--image",
                 corpus.image("oci")["ref"], "-o", str(out), "-q", "--from-snapshots", "never")
    assert result.code == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "discard_unpacked_layers" in result.stderr and "--from-snapshots auto" in result.stderr
    assert not out.exists()
