"""The layer tarball builder the layer tests share (tests/support/layer_tars.py) checks itself."""

from __future__ import annotations

import gzip
import io
import tarfile

from support.layer_tars import LayerTar, gzip_members


def test_builder_writes_pax_xattrs_and_devices() -> None:
    raw = (LayerTar().dir("d", xattrs={"user.a": b"\xff\x00"})
           .device("d/null", tarfile.CHRTYPE, 1, 3).whiteout("d/x").data())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["d", "d/null", "d/.wh.x"]
    value = members[0].pax_headers["SCHILY.xattr.user.a"]
    assert value.encode("utf-8", "surrogateescape") == b"\xff\x00"
    assert (members[1].devmajor, members[1].devminor) == (1, 3)


def test_gzip_members_are_several() -> None:
    packed = gzip_members(b"x" * 1000, 3)
    assert packed.count(b"\x1f\x8b\x08") >= 3
    assert gzip.decompress(packed) == b"x" * 1000
