"""verify and rebuild over the whole damage catalogue; a real containerd judges every rebuild."""

from __future__ import annotations

import json

import pytest

from ctrconv.oci import platform as plat
from support.damage import BENIGN, CATALOGUE, DEEP_ONLY


@pytest.mark.parametrize("damage", sorted(CATALOGUE))
def test_verify_names_the_broken_thing(damage, fixture_set, tmp_root_copy, cli):
    if damage in ("meta-deleted", "meta-is-a-directory"):
        CATALOGUE[damage](tmp_root_copy, fixture_set)
        result = cli("verify", "--root", str(tmp_root_copy), "-q")
        # damage rebuild repairs (exit 1), not "not a containerd root" (exit 2): its stores are there
        assert result.code == 1 and "PROBLEM missing-meta-db" in result.stdout, result.stdout + result.stderr
        return
    named = CATALOGUE[damage](tmp_root_copy, fixture_set)
    deep = ["--deep"] if damage in DEEP_ONLY else []
    result = cli("verify", "--root", str(tmp_root_copy), "-A", "-q", "--json", *deep)
    assert result.code == 1, result.stdout
    assert "Traceback" not in result.stderr
    problems = json.dumps(result.json["problems"])
    assert named in problems, (named, problems[:2000])


@pytest.mark.parametrize("state", sorted(BENIGN))
def test_verify_reports_what_containerd_repairs_itself_as_info(state, fixture_set, tmp_root_copy, cli):
    named = BENIGN[state](tmp_root_copy, fixture_set)
    result = cli("verify", "--root", str(tmp_root_copy), "-A", "-q", "--json")
    assert result.code == 0, result.json["problems"]
    assert named in json.dumps(result.json["info"])


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
    """Judged per namespace: damage may take a whole namespace with it (a random page can be
    the root page of ``v1/default``); what survives anywhere must be whole for containerd."""
    CATALOGUE[damage](tmp_root_copy, fixture_set)
    survivors: dict[str, set[str]] = {}
    runnable: dict[str, set[str]] = {}
    for _ in range(2):  # a second rebuild must not make anything worse
        result = cli("rebuild", "--root", str(tmp_root_copy), "-q", "--json")
        assert result.code == 0, result.stderr
        _verify_clean(cli, tmp_root_copy)
        listed = cli("ls", "--root", str(tmp_root_copy), "-A", "--json").json["images"]
        names: dict[str, set[str]] = {}
        runnable = {}
        for i in listed:
            if i["complete"]:
                names.setdefault(i["namespace"], set()).add(i["name"])
                if _runs_here(i["platforms"]):
                    runnable.setdefault(i["namespace"], set()).add(i["name"])
        if survivors:
            assert names == survivors
        survivors = names
    assert any(survivors.values()), "every image was lost"
    daemon = private_containerd(root=tmp_root_copy)
    snapshots_before = {}
    for ns, kept in survivors.items():
        rows = {r.ref: r for r in daemon.images_check(ns)}
        for name in kept:
            # containerd unpacks (and checks unpacked) only what runs on this host
            assert rows[name].complete and rows[name].unpacked is (name in runnable.get(ns, set())), rows[name]
        for name in sorted({min(runnable[ns]), max(runnable[ns])}) if runnable.get(ns) else []:
            run = daemon.ctr("run", "--rm", name, "t1", "/bin/busybox", "ls", "/bin/busybox", namespace=ns, check=False)
            assert run.returncode == 0, (ns, name, run.stderr)
        snapshots_before[ns] = daemon.ctr("snapshots", "ls", namespace=ns).stdout
        daemon.force_gc(ns)
    daemon.stop()
    daemon = private_containerd(root=tmp_root_copy)
    for ns, kept in survivors.items():
        assert {r.ref for r in daemon.images_check(ns)} >= kept
        assert daemon.ctr("snapshots", "ls", namespace=ns).stdout == snapshots_before[ns]
