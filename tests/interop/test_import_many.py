"""Many archives, one transaction: ``import -i A -i B ...`` and ``import -i DIR``."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from ctrconv.bolt.reader import BoltFile

KEYS = ("bbx-oci", "bbx-docker", "bbx-zstd")
META = Path("io.containerd.metadata.v1.bolt") / "meta.db"


def _inputs(fixture_set) -> list[Path]:
    return [fixture_set.file(fixture_set.input(k)["path"]) for k in KEYS]


def _names(fixture_set) -> set[str]:
    return {n for k in KEYS for n in fixture_set.input(k)["names"]}


def _records(cli, root: Path) -> dict[str, str]:
    return {i["name"]: i["digest"] for i in cli("ls", "--root", str(root), "--json").json["images"]}


def test_several_inputs_are_one_commit_equal_to_separate_imports(fixture_set, cli, tmp_path, private_containerd):
    together, apart = tmp_path / "together", tmp_path / "apart"
    args = [a for p in _inputs(fixture_set) for a in ("-i", str(p))]
    result = cli("import", "--root", str(together), "-q", "--json", *args)
    assert result.code == 0, result.stderr
    assert {i["input"] for i in result.json["images"]} == {str(p) for p in _inputs(fixture_set)}
    with BoltFile(together / META) as db:
        assert db.meta.txid <= 2, "one meta.db commit for all inputs"
    for path in _inputs(fixture_set):
        assert cli("import", "--root", str(apart), "-q", "-i", str(path)).code == 0
    assert _records(cli, together) == _records(cli, apart)
    assert set(_records(cli, together)) == _names(fixture_set)
    text = cli("import", "--root", str(together), *args)
    assert text.code == 0
    assert all(line.split(": ", 1)[0] in {str(p) for p in _inputs(fixture_set)} for line in text.stdout.splitlines()
               if "already present" in line)
    daemon = private_containerd(root=together)
    rows = daemon.images_check("default")
    assert {r.ref for r in rows} == _names(fixture_set) and all(r.complete and r.unpacked for r in rows), rows


def test_a_directory_of_archives_is_every_archive_in_it(fixture_set, cli, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in _inputs(fixture_set)[:2]:
        shutil.copy(path, images / path.name)
    with open(_inputs(fixture_set)[2], "rb") as src, gzip.open(images / "zstd.tar.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)  # k3s-style compressed archive
    (images / "README").write_text("not an archive\n")
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-q", "-i", str(images))
    assert result.code == 0, result.stderr
    assert set(_records(cli, root)) == _names(fixture_set)
    meta = (root / META).read_bytes()
    again = cli("import", "--root", str(root), "-i", str(images))
    assert again.code == 0 and "already present" in again.stdout
    assert (root / META).read_bytes() == meta, "a re-run over the same inputs changes nothing"


def test_bad_input_sets_are_usage_errors(fixture_set, cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-i", str(empty))
    assert result.code == 2 and "directory of image archives" in result.stderr
    one = str(_inputs(fixture_set)[0])
    assert cli("import", "--root", str(root), "-i", one, "-i", one).code == 2
    assert cli("import", "--root", str(root), "-i", one, "-i", "-").code == 2
    assert not root.exists(), "a refused import leaves nothing"


def test_verify_existing_rehashes_blobs_the_namespace_already_records(fixture_set, cli, tmp_path):
    """By default a recorded blob of the right size is trusted (verified when written);
    --verify-existing hashes it and replaces a damaged one."""
    root = tmp_path / "root"
    archive = str(_inputs(fixture_set)[0])
    assert cli("import", "--root", str(root), "-q", "-i", archive).code == 0
    layer = fixture_set.image("default", "docker.io/library/bbx:oci")["manifests"][0]["layers"][0]["digest"]
    blob = root / "io.containerd.content.v1.content" / "blobs" / "sha256" / layer.split(":")[1]
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 0xFF]))
    trusting = cli("import", "--root", str(root), "-q", "--json", "-i", archive)
    assert trusting.code == 0 and trusting.json["blobs_written"] == 0
    assert cli("verify", "--root", str(root), "-q").code == 1
    checking = cli("import", "--root", str(root), "-q", "--json", "--verify-existing", "-i", archive)
    assert checking.code == 0 and checking.json["blobs_written"] == 1
    assert cli("verify", "--root", str(root), "-q").code == 0


def test_a_lost_blob_file_written_again_is_reported_as_such(fixture_set, cli, tmp_path):
    """A re-import that only puts a deleted blob file back commits no bolt file, and its report
    says so (it said "metadata completed: missing content records ... were added": a docs red
    team run, with meta.db byte for byte the same)."""
    root = tmp_path / "root"
    archive = str(_inputs(fixture_set)[0])
    assert cli("import", "--root", str(root), "-q", "-i", archive).code == 0
    layer = fixture_set.image("default", "docker.io/library/bbx:oci")["manifests"][0]["layers"][0]["digest"]
    (root / "io.containerd.content.v1.content" / "blobs" / "sha256" / layer.split(":")[1]).unlink()
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    before = meta.read_bytes()
    again = cli("import", "--root", str(root), "-i", archive)
    assert again.code == 0, again.stderr
    assert "1 missing blob file(s) written again; no record changed" in again.stdout, again.stdout
    assert "metadata completed" not in again.stdout
    assert meta.read_bytes() == before
    (root / "io.containerd.content.v1.content" / "blobs" / "sha256" / layer.split(":")[1]).unlink()
    as_json = cli("import", "--root", str(root), "-q", "--json", "-i", archive)
    assert as_json.json["written"] is True and as_json.json["metadata_written"] is False
    assert cli("verify", "--root", str(root), "-q").code == 0
    # a lost blob file and a lost record at once: the report names both
    (root / "io.containerd.content.v1.content" / "blobs" / "sha256" / layer.split(":")[1]).unlink()
    from support.damage import content_record_deleted
    content_record_deleted(root, fixture_set)
    both = cli("import", "--root", str(root), "-i", archive)
    assert "metadata completed" in both.stdout and "1 missing blob file(s) written again" in both.stdout, both.stdout


def test_name_needs_a_single_image(fixture_set, cli, tmp_path):
    args = [a for p in _inputs(fixture_set)[:2] for a in ("-i", str(p))]
    result = cli("import", "--root", str(tmp_path / "r"), "--name", "x/y:1", *args)
    assert result.code == 2 and "exactly one image" in result.stderr
