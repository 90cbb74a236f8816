"""verify_root with the bolt structure check in a forked child reports exactly what the one-
process reading reports: the same problems in the same order, the same stats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctrconv.bolt import BoltFile
from ctrconv.bolt import _structs as S
from ctrconv.verify import root as verify_root_module
from ctrconv.verify.root import verify_root
from support.scale_root import build_root


def _damaged(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    build_root(root, 40, base_layers=4)
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    with BoltFile(meta) as db:
        page_size, hwm = db.page_size, db.meta.pgid
    leaves = []
    with open(meta, "rb") as f:
        for pgid in range(2, hwm):
            f.seek(pgid * page_size)
            hid, flags, _, _ = S.PAGE_HEADER.unpack(f.read(S.PAGE_HEADER_SIZE))
            if hid == pgid and flags == S.LEAF_PAGE:
                leaves.append(pgid)
    with open(meta, "r+b") as f:  # a leaf in the middle of the records: bolt and record problems
        f.seek(leaves[len(leaves) // 2] * page_size)
        f.write(bytes(page_size))
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    os.unlink(blobs / sorted(os.listdir(blobs))[7])
    return root


@pytest.mark.parametrize("hash_contents", [False, True])
def test_forked_structure_check_reports_as_one_process(tmp_path, monkeypatch, hash_contents):
    root = _damaged(tmp_path)
    monkeypatch.setattr(verify_root_module, "can_split", lambda: False)
    alone = verify_root(root, hash_contents=hash_contents).to_json()
    forked = []
    real = verify_root_module.map_halves
    monkeypatch.setattr(verify_root_module, "can_split", lambda: True)
    monkeypatch.setattr(verify_root_module, "map_halves", lambda fn, items: forked.append(1) or real(fn, items))
    split = verify_root(root, hash_contents=hash_contents).to_json()
    assert forked == [1]
    kinds = [p["kind"] for p in alone["problems"]]
    assert "bolt" in kinds and set(kinds) - {"bolt"}, kinds  # both kinds, so their order is tested
    assert split == alone
    assert list(split["stats"]) == list(alone["stats"])  # same order, "bolt files" first


def test_a_namespace_containerd_cannot_name_is_a_problem(tmp_path) -> None:
    """A namespace bucket whose name containerd refuses is reported (``rebuild`` drops it),
    once, whichever namespaces are asked for; an image name that is no UTF-8 in a sound
    namespace is no problem by itself."""
    from ctrconv import api
    from support.odd_names import ODD_NAMESPACE_TEXT, odd_names_root

    root, _ = odd_names_root(tmp_path / "root")
    for namespaces in (None, ["default"]):
        report = api.verify_root(root, namespaces)
        odd = [p for p in report.problems if p.kind == "invalid-namespace"]
        assert [p.object for p in odd] == [f"namespace {ODD_NAMESPACE_TEXT}"], report.problems


@pytest.mark.parametrize("hash_contents", [False, True])
def test_label_findings_stand_with_their_record_and_none_for_an_invalid_digest(tmp_path, hash_contents) -> None:
    """A record's non-UTF-8 label is reported after the record's missing blob, as the record's
    other findings are (the labels are checked as records are decoded, the blobs later); a
    record under an invalid digest is reported as that alone: containerd skips the record, so
    its labels stop nothing (a red-team run: 1.7 listed and checked everything)."""
    from ctrconv.bolt import read_tree
    from ctrconv.bolt.writer import write_bolt
    from ctrconv.sinks.containerd_root import records as R

    root = tmp_path / "root"
    build_root(root, 4, base_layers=2)
    meta = root / "io.containerd.metadata.v1.bolt" / "meta.db"
    tree = read_tree(meta)
    ns = R.namespace_bucket(tree, "default")
    missing = "sha256:" + "e" * 64
    R.merge_blob(ns, missing, 10, {"bad-\udcff": "x"}, 1)
    R.merge_blob(ns, "sha256:" + "A" * 64, 10, {"bad-\udcfe": "y"}, 1)
    write_bolt(meta, tree, mode=0o644)
    found = [(p.kind, p.object) for p in verify_root(root, hash_contents=hash_contents).problems if p.severity == "error"]
    assert found == [("invalid-digest", "blob sha256:" + "A" * 64), ("missing-blob", f"blob {missing}"),
                     ("invalid-label", f"blob {missing}")], found
