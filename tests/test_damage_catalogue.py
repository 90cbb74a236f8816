"""verify and rebuild over the whole damage catalogue; a real containerd judges every rebuild."""

from __future__ import annotations

import json

import pytest

from ctrconv.oci import platform as plat
from support.damage import CATALOGUE, DEEP_ONLY


@pytest.mark.parametrize("damage", sorted(CATALOGUE))
def test_verify_names_the_broken_thing(damage, fixture_set, tmp_root_copy, cli):
    if damage == "meta-deleted":
        CATALOGUE[damage](tmp_root_copy, fixture_set)
        result = cli("verify", "--root", str(tmp_root_copy), "-q")
        assert result.code == 2 and "meta.db" in result.stderr
        return
    named = CATALOGUE[damage](tmp_root_copy, fixture_set)
    deep = ["--deep"] if damage in DEEP_ONLY else []
    result = cli("verify", "--root", str(tmp_root_copy), "-A", "-q", "--json", *deep)
    assert result.code == 1, result.stdout
    assert "Traceback" not in result.stderr
    problems = json.dumps(result.json["problems"])
    assert named in problems, (named, problems[:2000])


def test_verify_of_host_only_multiplatform_root_is_clean(fixture_set, cli):
    result = cli("verify", "--root", str(fixture_set.root), "-A", "-q")
    assert result.code == 0
    assert "clean" in result.stdout.splitlines()[-1]


def _runs_here(platforms: list[str]) -> bool:
    host = plat.default_matcher()
    return any(host.match(plat.parse_platform(p)) for p in platforms)


def _verify_clean(cli, root):
    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert result.code == 0, json.dumps(result.json["problems"], indent=1)[:3000]


@pytest.mark.parametrize("damage", sorted(CATALOGUE))
def test_rebuild_twice_then_containerd_accepts(damage, fixture_set, tmp_root_copy, cli, private_containerd):
    CATALOGUE[damage](tmp_root_copy, fixture_set)
    survivors = set()
    for _ in range(2):  # a second rebuild must not make anything worse
        result = cli("rebuild", "--root", str(tmp_root_copy), "-q", "--json")
        assert result.code == 0, result.stderr
        _verify_clean(cli, tmp_root_copy)
        listed = cli("ls", "--root", str(tmp_root_copy), "-n", "default", "--json").json["images"]
        names = {i["name"] for i in listed if i["complete"]}
        runnable = {i["name"] for i in listed if i["complete"] and _runs_here(i["platforms"])}
        if survivors:
            assert names == survivors
        survivors = names
    assert survivors, "every image was lost"
    daemon = private_containerd(root=tmp_root_copy)
    rows = {r.ref: r for r in daemon.images_check("default")}
    for name in survivors:
        # containerd unpacks (and checks unpacked) only what runs on this host
        assert rows[name].complete and rows[name].unpacked is (name in runnable), rows[name]
    for name in sorted({min(runnable), max(runnable)}):  # first and last: recovered names sort last
        run = daemon.ctr("run", "--rm", name, "t1", "/bin/busybox", "ls", "/bin/busybox", check=False)
        assert run.returncode == 0, (name, run.stderr)
    snapshots_before = daemon.ctr("snapshots", "ls").stdout
    daemon.force_gc("default")
    daemon.stop()
    daemon = private_containerd(root=tmp_root_copy)
    assert {r.ref for r in daemon.images_check("default")} >= survivors
    assert daemon.ctr("snapshots", "ls").stdout == snapshots_before
