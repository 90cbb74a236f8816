"""Documents the target root holds are read from it (``TargetFirst``); one whose file there does
not hash to its digest is written again from the input, not trusted because a record names it:
an import "succeeded" over a corrupt manifest or config and the image stayed unusable
(``ctr images check``: error; a red-team run, 1.6 and 2.x, registry and archive inputs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ctrconv.sinks.containerd_root import copy_images_to_root
from support.layouts import LayoutBuilder, LayoutSource

BLOBS = ("io.containerd.content.v1.content", "blobs", "sha256")


@pytest.mark.parametrize("which", ["manifest", "config"])
def test_a_corrupt_document_in_the_root_is_written_again(which: str, tmp_path: Path) -> None:
    builder = LayoutBuilder(tmp_path / "layout")
    image = builder.image("reg.example/team/a:1", [{"etc/a": b"a\n"}])
    root = tmp_path / "root"
    copy_images_to_root(LayoutSource(builder.path), root)
    digest = image[which]["digest"]
    blob = root.joinpath(*BLOBS, digest.split(":")[1])
    good = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(good.replace(b"{", b" ", 1) if good.startswith(b"{") else bytes(len(good)))  # same size
    assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() != digest

    report = copy_images_to_root(LayoutSource(builder.path), root)

    assert blob.read_bytes() == good, report.warnings
    assert json.loads(blob.read_bytes())  # (a whole document again)


def test_a_directory_where_a_blob_belongs_is_named(tmp_path: Path) -> None:
    """A directory at a blob's path in the content store: the error named this import's temp
    file, gone by then (a red-team run); it names the blob path, as containerd does."""
    from ctrconv.errors import UnreadableContentError

    builder = LayoutBuilder(tmp_path / "layout")
    image = builder.image("reg.example/team/a:1", [{"etc/a": b"a\n"}])
    root = tmp_path / "root"
    blob = root.joinpath(*BLOBS, image["layers"][0]["digest"].split(":")[1])
    blob.mkdir(parents=True)
    with pytest.raises(UnreadableContentError) as caught:
        copy_images_to_root(LayoutSource(builder.path), root)
    assert str(blob) in str(caught.value) and ".ctrconv-tmp" not in str(caught.value)
