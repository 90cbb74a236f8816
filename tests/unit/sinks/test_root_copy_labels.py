"""A root-to-root copy (``export --format containerd-root``) keeps the image records' own
labels (found by a red-team run: user labels and CRI's ``managed`` were dropped; an archive
carries none, so only this path has any)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ctrconv.bolt.reader import BoltFile, read_tree
from ctrconv.bolt.writer import write_bolt
from ctrconv.containerd.records import read_map
from support.small_root import small_root  # noqa: F401  (fixture)

META = ("io.containerd.metadata.v1.bolt", "meta.db")
LABELS = {"example.com/owner": "team-\u00e9", "big": "x" * 4000, "io.cri-containerd.pinned": "pinned"}


def _image_labels(root: Path, namespace: str) -> dict[str, dict[str, str]]:
    with BoltFile(root.joinpath(*META)) as db:
        images = db.bucket(b"v1", namespace.encode(), b"images")
        return {key.decode(): read_map(images.bucket(key).bucket(b"labels")) for key, _ in images.buckets()}


def test_a_root_copy_keeps_the_image_labels(cli, small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(small_root), str(root)], check=True)
    tree = read_tree(root.joinpath(*META))
    images = tree.bucket(b"v1", b"default", b"images")
    for _, record in images.buckets():
        labels = record.bucket(b"labels", create=True)
        for key, value in LABELS.items():
            labels.put(key.encode(), value.encode())
    write_bolt(root.joinpath(*META), tree)
    source = _image_labels(root, "default")
    assert source and all(labels == LABELS for labels in source.values())

    for namespace in ("default", "k8s.io"):
        new = tmp_path / f"new-{namespace}"
        result = cli("export", "--root", str(root), "--all", "-q", "--format", "containerd-root", "-o", str(new),
                     "--target-namespace", namespace, "--no-unpack")
        assert result.code == 0, result.stderr
        copied = _image_labels(new, namespace)
        for name, labels in source.items():
            assert {k: v for k, v in copied[name].items() if k in LABELS} == labels, (namespace, name, copied[name])
        if namespace == "k8s.io":  # CRI's own label is added beside them
            assert all(labels.get("io.cri-containerd.image") == "managed" for labels in copied.values())
