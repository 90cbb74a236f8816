"""Layers applied in order inflate one ahead: the next layer starts once the one before is
inflated, its errors surface at its own turn, and every helper thread stops on failure."""

from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path

import pytest

from ctrconv.errors import DigestMismatchError, FormatError
from ctrconv.layers.compression import Prefetch
from ctrconv.layers.parallel import READ_AHEAD_CHUNKS, LayerJob, apply_opened, open_ahead
from ctrconv.progress import SILENT_STAGE
from support.layer_tars import LayerTar, sha256

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PLAIN = "application/vnd.oci.image.layer.v1.tar"


class _ReadCounter:
    """A stage that signals once compressed bytes past the sniffed magic were read (on
    whichever thread: the magic is read when the layer is opened)."""

    def __init__(self) -> None:
        self.read = threading.Event()
        self.total = 0

    def advance(self, n: int, files: int = 0) -> None:
        self.total += n
        if self.total > 64:
            self.read.set()


def _layer(tmp_path: Path, name: str, files: dict[str, bytes]) -> tuple[Path, str]:
    tar = LayerTar()
    for path, data in files.items():
        tar.file(path, data)
    raw = tar.data()
    blob = tmp_path / f"{name}.tar.gz"
    blob.write_bytes(gzip.compress(raw, compresslevel=1))
    return blob, sha256(raw)


def _job(blob: Path, diff_id: str, media_type: str = GZIP) -> LayerJob:
    return LayerJob(str(blob), "", "naive", media_type, (), diff_id, None, defer_parents=False)


def test_prefetch_after_starts_only_once_the_event_is_set():
    pulled = threading.Event()
    after = threading.Event()

    def chunks():
        pulled.set()
        yield b"a"
        yield b"b"

    pf = Prefetch(chunks(), depth=2, after=after)
    assert not pulled.wait(0.2)
    after.set()
    assert list(pf) == [b"a", b"b"]
    assert pf.produced.is_set()


def test_prefetch_waiting_for_after_closes():
    before = threading.active_count()
    pf = Prefetch(iter([b"x"]), depth=2, after=threading.Event())
    pf.close()
    assert threading.active_count() == before
    assert pf.produced.is_set()  # a layer behind this one may go on


def test_next_layer_inflates_while_the_current_one_is_still_applied(tmp_path):
    # more than the read-ahead holds: layer one cannot be inflated before it is applied
    blob1, diff1 = _layer(tmp_path, "one", {"a": bytes((READ_AHEAD_CHUNKS + 10) << 20)})
    blob2, diff2 = _layer(tmp_path, "two", {"b": b"second layer\n"})
    second = _ReadCounter()
    first = open_ahead(_job(blob1, diff1))
    ahead = open_ahead(_job(blob2, diff2), second, before=first)  # type: ignore[arg-type]
    try:
        assert first.tar is not None and ahead.produced is not None
        assert not second.read.wait(0.2)  # waits: layer one is not inflated yet
        (tmp_path / "t1").mkdir()
        result = apply_opened(first, str(tmp_path / "t1"), (), "naive")
        assert result.diff_id == diff1
        # layer one is inflated; layer two reads its blob with nobody reading it yet
        assert second.read.wait(5)
        (tmp_path / "t2").mkdir()
        assert apply_opened(ahead, str(tmp_path / "t2"), (), "naive").diff_id == diff2
        assert (tmp_path / "t2" / "b").read_bytes() == b"second layer\n"
    finally:
        first.close()
        ahead.close()


def test_an_opening_error_surfaces_at_the_layers_turn(tmp_path):
    blob1, diff1 = _layer(tmp_path, "one", {"a": b"1"})
    first = open_ahead(_job(blob1, diff1))
    wrong = open_ahead(_job(blob1, diff1, PLAIN), before=first)  # gzip bytes named a plain tar
    missing = open_ahead(_job(tmp_path / "absent", diff1), before=wrong)
    (tmp_path / "t1").mkdir()
    assert apply_opened(first, str(tmp_path / "t1"), (), "naive").diff_id == diff1
    (tmp_path / "t2").mkdir()
    with pytest.raises(FormatError, match="means none but the content is gzip"):
        apply_opened(wrong, str(tmp_path / "t2"), (), "naive")
    with pytest.raises(FileNotFoundError):
        apply_opened(missing, str(tmp_path / "t3"), (), "naive")


def test_a_failed_layer_stops_the_one_read_ahead(tmp_path):
    blob1, _ = _layer(tmp_path, "one", {"a": os.urandom(1 << 20)})
    blob2, diff2 = _layer(tmp_path, "two", {"b": os.urandom(8 << 20)})
    before = threading.active_count()
    first = open_ahead(_job(blob1, "sha256:" + "0" * 64))
    ahead = open_ahead(_job(blob2, diff2), SILENT_STAGE, before=first)
    (tmp_path / "t1").mkdir()
    try:
        with pytest.raises(DigestMismatchError):
            apply_opened(first, str(tmp_path / "t1"), (), "naive")
    finally:
        ahead.close()
    assert threading.active_count() == before
