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
