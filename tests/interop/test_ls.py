"""``ctrconv ls`` against ``ctr images ls`` on the same root; reading never changes a root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


from ctrconv.inventory import human_size
from support.daemon import parse_table


def test_human_size_matches_ctr_format():
    assert human_size(557) == "557.0 B"
    assert human_size(1994752) == "1.9 MiB"
    assert human_size(1024) == "1.0 KiB"
    assert human_size(0) == "0.0 B"


def test_ls_matches_ctr_images_ls(fixture_set, cli):
    for namespace in fixture_set.info["namespaces"]:
        ctr_rows = parse_table((fixture_set.refs / "images-ls" / f"{namespace}.txt").read_text())
        result = cli("ls", "--root", str(fixture_set.root), "-n", namespace, "--json")
        assert result.code == 0, result.stderr
        ours = {i["name"]: i for i in result.json["images"]}
        assert sorted(ours) == sorted(r["REF"] for r in ctr_rows)
        for row in ctr_rows:
            image = ours[row["REF"]]
            assert image["media_type"] == row["TYPE"]
            assert image["digest"] == row["DIGEST"]
            assert human_size(image["size"]) == row["SIZE"]
            assert ",".join(image["platforms"]) == row["PLATFORMS"]
            assert image["complete"], image


def test_ls_all_namespaces_text(fixture_set, cli):
    result = cli("ls", "--root", str(fixture_set.root), "-A")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "REF", "TYPE"]
    assert any(line.startswith("k8s.io") for line in lines)


def _state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: type, size, mtime, and content hash of regular files."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            digest = None
            if path.is_file() and not path.is_symlink():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def test_reading_commands_never_change_the_root(tmp_root_copy, tmp_path, cli):
    before = _state(tmp_root_copy)
    root = str(tmp_root_copy)
    assert cli("ls", "--root", root, "-A").code == 0
    assert cli("ls", "--root", root, "--json").code == 0
    for db in tmp_root_copy.glob("io.containerd.*/*.db"):
        assert cli("dump", str(db)).code == 0
    assert cli("verify", "--root", root, "-A", "-q", "--deep").code == 0
    assert cli("export", "--root", root, "--all", "-o", str(tmp_path / "all.tar"), "-q").code == 0
    assert cli("export", "--root", root, "--all", "-o", str(tmp_path / "dir"), "--link", "-q").code == 0
    assert cli("export", "--root", root, "--image", "bbx:oci", "-o", str(tmp_path / "r"), "-f", "containerd-root", "-q").code == 0
    assert _state(tmp_root_copy) == before


def test_locked_root_needs_ignore_lock(tmp_root_copy, private_containerd, cli):
    daemon = private_containerd(root=tmp_root_copy)
    names = daemon.image_names("default")
    result = cli("ls", "--root", str(tmp_root_copy))
    assert result.code == 1
    assert "locked by a running containerd" in result.stderr
    result = cli("ls", "--root", str(tmp_root_copy), "--ignore-lock", "--json")
    assert result.code == 0, result.stderr
    assert sorted(i["name"] for i in result.json["images"]) == sorted(names)


def test_not_a_root(tmp_path, cli):
    result = cli("ls", "--root", str(tmp_path))
    assert result.code == 2
    assert "not a containerd root" in result.stderr
    result = cli("ls", "--root", str(tmp_path / "missing"))
    assert result.code == 2


def test_bad_namespace_is_a_usage_error(fixture_set, cli):
    result = cli("ls", "--root", str(fixture_set.root), "-n", "../x")
    assert result.code == 2


def test_completeness_is_judged_for_the_requested_platform(fixture_set, cli):
    other = next(p for p in ("linux/arm64", "linux/amd64") if p != fixture_set.info["host_platform"])
    result = cli("ls", "--root", str(fixture_set.root), "--platform", other, "--json")
    assert result.code == 0, result.stderr
    by_name = {i["name"]: i for i in result.json["images"]}
    # :multi was imported with all platforms, :sparse only with the host's
    assert by_name["docker.io/library/bbx:multi"]["complete"]
    assert not by_name["docker.io/library/bbx:sparse"]["complete"]
    assert by_name["docker.io/library/bbx:sparse"]["missing"]
