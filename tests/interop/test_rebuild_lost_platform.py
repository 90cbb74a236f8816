"""A lost manifest of an index's platform, on a real node where namespaces pulled different
platforms of the same index (the corpus: ``default`` and ``k8s.io`` the host's, ``other``
linux/arm64 only). Found by a red-team run:

* the host manifest gone: ``rebuild`` failed in ``default`` ("the input lacks sha256:..."),
  with ``-o`` and in place, where it left the root half-rebuilt and every re-run failed alike;
* ``other``'s arm64 manifest gone: ``rebuild`` turned ``other``'s image into a host image made
  of ``default``'s blobs and called those records "lost".

An index whose every platform a namespace pulled lost its content is dropped there, as a lost
single-platform manifest is; the namespaces that pulled another platform keep theirs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctrconv.bolt.reader import read_tree
from ctrconv.containerd import schema as K
from support.daemon import PrivateContainerd

pytestmark = pytest.mark.interop

META = ("io.containerd.metadata.v1.bolt", "meta.db")
BLOBS = ("io.containerd.content.v1.content", "blobs", "sha256")


def _index_names(root: Path) -> dict[str, list[str]]:
    tree = read_tree(root.joinpath(*META))
    names: dict[str, list[str]] = {}
    for ns in (b"default", b"k8s.io", b"other"):
        images = tree.bucket(K.V1, ns, K.IMAGES)
        names[ns.decode()] = sorted(k.decode() for k in (images.entries if images else {}) if b"/index" in k)
    return names


def _recorded(root: Path, namespace: bytes) -> set[str]:
    blobs = read_tree(root.joinpath(*META)).bucket(K.V1, namespace, K.CONTENT, K.BLOB)
    return {k.decode() for k in blobs.entries} if blobs is not None else set()


def _lose(realnode_set_for, tmp_path: Path, platform: str) -> tuple[Path, dict]:
    corpus = realnode_set_for("1.6")
    root = corpus.copy_root("node", tmp_path / "node")
    manifests = corpus.image("index")["platform_manifests"]
    os.unlink(root.joinpath(*BLOBS, manifests[platform]["manifest"].split(":", 1)[1]))
    return root, manifests


def test_the_host_manifest_lost_drops_the_image_where_it_was_pulled_and_keeps_the_rest(realnode_set_for, cli,
                                                                                       tmp_path):
    root, _ = _lose(realnode_set_for, tmp_path, "linux/amd64")
    before = _index_names(root)
    assert before["default"] and before["k8s.io"] and before["other"]
    verify = cli("verify", "--root", str(root), "-A", "-q", "--json")
    assert verify.code == 1
    # the platform default never pulled (on disk: other's) is no missing record: information
    kinds = {p["kind"] for p in verify.json["problems"] if p["object"].startswith("image default/")}
    assert kinds == {"missing-blob", "no-platform"}, verify.json["problems"]
    assert any(i["kind"] == "absent-platform" and "linux/arm64" in i["message"] and i["object"].startswith("image default/")
               for i in verify.json["info"])

    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
    assert result.code == 0, result.stderr
    dropped = {d["object"] for d in result.json["dropped"] if d["kind"] == "image"}
    assert {f"image default/{n}" for n in before["default"]} <= dropped
    assert {f"image k8s.io/{n}" for n in before["k8s.io"]} <= dropped
    after = _index_names(tmp_path / "new")
    assert after == {"default": [], "k8s.io": [], "other": before["other"]}
    assert cli("verify", "--root", str(tmp_path / "new"), "-A", "-q").code == 0

    # in place: the same, in one run (it had stopped half-way, and every re-run failed alike)
    result = cli("rebuild", "--root", str(root), "-q")
    assert result.code == 0, result.stderr
    assert _index_names(root) == after
    assert cli("verify", "--root", str(root), "-A", "-q").code == 0
    with PrivateContainerd(root=root, workdir=tmp_path) as daemon:
        for namespace in ("default", "k8s.io"):
            rows = daemon.images_check(namespace)
            assert rows and all(row.complete for row in rows), (namespace, rows)


def test_a_namespace_s_only_platform_lost_is_not_replaced_by_another_namespace_s(realnode_set_for, cli, tmp_path):
    root, manifests = _lose(realnode_set_for, tmp_path, "linux/arm64")
    host = manifests["linux/amd64"]
    assert host["manifest"] not in _recorded(root, b"other")

    result = cli("rebuild", "--root", str(root), "-o", str(tmp_path / "new"), "-q", "--json")
    assert result.code == 0, result.stderr
    new = tmp_path / "new"
    assert _index_names(new)["other"] == []
    assert not {host["manifest"], host["config"]} & _recorded(new, b"other"), "another namespace's platform taken"
    assert not [r for r in result.json["restored"] if r["object"].startswith("content other/")], result.json["restored"]
    assert _index_names(new)["default"] == _index_names(root)["default"]
    assert cli("verify", "--root", str(new), "-A", "-q").code == 0

