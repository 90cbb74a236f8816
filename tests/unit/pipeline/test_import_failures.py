"""A failed import leaves nothing behind: not even the skeleton of a root it created."""

from __future__ import annotations

from pathlib import Path

from hostile.images import image, member, tar


def test_failed_import_into_a_new_root_leaves_no_skeleton(tmp_path: Path, cli):
    # an absolute-path hardlink escape is refused while the layer is applied, i.e. after the
    # blobs went into the new content store
    layer = tar([member("etc/passwd-copy", b"1", linkname="/etc/passwd")])
    source = tmp_path / "bad.tar"
    source.write_bytes(image([layer]))
    root = tmp_path / "new-root"
    result = cli("import", "--root", str(root), "-i", str(source), "-q")
    assert result.code == 1, result.stderr
    assert result.stderr.startswith("ctrconv: error: ")
    assert not root.exists()


def test_failed_import_into_an_existing_empty_dir_keeps_the_dir(tmp_path: Path, cli):
    layer = tar([member("etc/passwd-copy", b"1", linkname="/etc/passwd")])
    source = tmp_path / "bad.tar"
    source.write_bytes(image([layer]))
    root = tmp_path / "existing"
    root.mkdir()
    assert cli("import", "--root", str(root), "-i", str(source), "-q").code == 1
    assert root.is_dir()


def test_max_layer_size_stops_a_decompression_bomb(tmp_path: Path, cli):
    layer = tar([member("zeros", data=bytes(8 << 20))])  # 8 MiB of zeros gzip to a few KiB
    source = tmp_path / "bomb.tar"
    source.write_bytes(image([layer]))
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-i", str(source), "-q", "--max-layer-size", "1M")
    assert result.code == 1
    assert "decompression limit" in result.stderr
    assert not root.exists()
    assert cli("import", "--root", str(root), "-i", str(source), "-q", "--max-layer-size", "16M").code == 0


def test_max_layer_size_must_be_a_size(tmp_path: Path, cli):
    result = cli("import", "--root", str(tmp_path / "r"), "-i", str(tmp_path / "x.tar"), "--max-layer-size", "lots")
    assert result.code == 2
    assert "invalid size" in result.stderr
