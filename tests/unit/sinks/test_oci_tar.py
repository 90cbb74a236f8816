"""The tar sinks' file output (``ctrconv.sinks.oci_tar.TarSink``): blobs copied by the kernel
with their digest verdicts settled before the rename, the writeback helper ended before the
fsync, and nothing left behind when a verdict fails or the export is aborted."""

from __future__ import annotations

import tarfile
import threading
from pathlib import Path
from typing import Any, Sequence

import pytest

from ctrconv.digest import Digest
from ctrconv.errors import DigestMismatchError
from ctrconv.sinks.base import ExportedImage, blob_path
from ctrconv.sinks.oci_tar import TarSink
from ctrconv.streams import BACKGROUND_HASH_MIN, VerifyingReader


class _Bare(TarSink):
    """The shared mechanics only: no name documents."""

    def _name_documents(self, images: Sequence[ExportedImage]) -> list[tuple[str, bytes, int]]:
        return []


def _helpers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("blob-hash", "writeback") and t.is_alive()]


def _blobs(tmp_path: Path, contents: list[bytes], corrupt: int | None = None) -> list[tuple[dict[str, Any], Path]]:
    """(descriptor, file) per content, in tar order; the file of index ``corrupt`` (in that
    order) has one byte flipped."""
    out = []
    for content in contents:
        digest = Digest.from_bytes(content)
        path = tmp_path / digest.hex
        path.write_bytes(content)
        out.append(({"digest": str(digest), "size": len(content)}, path))
    out.sort(key=lambda item: blob_path(item[0]["digest"]))
    if corrupt is not None:
        data = bytearray(out[corrupt][1].read_bytes())
        data[len(data) // 2] ^= 1
        out[corrupt][1].write_bytes(bytes(data))
    return out


def _add_all(sink: TarSink, blobs: list[tuple[dict[str, Any], Path]]) -> None:
    sink.add_names([])
    for desc, path in blobs:
        with open(path, "rb") as src:
            sink.add_blob(desc, VerifyingReader(src, Digest.parse(desc["digest"]), desc["size"]))


SIZES = [BACKGROUND_HASH_MIN + 4321, 2 * BACKGROUND_HASH_MIN + 1, 5000]


def test_kernel_copied_blobs_are_all_in_the_tar(tmp_path: Path) -> None:
    blobs = _blobs(tmp_path, [bytes([65 + i]) * size for i, size in enumerate(SIZES)])
    out = tmp_path / "out.tar"
    sink = _Bare(out)
    _add_all(sink, blobs)
    sink.commit()
    assert not _helpers_alive()
    with tarfile.open(out) as tar:
        for desc, path in blobs:
            member = tar.extractfile(blob_path(desc["digest"]))
            assert member is not None and member.read() == path.read_bytes()


@pytest.mark.parametrize("corrupt", [0, 1, 2])
def test_a_mismatch_found_after_the_copy_still_fails_the_export(tmp_path: Path, corrupt: int) -> None:
    """Whichever blob is bad, a large one's verdict may come only at commit: the export fails
    there, naming it, and neither the output nor its temp file remains."""
    blobs = _blobs(tmp_path, [bytes([97 + i]) * size for i, size in enumerate(SIZES)], corrupt=corrupt)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sink = _Bare(out_dir / "image.tar")
    try:
        with pytest.raises(DigestMismatchError, match=Digest.parse(blobs[corrupt][0]["digest"]).hex):
            _add_all(sink, blobs)
            sink.commit()
    finally:
        sink.abort()  # what the pipeline does on any failure
    assert list(out_dir.iterdir()) == []
    assert not _helpers_alive()


def test_abort_while_hashes_run_ends_the_helpers(tmp_path: Path) -> None:
    blobs = _blobs(tmp_path, [b"z" * (3 * BACKGROUND_HASH_MIN), b"y" * (3 * BACKGROUND_HASH_MIN)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sink = _Bare(out_dir / "image.tar")
    _add_all(sink, blobs)
    sink.abort()
    assert list(out_dir.iterdir()) == []
    assert not _helpers_alive()
