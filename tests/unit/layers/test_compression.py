"""open_layer / unpack_layer: gzip, zstd and plain layers, media-type checks, limits."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import shutil
from pathlib import Path

import pytest
import zstandard

from ctrconv.errors import CtrconvError, FormatError
from ctrconv.layers import media_type_compression, open_layer, sniff_compression, unpack_layer
from support.layer_tars import LayerTar, gzip_members, sha256

OCI = "application/vnd.oci.image.layer.v1.tar"
OCI_GZ = OCI + "+gzip"
OCI_ZST = OCI + "+zstd"
DOCKER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_GZ = DOCKER + ".gzip"


@pytest.fixture(scope="module")
def layer() -> bytes:
    """A layer with enough content to span several decompressor chunks."""
    big = os.urandom(1 << 20) * 3 + b"tail"
    return LayerTar().dir("d").file("d/big", big).file("d/small", b"s").data()


def decompress(blob: bytes, media_type: str | None = None, **kw: object) -> bytes:
    with open_layer(io.BytesIO(blob), media_type, **kw) as stream:  # type: ignore[arg-type]
        out = bytearray()
        while chunk := stream.read(100_000):
            out += chunk
        return bytes(out)


@pytest.mark.parametrize("external", [False, None])
def test_gzip_single_and_multi_member(layer: bytes, external: bool | None) -> None:
    assert decompress(gzip.compress(layer), OCI_GZ, external=external) == layer
    assert decompress(gzip_members(layer, 4), DOCKER_GZ, external=external) == layer


@pytest.mark.parametrize("external", [False, None])
def test_zstd_single_and_multi_frame(layer: bytes, external: bool | None) -> None:
    cctx = zstandard.ZstdCompressor()
    half = len(layer) // 2
    assert decompress(cctx.compress(layer), OCI_ZST, external=external) == layer
    frames = cctx.compress(layer[:half]) + cctx.compress(layer[half:])
    assert decompress(frames, OCI_ZST, external=external) == layer


def test_plain_and_sniffed(layer: bytes) -> None:
    assert decompress(layer, OCI) == layer
    assert decompress(layer) == layer
    assert decompress(gzip.compress(layer)) == layer  # no media type: magic decides
    # Docker diff.tar says nothing about compression: ctr import uses it for both
    assert decompress(gzip.compress(layer), DOCKER) == layer
    assert decompress(layer, DOCKER) == layer


def test_gzip_trailing_garbage_is_an_error_where_containerd_uses_go_gzip(layer: bytes,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERD_DISABLE_PIGZ", "1")
    blob = gzip.compress(layer)
    for tail in (b"garbage!garbage!", b"\0" * 20, b"x"):
        with pytest.raises(FormatError, match="trailing data"):
            decompress(blob + tail, OCI_GZ, external=False)


def _unpigz_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if present:
        (bin_dir / "unpigz").write_text("#!/bin/sh\n")
        (bin_dir / "unpigz").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize(("present", "disable", "lenient"), [
    (True, None, True), (True, "1", False), (True, "TRUE", False), (True, "false", True),
    (True, "yes", True),  # not a Go boolean: containerd warns and keeps pigz
    (False, None, False),
])
def test_the_host_decides_as_containerd_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: bool,
                                             disable: str | None, lenient: bool) -> None:
    """containerd inflates with ``unpigz`` when it is on the PATH, unless
    ``CONTAINERD_DISABLE_PIGZ`` parses as a true Go boolean."""
    from ctrconv.layers.compression import containerd_ignores_trailing_gzip_data

    _unpigz_on_path(tmp_path, monkeypatch, present)
    if disable is None:
        monkeypatch.delenv("CONTAINERD_DISABLE_PIGZ", raising=False)
    else:
        monkeypatch.setenv("CONTAINERD_DISABLE_PIGZ", disable)
    assert containerd_ignores_trailing_gzip_data() is lenient


def test_with_unpigz_trailing_bytes_are_ignored_as_unpigz_ignores_them(layer: bytes, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """unpigz's rule (checked against unpigz itself): after a member, anything but a whole
    member header ends the stream; a whole header must start a whole member."""
    _unpigz_on_path(tmp_path, monkeypatch, True)
    monkeypatch.delenv("CONTAINERD_DISABLE_PIGZ", raising=False)
    blob = gzip.compress(layer, mtime=0)
    for tail in (b"garbage!garbage!", b"\0" * 20, b"x", b"\x1f", b"\x1f\x8b\x08", b"\x1f\x8bGARBAGE",
                 b"\x1f\x8b\x09\0\0\0\0\0\0\x03", b"\x1f\x8b\x08\xe0\0\0\0\0\0\x03xx"):
        assert decompress(blob + tail, OCI_GZ, external=False) == layer, tail
    assert decompress(blob + blob + b"junk", OCI_GZ, external=False) == layer + layer
    # a zlib stream after the last member is inflated into the layer, and nothing may follow it
    import zlib

    assert decompress(blob + zlib.compress(b"tail"), OCI_GZ, external=False) == layer + b"tail"
    for tail in (zlib.compress(b"tail") + b"junk", zlib.compress(b"tail")[:-2], b"x^not deflate at all"):
        with pytest.raises(FormatError):
            decompress(blob + tail, OCI_GZ, external=False)
    assert decompress(blob + bytes([0x78, 0xBB]) + b"preset dictionary", OCI_GZ, external=False) == layer
    for tail in (b"\x1f\x8b\x08\0\0\0\0\0\0\x03GARBAGEGARBAGE", blob[:15]):
        with pytest.raises(FormatError):
            decompress(blob + tail, OCI_GZ, external=False)


@pytest.mark.parametrize("external", [False, None])
def test_truncated_streams_are_errors(layer: bytes, external: bool | None) -> None:
    gz = gzip.compress(layer)
    with pytest.raises(FormatError):
        decompress(gz[: len(gz) // 2], OCI_GZ, external=external)
    zst = zstandard.ZstdCompressor().compress(layer)
    with pytest.raises(FormatError):
        decompress(zst[: len(zst) // 2], OCI_ZST, external=external)
    with pytest.raises(FormatError):
        decompress(zst + b"garbage after the frame", OCI_ZST, external=external)


def test_a_compressed_media_type_follows_the_magic_bytes_as_containerd_does(layer: bytes) -> None:
    """containerd applies a layer of a compressed media type through ``DecompressStream``,
    which follows the magic bytes (a plain tar named gzip unpacks and runs, checked with
    ``ctr images import`` on 1.6 and 2.x); an uncompressed type's bytes go to the tar reader
    as they are, so compressed bytes there fail (here with both named). ``strict`` refuses
    every mismatch."""
    gz = gzip.compress(layer)
    zst = zstandard.ZstdCompressor().compress(layer)
    assert decompress(layer, OCI_GZ) == layer
    assert decompress(gz, OCI_ZST) == layer
    assert decompress(zst, OCI_GZ) == layer
    assert decompress(layer, DOCKER_GZ) == layer
    for compressed in (gz, zst):
        with pytest.raises(FormatError, match=r"means none but the content is (gzip|zstd)"):
            decompress(compressed, OCI)
    with pytest.raises(FormatError, match=r"means gzip but the content is none"):
        decompress(layer, OCI_GZ, strict=True)
    with pytest.raises(FormatError, match=r"means zstd but the content is gzip"):
        decompress(gz, OCI_ZST, strict=True)


def test_unsupported_inputs() -> None:
    with pytest.raises(FormatError):
        media_type_compression("application/vnd.oci.image.config.v1+json")
    with pytest.raises(FormatError, match="encrypted"):
        media_type_compression(OCI_GZ + "+encrypted")
    with pytest.raises(FormatError, match="bzip2"):
        sniff_compression(bz2.compress(b"x"))
    assert sniff_compression(b"") == "none"
    assert media_type_compression(DOCKER) is None


def test_decompression_limit(layer: bytes) -> None:
    bomb = gzip.compress(b"\0" * (8 << 20))
    with pytest.raises(FormatError, match="more than"):
        decompress(bomb, OCI_GZ, external=False, max_bytes=1 << 20)
    assert decompress(gzip.compress(layer), OCI_GZ, max_bytes=len(layer)) == layer


def test_forcing_a_missing_external_tool_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(CtrconvError, match="no external"):
        decompress(gzip.compress(b"x"), OCI_GZ, external=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="layer application needs root")
@pytest.mark.parametrize("external", [False, None])
def test_unpack_layer_reports_the_uncompressed_diff_id(tmp_path, layer: bytes,
                                                       external: bool | None) -> None:
    tarred = layer + b"junk after the tar end"
    for i, (blob, media_type) in enumerate([
        (gzip_members(tarred, 3), OCI_GZ),
        (zstandard.ZstdCompressor().compress(tarred), OCI_ZST),
        (tarred, OCI),
    ]):
        target = tmp_path / str(i)
        target.mkdir()
        result = unpack_layer(io.BytesIO(blob), target, mode="naive", media_type=media_type,
                              expected_diff_id=sha256(tarred), external=external)
        assert result.diff_id == sha256(tarred) and result.bytes == len(tarred)
        assert (target / "d/small").read_bytes() == b"s"
        assert (target / "d/big").stat().st_size == 3 * (1 << 20) + 4
