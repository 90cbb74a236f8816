"""In-process gzip inflate: ISA-L (``isal``) and the zlib fallback behave alike on every input.

``open_layer`` inflates with ISA-L when the package is installed and with zlib otherwise; both
must give the same bytes for valid streams and the same refusals (as :class:`FormatError`) for
damaged ones, since either may run on a node.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from typing import Any, Iterator

import pytest

from ctrconv.errors import FormatError
from ctrconv.layers import compression, open_layer
from ctrconv.layers.compression import CHUNK

OCI_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def _isal() -> Any:
    return pytest.importorskip("isal.isal_zlib")


@pytest.fixture(params=["isal", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force one inflate backend for the test."""
    if request.param == "isal":
        module = _isal()
        errors: tuple[type[Exception], ...] = (module.error, zlib.error)
    else:
        module, errors = zlib, (zlib.error,)
    monkeypatch.setattr(compression, "inflate_backend", lambda: (module, errors))
    return str(request.param)


def _chunks(blob: bytes) -> Iterator[bytes]:
    with open_layer(io.BytesIO(blob), OCI_GZ) as stream:
        while chunk := stream.read(1 << 22):
            yield chunk


def inflate(blob: bytes) -> bytes:
    return b"".join(_chunks(blob))


def member(data: bytes, *, header_extras: bool = False) -> bytes:
    """One gzip member; with ``header_extras`` it carries FEXTRA, FNAME, FCOMMENT and FHCRC."""
    if not header_extras:
        return gzip.compress(data, mtime=0)
    flags = 0x04 | 0x08 | 0x10 | 0x02
    head = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", 0) + b"\x00\xff"
    head += struct.pack("<H", 4) + b"ab\x00\x00" + b"name\x00" + b"comment\x00"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = comp.compress(data) + comp.flush()
    return head + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


PAYLOAD = bytes(range(256)) * 4096 + b"tail"


def test_isal_is_used_when_installed() -> None:
    """The default backend is ISA-L once the package is there (a dependency of ctrconv)."""
    module = _isal()
    compression.inflate_backend.cache_clear()
    assert compression.inflate_backend()[0] is module


def test_multi_member_with_header_fields(backend: str) -> None:
    blob = member(PAYLOAD, header_extras=True) + member(b"second") + member(b"")
    assert inflate(blob) == PAYLOAD + b"second"


def test_output_is_bounded_per_chunk(backend: str) -> None:
    """A bomb-like member (64 MiB of zeros in ~64 KiB) comes out in chunks of at most CHUNK."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = comp.compress(bytes(64 << 20)) + comp.flush()
    assert len(blob) < 1 << 17
    total = 0
    for chunk in compression._gunzip(io.BytesIO(blob)):
        assert len(chunk) <= CHUNK
        total += len(chunk)
    assert total == 64 << 20


@pytest.mark.parametrize("damage", ["crc", "size", "truncated", "trailing", "deflate", "header_crc"])
def test_damaged_streams_are_refused(backend: str, damage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERD_DISABLE_PIGZ", "1")  # trailing bytes: Go's reader's rule
    good = member(PAYLOAD, header_extras=True)
    if damage == "crc":
        blob = good[:-8] + struct.pack("<I", zlib.crc32(PAYLOAD) ^ 1) + good[-4:]
    elif damage == "size":
        blob = good[:-4] + struct.pack("<I", len(PAYLOAD) + 1)
    elif damage == "truncated":
        blob = good[:-3]
    elif damage == "trailing":
        blob = good + b"\x00" * 16
    elif damage == "deflate":
        start = good.index(b"comment\x00") + len(b"comment\x00") + 2
        blob = good[:start] + b"\xff" * 32 + good[start + 32:]
    else:  # the header's own CRC-16 is wrong
        start = good.index(b"comment\x00") + len(b"comment\x00")
        blob = good[:start] + bytes([good[start] ^ 1]) + good[start + 1:]
    with pytest.raises(FormatError):
        inflate(blob)


class Trickle:
    """A source that hands out at most ``step`` bytes per read (headers split across reads)."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step, self._pos = data, step, 0

    def read(self, n: int = -1, /) -> bytes:
        take = min(self._step, n if n >= 0 else self._step)
        chunk = self._data[self._pos:self._pos + take]
        self._pos += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1, 3, 7, 29])
def test_headers_split_across_reads(backend: str, step: int) -> None:
    """ISA-L alone would refuse these (a header with optional fields split between two
    decompress calls); every member's header reaches the inflater whole."""
    blob = member(b"x" * 5000, header_extras=True) + member(b"y" * 300, header_extras=True)
    assert b"".join(compression._gunzip(Trickle(blob, step))) == b"x" * 5000 + b"y" * 300


def test_overlong_member_header_is_refused(backend: str) -> None:
    head = b"\x1f\x8b\x08\x08" + bytes(6) + b"n" * (200 << 10)  # FNAME never terminated
    with pytest.raises(FormatError, match="header"):
        inflate(head)
