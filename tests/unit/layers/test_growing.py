"""GrowingBlob: a worker reads a blob file while another thread still writes (and renames) it.

The writer is driven by the test (events, no sleeps asserted): the reader returns bytes that
are there, waits for the rest, follows the file across its rename to the committed path, opens
the committed path when the temp one is already gone, and gives up on a blob that stops
growing (the limit shortened by the test).
"""

from __future__ import annotations

import os
import threading

import pytest

from ctrconv.errors import CtrconvError
from ctrconv.layers import growing
from ctrconv.layers.growing import GrowingBlob

DATA = bytes(range(256)) * 4096  # 1 MiB


def test_reads_a_file_as_it_is_written_and_across_its_rename(tmp_path):
    temp, final = tmp_path / "tmp-blob", tmp_path / "blob"
    half = len(DATA) // 2
    temp.write_bytes(DATA[:half])
    reader = GrowingBlob((str(temp), str(final)), len(DATA))
    got = bytearray()
    while len(got) < half:
        got += reader.read(1 << 16)
    assert bytes(got) == DATA[:half]
    resumed = threading.Event()

    def write_rest() -> None:
        resumed.wait(60)
        with open(temp, "ab") as f:
            f.write(DATA[half:])
        os.replace(temp, final)

    writer = threading.Thread(target=write_rest)
    writer.start()
    resumed.set()
    while chunk := reader.read(1 << 16):  # waits for the writer, then reads past the rename
        got += chunk
    writer.join(60)
    reader.close()
    assert bytes(got) == DATA


def test_opens_the_committed_file_when_the_temp_one_is_gone(tmp_path):
    final = tmp_path / "blob"
    final.write_bytes(DATA)
    with GrowingBlob((str(tmp_path / "gone"), str(final)), len(DATA)) as reader:
        assert reader.read() + reader.read(len(DATA)) == DATA
        assert reader.read(10) == b""
    with pytest.raises(CtrconvError, match="is gone"):
        GrowingBlob((str(tmp_path / "gone"), str(tmp_path / "also-gone")), 1)


def test_a_blob_that_stops_growing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(growing, "STALL_LIMIT", 0.0)
    temp = tmp_path / "tmp-blob"
    temp.write_bytes(DATA[:10])
    with GrowingBlob((str(temp), str(tmp_path / "blob")), len(DATA)) as reader:
        assert reader.read(100) == DATA[:10]
        with pytest.raises(CtrconvError, match="stopped arriving at byte 10"):
            reader.read(100)
