"""The directory sinks' blob files (``ctrconv.sinks._blobfiles.BlobFiles``, used by oci-dir
and the skopeo ``dir`` format): copied or hardlinked blobs whose digest verdicts may come only
at commit, every file synced then, and nothing published or left behind when a verdict fails."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from ctrconv.digest import Digest
from ctrconv.errors import DigestMismatchError
from ctrconv.sinks._blobfiles import EARLY_WRITEBACK_MIN, BlobFiles
from ctrconv.sinks.base import blob_path
from ctrconv.sinks.oci_dir import OciDirSink
from ctrconv.sinks.skopeo_dir import SkopeoDirSink
from ctrconv.streams import BACKGROUND_HASH_MIN, VerifyingReader

SIZES = [BACKGROUND_HASH_MIN + 4321, EARLY_WRITEBACK_MIN + 1, 5000]


def _helpers_alive() -> list[str]:
    names = ("blob-hash", "writeback", "file-writeback")
    return [t.name for t in threading.enumerate() if t.name in names and t.is_alive()]


def _blobs(tmp_path: Path, corrupt: int | None = None) -> list[tuple[dict[str, Any], Path]]:
    """(descriptor, file) per size; the file of index ``corrupt`` has one byte flipped."""
    store = tmp_path / "store"
    store.mkdir()
    out = []
    for i, size in enumerate(SIZES):
        content = bytes([97 + i]) * size
        digest = Digest.from_bytes(content)
        path = store / digest.hex
        path.write_bytes(content)
        out.append(({"digest": str(digest), "size": size,
                     "mediaType": "application/vnd.oci.image.layer.v1.tar"}, path))
    if corrupt is not None:
        data = bytearray(out[corrupt][1].read_bytes())
        data[len(data) // 2] ^= 1
        out[corrupt][1].write_bytes(bytes(data))
    return out


class _Named(OciDirSink):
    """The blob mechanics only: no name documents."""

    def add_names(self, images: Any) -> None:
        self._documents = []
        self._named = True


def _add_all(sink: Any, blobs: list[tuple[dict[str, Any], Path]], link: bool = False) -> None:
    for desc, path in blobs:
        with open(path, "rb") as src:
            reader = VerifyingReader(src, Digest.parse(desc["digest"]), desc["size"])
            sink.add_blob(desc, reader, source_path=path if link else None)


@pytest.mark.parametrize("link", [False, True], ids=["copied", "linked"])
def test_every_blob_is_in_the_directory_and_verified(tmp_path: Path, link: bool) -> None:
    blobs = _blobs(tmp_path)
    out = tmp_path / "out"
    sink = _Named(out, link=link)
    sink.add_names([])
    _add_all(sink, blobs, link)
    sink.commit()
    assert not _helpers_alive()
    for desc, path in blobs:
        written = out / blob_path(desc["digest"])
        assert written.read_bytes() == path.read_bytes()
        assert written.stat().st_mode & 0o777 == 0o444 or link
        assert (written.stat().st_ino == path.stat().st_ino) == link
    assert sink.bytes_written == (0 if link else sum(SIZES))


@pytest.mark.parametrize("link", [False, True], ids=["copied", "linked"])
@pytest.mark.parametrize("corrupt", [0, 1, 2])
def test_a_mismatch_found_after_the_copy_still_fails_the_export(tmp_path: Path, corrupt: int, link: bool) -> None:
    """Whichever blob is bad, a large one's verdict may come only at commit: the export fails
    there, naming it, and neither the directory nor its temp directory remains."""
    blobs = _blobs(tmp_path, corrupt=corrupt)
    parent = tmp_path / "parent"
    parent.mkdir()
    sink = _Named(parent / "out", link=link)
    sink.add_names([])
    try:
        with pytest.raises(DigestMismatchError, match=Digest.parse(blobs[corrupt][0]["digest"]).hex):
            _add_all(sink, blobs, link)
            sink.commit()
    finally:
        sink.abort()  # what the pipeline does on any failure
    assert list(parent.iterdir()) == []
    assert not _helpers_alive()


def test_the_skopeo_dir_fails_the_same_way(tmp_path: Path) -> None:
    blobs = _blobs(tmp_path, corrupt=1)
    parent = tmp_path / "parent"
    parent.mkdir()
    sink = SkopeoDirSink(parent / "out")
    sink._named = True  # the blob mechanics only
    try:
        with pytest.raises(DigestMismatchError):
            _add_all(sink, blobs)
            sink.commit()
    finally:
        sink.abort()
    assert list(parent.iterdir()) == []
    assert not _helpers_alive()


def test_abort_while_hashes_run_ends_the_helpers(tmp_path: Path) -> None:
    blobs = _blobs(tmp_path)
    parent = tmp_path / "parent"
    parent.mkdir()
    sink = _Named(parent / "out")
    sink.add_names([])
    _add_all(sink, blobs)
    sink.abort()
    assert list(parent.iterdir()) == []
    assert not _helpers_alive()


def test_finish_syncs_every_file_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-file ``fsync`` moved from the copy to :meth:`BlobFiles.finish`: each file is
    synced there, after every verdict is in."""
    synced: list[str] = []
    monkeypatch.setattr("ctrconv.sinks._blobfiles.fsync_named", lambda path: synced.append(os.fspath(path)))
    files = BlobFiles()
    written = []
    for desc, path in _blobs(tmp_path):
        dest = tmp_path / f"copy-{desc['size']}"
        with open(path, "rb") as src:
            files.write(dest, VerifyingReader(src, Digest.parse(desc["digest"]), desc["size"]), desc["size"])
        written.append(os.fspath(dest))
    assert synced == []
    files.finish()
    assert synced == written
    assert not _helpers_alive()


def test_a_stream_that_is_not_a_file_is_verified_by_reading(tmp_path: Path) -> None:
    """``verify_mapped`` applies to regular files only; anything else is read, and a mismatch
    is still found."""
    data = b"q" * (BACKGROUND_HASH_MIN + 5)
    digest = Digest.from_bytes(data)
    reader = VerifyingReader(io.BytesIO(data), digest, len(data))
    assert reader.verify_mapped() is False
    files = BlobFiles()
    files.verify_linked(reader)
    files.finish()
    bad = VerifyingReader(io.BytesIO(b"Q" + data[1:]), digest, len(data))
    with pytest.raises(DigestMismatchError):
        BlobFiles().verify_linked(bad)
