"""``--image`` by ID on real nodes: the IDs ctrconv computes are the ones CRI reports.

The real-node corpus (``fixtures/build_realnode.py``) pulled every image through each line's
CRI plugin (``k8s.io``: three names per image) and with ``ctr images pull`` (``default``), and
recorded the image ID CRI returned. Every form a Kubernetes user copies from ``crictl images``
must find those names offline, on roots containerd itself wrote.
"""

from __future__ import annotations

from typing import Any

import pytest

from ctrconv.containerd.root import ContainerdRoot
from ctrconv.pipeline.resolve import image_ids, resolve_images
from support.realnode_set import LINES, RealnodeSet


@pytest.fixture(params=LINES)
def corpus(request: pytest.FixtureRequest, realnode_set_for) -> RealnodeSet:
    return realnode_set_for(request.param)


def _resolve(root: ContainerdRoot, namespace: str, ref: str) -> list[str]:
    with root.open_metadata() as meta:
        return sorted(r.name for r in resolve_images(meta, root.content, namespace, [ref]))


def _names(rec: dict[str, Any], namespace: str) -> list[str]:
    return sorted(rec["roots"]["node"]["names"].get(namespace, []))


def test_cri_ids_and_digest_references_find_the_cri_names(corpus: RealnodeSet) -> None:
    root = ContainerdRoot(corpus.node_root)
    for rec in corpus.images():
        image_id = rec["cri_image_id"]
        names = _names(rec, "k8s.io")
        assert image_id in names and rec["ref"] in names, rec["key"]
        with root.open_metadata() as meta:
            record = meta.image("k8s.io", rec["ref"])
            assert record is not None
            assert image_ids(root.content, record) == [image_id], rec["key"]
        hexid = image_id.split(":", 1)[1]
        for ref in (hexid[:12], hexid, "sha256:" + hexid[:20]):
            assert _resolve(root, "k8s.io", ref) == names, (rec["key"], ref)
        # the full sha256:<id> is CRI's own alias record: an exact name
        assert _resolve(root, "k8s.io", image_id) == [image_id]
        # repo@digest finds the tagged image where only the tag is stored (default: ctr pull)
        digest_ref = f"{rec['repository']}@{rec['target']['digest']}"
        default_names = _names(rec, "default")
        if default_names:
            assert _resolve(root, "default", digest_ref) == default_names, rec["key"]
            assert _resolve(root, "default", hexid[:12]) == default_names, rec["key"]


def test_cli_export_by_short_id_from_a_cri_node(corpus: RealnodeSet, tmp_path, cli) -> None:
    rec = corpus.image("index")
    out = tmp_path / "index.tar"
    res = cli("export", "--root", str(corpus.node_root), "-n", "k8s.io", "--image",
              rec["cri_image_id"].split(":", 1)[1][:12], "-o", str(out), "--json")
    assert res.code == 0, res.stderr
    assert sorted(i["name"] for i in res.json["images"]) == _names(rec, "k8s.io")
