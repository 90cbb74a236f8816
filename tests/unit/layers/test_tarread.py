"""tarread: the applier's own tar reader gives what ``tarfile`` gave, and fails like Go where
``tarfile`` guessed.

The differential tests read generated archives (``tarfile`` in ustar, GNU and PAX format, Go's
headers from ``ctrconv/layers/tarwrite.py``, GNU tar's sparse formats) with both readers, fed
through sources that cut the stream at awkward places, and compare every entry field and the
data bytes.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from ctrconv.errors import FormatError
from ctrconv.layers.tarread import TarReader
from ctrconv.layers.tarwrite import BLOCK, Header, header_bytes, ustar_block

NAMES = ["a", "dir/file", "caf\u00e9/\u65e5\u672c\u8a9e.txt", "x" * 99, "y" * 100, "z" * 101,
         "/".join(["seg%02d" % i for i in range(30)]) + "/leaf", "sp ace/tab\there", "e\u0301\U0001f600"]


class NoGlobalPax(dict):  # type: ignore[type-arg]
    """How the applier used tarfile: global PAX headers were not carried over."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class Chunked:
    """A stream returning reads of at most ``step`` bytes (steps cycle), like an inflater."""

    def __init__(self, data: bytes, steps: list[int]) -> None:
        self._data, self._pos, self._steps, self._i = data, 0, steps, 0

    def read(self, n: int = -1, /) -> bytes:
        step = self._steps[self._i % len(self._steps)]
        self._i += 1
        end = min(len(self._data), self._pos + min(n, step))
        out = self._data[self._pos:end]
        self._pos = end
        return out


def data_of(read: Any) -> bytes:
    with tempfile.TemporaryFile() as fh:
        read(fh.fileno())
        fh.seek(0)
        return fh.read()


def theirs(data: bytes) -> list[tuple]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding="utf-8", errors="surrogateescape",
                      pax_headers=NoGlobalPax()) as tar:
        for m in tar:
            body = tar.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            pax = dict(m.pax_headers)
            # old GNU sparse files ("S") are read as regular files (the applier refuses them, as containerd)
            kind = tarfile.REGTYPE if m.type == tarfile.GNUTYPE_SPARSE else m.type
            out.append((m.name, m.linkname, kind, m.mode, m.uid, m.gid, m.size,
                        None if "mtime" in pax else m.mtime, m.devmajor, m.devminor, pax, body))
    return out


def ours(data: bytes, steps: list[int]) -> list[tuple]:
    reader = TarReader(Chunked(data, steps))
    out = []
    while (e := reader.next()) is not None:
        body = b""
        if e.type in (b"0", b"\0", b"7"):
            body = data_of(lambda fd: reader.write_sparse(fd, e) if e.sparse is not None else reader.write_data(fd))
        out.append((e.name, e.linkname, e.type, e.mode, e.uid, e.gid, e.size,
                    None if "mtime" in e.pax_headers else e.mtime, e.devmajor, e.devminor, dict(e.pax_headers), body))
    reader.check_end()
    return out


STEPS = [[1 << 20], [1, 1, 9000], [511, 513, 7], [4096, 100_000, 3], [512]]


def assert_same(data: bytes) -> list[tuple]:
    expected = theirs(data)
    assert expected, "the archive has entries"
    for steps in STEPS:
        assert ours(data, steps) == expected, steps
    return expected


