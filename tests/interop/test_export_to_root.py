"""``ctrconv export --format containerd-root``: root -> root and namespace -> namespace."""

from __future__ import annotations



def test_root_to_new_root_runs_in_containerd(fixture_set, tmp_path, cli, private_containerd):
    target = tmp_path / "target"
    result = cli(
        "export", "--root", str(fixture_set.root), "-n", "k8s.io", "--image", "bbx:docker", "--image", "bbx:multi",
        "-o", str(target), "--format", "containerd-root", "--target-namespace", "prod", "--json", "-q",
    )
    assert result.code == 0, result.stderr
    assert {i["name"] for i in result.json["images"]} == {"docker.io/library/bbx:docker", "docker.io/library/bbx:multi"}
    assert cli("verify", "--root", str(target), "-A", "-q").code == 0
    daemon = private_containerd(root=target)
    rows = {r.ref: r for r in daemon.images_check("prod")}
    assert rows["docker.io/library/bbx:docker"].complete and rows["docker.io/library/bbx:docker"].unpacked
    run = daemon.ctr("run", "--rm", "docker.io/library/bbx:docker", "t1", "/bin/busybox", "ls", "/bin", namespace="prod", check=False)
    assert run.returncode == 0, run.stderr
    daemon.force_gc("prod")
    assert {r.ref for r in daemon.images_check("prod")} == set(rows)


def test_namespace_to_namespace_in_the_same_root(tmp_root_copy, cli, private_containerd):
    result = cli(
        "export", "--root", str(tmp_root_copy), "--image", "bbx:zstd", "-o", str(tmp_root_copy),
        "--format", "containerd-root", "--target-namespace", "copy", "-q",
    )
    assert result.code == 0, result.stderr
    listed = cli("ls", "--root", str(tmp_root_copy), "-A", "--json").json["images"]
    assert {(i["namespace"], i["name"]) for i in listed} >= {("copy", "docker.io/library/bbx:zstd"), ("default", "docker.io/library/bbx:zstd")}
    assert cli("verify", "--root", str(tmp_root_copy), "-A", "-q").code == 0
    daemon = private_containerd(root=tmp_root_copy)
    assert all(r.complete and r.unpacked for r in daemon.images_check("copy"))


def test_unknown_image_is_a_usage_error(fixture_set, tmp_path, cli):
    result = cli("export", "--root", str(fixture_set.root), "--image", "nope:1", "-o", str(tmp_path / "t"), "--format", "containerd-root")
    assert result.code == 2
    assert not (tmp_path / "t").exists()
