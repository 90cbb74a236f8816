"""One name given to two images of one archive: the last entry is what the name means (as ``ctr
images import`` of containerd 2.x ends), and the earlier one is not imported at all: it left its
manifest and config behind as labelled records nothing names, and the report listed it "added"
(found by a red-team run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.archives import with_index

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]


def test_the_last_image_of_a_name_is_imported_and_nothing_of_the_first(cli, fixture_set, tmp_path: Path) -> None:
    archive = tmp_path / "all.tar"
    subprocess.run([sys.executable, "-m", "ctrconv", "export", "--root", str(fixture_set.root), "--all", "-q",
                    "--ignore-lock", "-o", str(archive)], cwd=REPO, check=True)
    picked: list[dict] = []

    def one_name_twice(index: dict) -> None:
        digests = {e["digest"] for e in index["manifests"]}
        assert len(digests) >= 2, "the fixture holds two images of different targets"
        picked.extend(next(e for e in index["manifests"] if e["digest"] == d) for d in sorted(digests)[:2])
        index["manifests"] = list(picked)
        for entry in index["manifests"]:
            entry["annotations"] = {"io.containerd.image.name": "docker.io/library/twice:1",
                                    "org.opencontainers.image.ref.name": "1"}

    twice = with_index(archive, tmp_path / "twice.tar", one_name_twice)
    first, second = picked
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-i", str(twice), "-q", "--json", "--no-unpack")
    assert result.code == 0, result.stderr
    assert [i["name"] for i in result.json["images"]] == ["docker.io/library/twice:1"], result.json["images"]
    listed = cli("ls", "--root", str(root), "-A", "--json").json["images"]
    assert [(i["name"], i["digest"]) for i in listed] == [("docker.io/library/twice:1", second["digest"])]
    blobs = {p.name for p in (root / "io.containerd.content.v1.content" / "blobs" / "sha256").iterdir()}
    assert first["digest"].split(":")[1] not in blobs
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0