def random_tarfile(rng: random.Random, fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tar:
        for i in range(rng.randint(1, 25)):
            kind = rng.choice([tarfile.REGTYPE] * 4 + [tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                                                       tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
            name = rng.choice(NAMES) + f"-{i}"
            if fmt == tarfile.USTAR_FORMAT:
                name = name.encode("ascii", "ignore").decode()[-200:]
                if len(name) > 100 and "/" not in name[-100:]:
                    name = name[-100:]
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = rng.choice([0o644, 0o755, 0o4755, 0o2775, 0o1777, 0])
            big = fmt != tarfile.USTAR_FORMAT
            info.uid = rng.choice([0, 1000, 65534] + ([2**21, 2**31 - 1, 2**32 - 1] if big else []))
            info.gid = rng.choice([0, 5, 2**21 + 3] if big else [0, 5])
            info.mtime = rng.choice([0, 1_700_000_000, 2**33 + 1] if big else [0, 1_700_000_000])
            if fmt == tarfile.PAX_FORMAT and rng.random() < 0.3:
                info.mtime = 1_700_000_000.25
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = rng.choice(NAMES)
                if fmt == tarfile.USTAR_FORMAT:
                    info.linkname = info.linkname.encode("ascii", "ignore").decode()[:100]
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = rng.randint(0, 4095), rng.randint(0, 2**20)
            if fmt == tarfile.PAX_FORMAT and rng.random() < 0.4:
                info.pax_headers = {"SCHILY.xattr.user.k%d" % i: "v\u00e9" * rng.randint(0, 40),
                                    "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
            body = None
            if kind == tarfile.REGTYPE:
                body = rng.randbytes(rng.choice([0, 1, 511, 512, 513, 5000, 70_000]))
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_random_tarfile_archives_read_the_same(fmt: int) -> None:
    rng = random.Random(fmt)
    kinds = set()
    for _ in range(40):
        kinds.update(e[2] for e in assert_same(random_tarfile(rng, fmt)))
    assert kinds >= {b"0", b"5", b"2", b"1", b"3", b"4", b"6"}


def test_go_written_headers_read_the_same() -> None:
    rng = random.Random(7)
    for _ in range(30):
        out = bytearray()
        for i in range(rng.randint(1, 15)):
            body = rng.randbytes(rng.choice([0, 3, 512, 9000]))
            kind = rng.choice([b"0", b"5", b"2", b"3", b"6"])
            name = rng.choice(NAMES).encode() + b"-%d" % i
            h = Header(name, kind, mode=0o755, uid=rng.choice([0, 2**22, 2**40]), gid=rng.choice([1, 2**30]),
                       size=len(body) if kind == b"0" else 0,
                       mtime_ns=rng.choice([0, 1_700_000_000_123_456_789, -5_000_000_000]),
                       linkname=rng.choice(NAMES).encode() * rng.randint(1, 12) if kind == b"2" else b"",
                       devmajor=rng.randint(0, 9) if kind == b"3" else 0,
                       xattrs={b"user.a": rng.randbytes(5).hex().encode()} if rng.random() < 0.5 else None)
            out += header_bytes(h)
            if kind == b"0":
                out += body + bytes(-len(body) % BLOCK)
        assert_same(bytes(out) + bytes(2 * BLOCK))


def test_stream_without_end_marker_and_trailing_bytes() -> None:
    data = random_tarfile(random.Random(3), tarfile.PAX_FORMAT)
    entries = theirs(data)
    end = len(data)
    while data[end - BLOCK:end] == bytes(BLOCK):
        end -= BLOCK
    for steps in STEPS:  # a stream may stop right after the last entry's padding
        assert ours(data[:end], steps) == entries


def test_a_stream_may_end_inside_the_last_padding() -> None:
    """Go's reader takes a stream that ends inside a file's padding (``tryReadFull`` of it) as
    the end of the archive, and containerd unpacks such a layer (compared with ``ctr images
    import``): so does this reader. An end inside the data or a header stays an error."""
    for present in (0, 1, 300, 501):  # bytes of the last file's padding in the stream
        data = ustar_block(b"g", b"0", size=3) + b"abc" + bytes(509) + ustar_block(b"f", b"0", size=10) + b"z" * 10
        data += bytes(present)
        for steps in STEPS:
            reader = TarReader(Chunked(data, steps))
            assert [(e.name, data_of(reader.write_data)) for e in iter(reader.next, None)] == [
                ("g", b"abc"), ("f", b"z" * 10)]
            reader.check_end()
    # an extended header read whole, its padding cut short: the end too (Go: the same loop)
    data = ustar_block(b"PaxHeaders/f", b"x", size=12) + b"12 uid=1234\n" + bytes(100)
    reader = TarReader(io.BytesIO(data))
    assert reader.next() is None
    reader.check_end()
    with pytest.raises(FormatError, match="ends inside 'f'"):
        reader = TarReader(io.BytesIO(ustar_block(b"f", b"0", size=10) + b"z" * 9))
        reader.next()
        reader.next()


def test_global_pax_header_is_not_carried_over() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"SCHILY.xattr.user.g": "1", "uid": "77"}) as tar:
        tar.addfile(tarfile.TarInfo("f"), io.BytesIO(b""))
    [entry] = assert_same(buf.getvalue())
    assert entry[4] == 0 and entry[10] == {}


def test_gnu_long_name_and_link() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("n" * 300)
        info.type, info.linkname = tarfile.SYMTYPE, "t" * 400
        tar.addfile(info)
    [entry] = assert_same(buf.getvalue())
    assert entry[0] == "n" * 300 and entry[1] == "t" * 400


def test_base256_numbers() -> None:
    block = bytearray(ustar_block(b"f", b"0", size=0, mtime=5))
    block[108:116] = b"\x80" + (2**40).to_bytes(7, "big")     # uid, positive base-256
    block[136:148] = b"\xff" * 11 + b"\xfe"                     # mtime -2
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    [entry] = assert_same(bytes(block) + bytes(1024))
    assert entry[4] == 2**40 and entry[7] == -2


GNU_SPARSE_FORMATS = [["--format=gnu"], ["--format=posix", "--sparse-version=0.0"],
                      ["--format=posix", "--sparse-version=0.1"], ["--format=posix", "--sparse-version=1.0"]]


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("options", GNU_SPARSE_FORMATS, ids=lambda o: o[-1])
def test_gnu_tar_sparse_files(tmp_path: Path, options: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holes", "wb") as fh:
        for i in range(30):  # 30 data segments: more than the old format's header and one extension
            fh.seek(i * 20_000 + 7)
            fh.write(os.urandom(600 + i))
        fh.truncate(30 * 20_000 + 99_999)
    (src / "plain").write_bytes(b"p" * 1000)
    data = subprocess.run(["tar", "-C", str(src), "--sparse", *options, "-cf", "-", "holes", "plain"],
                          check=True, capture_output=True).stdout
    entries = assert_same(data)
    assert [e[0] for e in entries] == ["holes", "plain"]
    assert entries[0][11] == (src / "holes").read_bytes()


def corrupt(data: bytes, offset: int, value: bytes, fix_checksum: bool = True) -> bytes:
    out = bytearray(data)
    out[offset:offset + len(value)] = value
    if fix_checksum:
        start = offset - offset % BLOCK
        out[start + 148:start + 156] = b" " * 8
        out[start + 148:start + 156] = b"%06o\0 " % sum(out[start:start + BLOCK])
    return bytes(out)


def pax_entry(records: bytes, body: bytes = b"x") -> bytes:
    return (ustar_block(b"PaxHeaders/f", b"x", size=len(records)) + records + bytes(-len(records) % BLOCK)
            + ustar_block(b"f", b"0", size=len(body)) + body + bytes(-len(body) % BLOCK) + bytes(1024))


HOSTILE = [
    (corrupt(ustar_block(b"f", b"0"), 148, b"0000001\0", False) + bytes(1024), "bad checksum"),
    (corrupt(ustar_block(b"f", b"0"), 100, b"99999999"), "invalid header"),
    (ustar_block(b"f", b"0", size=2000) + b"z" * 100, "ends inside 'f'"),
    (ustar_block(b"PaxHeaders/f", b"x", size=20) + b"12 uid=1234\n", "unexpected end"),
    (ustar_block(b"f", b"0") + ustar_block(b"g", b"0")[:300], "truncated header"),
    (ustar_block(b"d", b"5", size=10) + b"z" * 512 + bytes(1024), "claims 10 bytes"),
    (pax_entry(b"8 uid=x\n"), "invalid PAX uid"),
    (pax_entry(b"11 size=-1\n"), "negative size"),
    (pax_entry(b"11 size=1x\n"), "invalid PAX size"),
    (pax_entry(b"99 path=f\n"), "malformed PAX record"),
    (pax_entry(b"7 path\n"), "malformed PAX record"),
    (pax_entry(b"0 a=b\n"), "malformed PAX record"),
    (ustar_block(b"L", b"L", size=4) + b"long" + bytes(508) + bytes(1024), "end of file header"),
    (ustar_block(b"././@LongLink", b"L", size=2 << 20) + bytes(BLOCK), "too large"),
]


@pytest.mark.parametrize("data, message", HOSTILE, ids=[m for _, m in HOSTILE])
def test_hostile_headers_fail_clearly(data: bytes, message: str) -> None:
    reader = TarReader(io.BytesIO(data))
    with pytest.raises(FormatError, match=message):
        while (entry := reader.next()) is not None:
            if entry.type == b"0":
                data_of(reader.write_data)
        reader.check_end()


def test_gnu_format_atime_is_not_a_name_prefix() -> None:
    """tarfile glues a GNU header's atime field in front of the name; Go and this reader do not."""
    block = corrupt(ustar_block(b"f", b"0"), 257, b"ustar  \0")
    block = corrupt(block, 345, b"14614512345\0")
    entry = TarReader(io.BytesIO(block + bytes(1024))).next()
    assert entry is not None and entry.name == "f" and entry.gnu_atime == 0o14614512345
    assert theirs(block + bytes(1024))[0][0] == "14614512345/f", "tarfile's behaviour, for the record"


def test_global_header_may_end_the_archive() -> None:
    data = ustar_block(b"g", b"g", size=12) + b"12 uid=1234\n" + bytes(500) + bytes(1024)
    reader = TarReader(io.BytesIO(data))
    assert reader.next() is None
    reader.check_end()


def iter_entries(data: bytes) -> Iterator[str]:
    reader = TarReader(io.BytesIO(data))
    while (entry := reader.next()) is not None:
        yield entry.name


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tar") is None, reason="needs root and GNU tar")
@pytest.mark.parametrize("options", GNU_SPARSE_FORMATS, ids=lambda o: o[-1])
def test_apply_writes_sparse_files_with_holes(tmp_path: Path, options: list[str]) -> None:
    """PAX sparse files: the same bytes as containerd writes (it writes the holes as zeros;
    holes stay holes here). An old GNU sparse entry (type ``S``, ``--format=gnu``) containerd
    refuses ("unhandled tar header type 83": Go's reader keeps the type), and so does the
    applier now (it made a snapshot containerd could never make; found by a red-team run)."""
    from ctrconv.errors import FormatError
    from ctrconv.layers import apply_layer

    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holes", "wb") as fh:
        fh.seek(5 << 20)
        fh.write(b"tail")
    data = subprocess.run(["tar", "-C", str(src), "--sparse", *options, "-cf", "-", "holes"],
                          check=True, capture_output=True).stdout
    root = tmp_path / "fs"
    root.mkdir()
    if options == ["--format=gnu"]:
        with pytest.raises(FormatError, match="old GNU sparse file"):
            apply_layer(io.BytesIO(data), root, mode="naive")
        return
    apply_layer(io.BytesIO(data), root, mode="naive")
    assert (root / "holes").read_bytes() == (src / "holes").read_bytes()
    assert os.stat(root / "holes").st_blocks * 512 < 1 << 20


def test_number_fields_read_like_tarfile_nti() -> None:
    """The fast path of number parsing (NUL padding as spaces) agrees with tarfile's nti."""
    from ctrconv.layers.tarread import _num

    rng = random.Random(11)
    alphabet = b"0123456777 \0\x1c+_x8\t"
    fields = [b"0000644\0", b"0000644 ", b"\0" * 8, b"  644\0\0\0", b"\0 12    ", b" \0 12   ", b"12\x0034 ",
              b"1_7\0    ", b"+17\0    ", b"\x1c17\0   ", b"0o17\0   ", b"7777777\0", b"17 \0 5  "]
    fields += [bytes(rng.choice(alphabet) for _ in range(8)) for _ in range(3000)]
    for field in fields:
        try:
            expected: object = tarfile.nti(field)
        except tarfile.HeaderError:
            expected = FormatError
        try:
            got: object = _num(field)
        except FormatError:
            got = FormatError
        assert got == expected, field
