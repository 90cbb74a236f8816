"""verify's image checks split over two processes (``SPLIT_FROM``, lowered here) report exactly
what one process reports: the same problems in the same order, the same stats in the same
order; a record that does not read is reported after the images before it, as the loop did."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctrconv import forked
from ctrconv.errors import CtrconvError
from ctrconv.verify import root as verify_root_module
from ctrconv.verify.root import verify_root
from support.scale_root import build_root

IMAGES = 40


def _damaged(tmp_path: Path) -> Path:
    """Every 5th blob file deleted: images in both halves of the list have findings."""
    root = tmp_path / "root"
    build_root(root, IMAGES, base_layers=4)
    blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    for name in sorted(os.listdir(blobs))[::5]:
        os.unlink(blobs / name)
    return root


def _split(monkeypatch: pytest.MonkeyPatch, splits: list[int]) -> None:
    def recording(fn, items):
        splits.append(len(items))
        return forked.map_halves(fn, items)

    monkeypatch.setattr(verify_root_module, "SPLIT_FROM", 2)
    monkeypatch.setattr(verify_root_module, "can_split", lambda: True)
    monkeypatch.setattr(verify_root_module, "map_halves", recording)


def _image_objects(report: dict) -> list[str]:
    return [p["object"] for p in report["problems"] + report["info"] if p["object"].startswith("image ")]


@pytest.mark.parametrize("hash_contents", [False, True])
def test_split_image_checks_report_as_one_process(tmp_path, monkeypatch, hash_contents):
    root = _damaged(tmp_path)
    monkeypatch.setattr(verify_root_module, "can_split", lambda: False)
    alone = verify_root(root, hash_contents=hash_contents).to_json()
    splits: list[int] = []
    _split(monkeypatch, splits)
    split = verify_root(root, hash_contents=hash_contents).to_json()
    assert IMAGES in splits  # the image checks were split (the other split: the bolt check)
    images = sorted({o for o in _image_objects(alone)})
    names = sorted(o.split("/", 1)[1] for o in images)
    # findings from images of both halves (the list is in key order: the names sort the same)
    assert names and names[0] < "registry.example.com/team10" < names[-1], names
    assert split == alone
    assert list(split["stats"]) == list(alone["stats"])
    assert split["stats"]["images"] == IMAGES


def test_unreadable_image_record_comes_after_the_images_before_it(tmp_path, monkeypatch):
    """The walk of the records stops after ten: the ten are checked, its error comes after them."""
    root = _damaged(tmp_path)
    original = verify_root_module.image_elements
    kept: list[str] = []

    def unreadable_after_ten(meta, namespace):
        stored, elements, _ = original(meta, namespace)
        kept.extend(f"image {namespace}/{stored.decode(e).name}" for e in elements[:10])
        return stored, elements[:10], CtrconvError("image default/x: bad record")

    monkeypatch.setattr(verify_root_module, "image_elements", unreadable_after_ten)
    splits: list[int] = []
    _split(monkeypatch, splits)
    report = verify_root(root, hash_contents=False).to_json()
    assert 10 in splits
    kinds = [(p["kind"], p["object"]) for p in report["problems"]]
    last = kinds.index(("unreadable-record", "default/images"))
    objects = _image_objects(report)
    assert objects and set(objects) <= set(kept)  # only the images read were checked
    assert all(kinds.index(k) < last for k in kinds if k[1].startswith("image "))
    assert report["stats"]["images"] == 10


@pytest.mark.parametrize("bad", [3, 25, 39])
@pytest.mark.parametrize("split", [False, True])
def test_a_record_that_does_not_decode_stops_the_checks_there(tmp_path, monkeypatch, bad, split):
    """Records are decoded where they are checked (in either process when split): the first
    that does not decode is reported once, after the images before it, and no image after it
    is checked or counted; the walk's own error (after every record) is not reported then."""
    from ctrconv.containerd import imagerecords
    from ctrconv.errors import FormatError

    root = _damaged(tmp_path)
    original_decode = imagerecords.StoredImages.decode
    original = verify_root_module.image_elements
    order: list[bytes] = []

    def with_walk_error(meta, namespace):
        stored, elements, _ = original(meta, namespace)
        order.extend(e[1] for e in elements)
        return stored, elements, CtrconvError("the walk's error")

    def decode(self, element):
        if element[1] == order[bad]:
            raise FormatError(f"image {self.namespace}/{element[1].decode()}: bad field")
        return original_decode(self, element)

    monkeypatch.setattr(verify_root_module, "image_elements", with_walk_error)
    monkeypatch.setattr(imagerecords.StoredImages, "decode", decode)
    splits: list[int] = []
    if split:
        _split(monkeypatch, splits)
    else:
        monkeypatch.setattr(verify_root_module, "can_split", lambda: False)
    report = verify_root(root, hash_contents=False).to_json()
    assert (IMAGES in splits) == split
    unreadable = [p for p in report["problems"] if p["kind"] == "unreadable-record" and p["object"] == "default/images"]
    assert [p["message"] for p in unreadable] == [f"image default/{order[bad].decode()}: bad field"]
    checked = {o.split("/", 1)[1] for o in _image_objects(report)}
    assert checked <= {name.decode() for name in order[:bad]}
    assert report["stats"]["images"] == bad
    kinds = [(p["kind"], p["object"]) for p in report["problems"]]
    last = kinds.index(("unreadable-record", "default/images"))
    assert all(kinds.index(k) < last for k in kinds if k[1].startswith("image "))


def test_snapshot_records_are_read_once_and_an_unreadable_one_reported_by_each_check(tmp_path, monkeypatch):
    """The namespace check, the snapshotter cross-check and the chain check share one reading;
    a record that does not read is still reported as each of them reported it (the problems
    and order asserted here are what three separate readings gave, checked against that tree)."""
    from ctrconv.containerd.metadata import MetadataDB

    root = tmp_path / "root"
    build_root(root, IMAGES, base_layers=4)
    real = MetadataDB.snapshots
    reads: list[tuple[str, str]] = []

    def unreadable_fourth(self, namespace, snapshotter, **kwargs):
        reads.append((namespace, snapshotter))
        for i, rec in enumerate(real(self, namespace, snapshotter, **kwargs)):
            if i == 3:
                raise CtrconvError(f"snapshot {namespace}/{snapshotter}/x: bad record")
            yield rec

    monkeypatch.setattr(MetadataDB, "snapshots", unreadable_fourth)
    monkeypatch.setattr(verify_root_module, "can_split", lambda: False)
    report = verify_root(root, hash_contents=False).to_json()
    assert reads == [("default", "overlayfs")]
    unreadable = [(i, p["object"], p["location"]) for i, p in enumerate(report["problems"]) if p["kind"] == "unreadable-record"]
    # first by the namespace check (before every blob and image finding), then by the
    # snapshotter and chain checks (one location: one problem)
    assert unreadable[0] == (0, "default/snapshots/overlayfs", "meta.db v1/default")
    assert [u[1:] for u in unreadable[1:]] == [("default/snapshots/overlayfs", "meta.db")]
    assert report["stats"]["snapshots"] == 3
