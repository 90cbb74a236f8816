"""The one tar header encoder (``ctrconv/layers/tarwrite.py``) against Go's ``archive/tar`` itself.

Regenerated layers and the OCI/docker-archive exports both write their headers through
``header_bytes``; ``tests/go/tarheader`` writes the same headers with Go's ``tar.Writer``
(``Format: FormatPAX`` as containerd's ChangeWriter sets it for layers; the zero format as
``ctr images export`` leaves it), and every byte must agree: PAX header names of directories,
long names that split into the USTAR prefix or go into PAX, truncated fields ending in ``/``.
"""

from __future__ import annotations

import io
import json
import random
import subprocess

from ctrconv.layers.tarwrite import BLOCK, TYPE_PAX, Header, header_bytes
from ctrconv.sinks._tar import TarWriter
from support.go_bbolt import TIMEOUT, go_tool

S = 1_700_000_000 * 1_000_000_000  # a whole-second mtime in ns


def _go_headers(headers: list[Header], *, pax: bool) -> list[bytes]:
    """What Go's archive/tar writes for each header (PAX extended header + block, no content)."""
    lines = [json.dumps({
        "name": h.name.hex(), "typeflag": h.typeflag.hex(), "mode": h.mode, "uid": h.uid, "gid": h.gid,
        "size": h.size, "mtime_ns": h.mtime_ns, "linkname": h.linkname.hex(), "devmajor": h.devmajor,
        "devminor": h.devminor, "xattrs": {k.hex(): v.hex() for k, v in (h.xattrs or {}).items()}, "pax": pax,
    }) for h in headers]
    result = subprocess.run([str(go_tool("tarheader"))], input="\n".join(lines) + "\n", capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    out = [bytes.fromhex(line) for line in result.stdout.split()]
    assert len(out) == len(headers)
    return out


def _mismatches(headers: list[Header], *, pax: bool) -> list[Header]:
    return [h for h, want in zip(headers, _go_headers(headers, pax=pax)) if header_bytes(h) != want]


LAYER_CASES = [
    Header(b"etc/passwd", b"0", 0o644, uid=1000, gid=1000, size=10, mtime_ns=S),
    Header(b"etc/sub-second", b"0", 0o644, mtime_ns=S + 123_456_789),
    Header(b"etc/dir/", b"5", 0o755, mtime_ns=S + 500_000_000),  # Go: etc/dir/PaxHeaders.0
    Header(b"top/", b"5", 0o755, xattrs={b"user.k": b"v"}, mtime_ns=S),
    Header(b"x", b"0", 0o644, xattrs={b"user.foo": b"bar", b"security.capability": bytes(range(20))}, mtime_ns=S),
    Header(b"d/" * 30 + b"f" * 60, b"0", 0o644, mtime_ns=S),  # 120 bytes: the USTAR prefix
    Header(b"d/" * 30 + b"f" * 60, b"0", 0o644, mtime_ns=S + 1),  # PAX anyway: the name goes there too
    Header("données/ünï".encode(), b"0", 0o644),
    Header(b"a" * 99 + b"/" * 5 + b"b", b"0", 0o644, mtime_ns=S + 1),  # field truncated at a '/'
    Header(b"link", b"1", 0o644, linkname=b"t" * 120),
    Header(b"sym", b"2", 0o777, linkname="cible-é".encode()),
    Header(b"big-ids", b"0", 0o644, uid=3_000_000, gid=2**32),
    Header(b"dev/null", b"3", 0o666, devmajor=1, devminor=3),
    Header(b"dev/sda", b"4", 0o660, devmajor=8, devminor=300),
    Header(b"fifo", b"6", 0o600),
    Header(b"old", b"0", 0o644, mtime_ns=-1_500_000_000),
    Header(b"far", b"0", 0o644, mtime_ns=2**33 * 1_000_000_000),
    Header(b"usr/bin/setuid", b"0", 0o4755, size=12_345, mtime_ns=S),
]

#: what ``ctr images export`` asks of Go's tar writer: name, mode, size and type only
EXPORT_CASES = [
    Header(b"blobs/", b"5", 0o755),
    Header(b"blobs/sha256/", b"5", 0o755),
    Header(b"blobs/sha256/" + b"a" * 64, b"0", 0o444, size=1234),
    Header(b"blobs/sha256/" + b"a" * 64, b"0", 0o444, size=9_000_000_000),  # PAX size
    Header(b"blobs/sha384/" + b"b" * 96, b"0", 0o444, size=3),  # USTAR prefix
    Header(b"blobs/sha384/" + b"b" * 96, b"0", 0o444, size=9_000_000_000),  # PAX path and size
    Header(b"blobs/sha512/" + b"c" * 128, b"0", 0o444, size=3),  # PAX path
    Header(b"index.json", b"0", 0o644, size=2),
]


def test_layer_headers_equal_go_archive_tar_with_pax_format():
    assert not _mismatches(LAYER_CASES, pax=True)
    assert sum(header_bytes(h)[156:157] == TYPE_PAX for h in LAYER_CASES) >= 10  # PAX paths are exercised


def test_export_headers_equal_go_archive_tar_as_ctr_writes_them():
    assert not _mismatches(EXPORT_CASES, pax=False)
    assert sum(len(header_bytes(h)) > BLOCK for h in EXPORT_CASES) == 3


def _random_name(rnd: random.Random) -> bytes:
    parts = [b"a", b"b", b"/", b"/", b".", "é".encode(), b"x" * 20, b"//", b"-", b".."]
    return b"".join(rnd.choice(parts) for _ in range(rnd.randint(1, 40))).rstrip(b"/") or b"n"


def test_random_headers_equal_go_archive_tar():
    """Names of every length around the 100/155-byte limits, odd slashes, dot segments,
    non-ASCII bytes, ids, sizes, times, devices and xattrs beyond the USTAR fields."""
    rnd = random.Random(1409)
    headers = []
    for _ in range(2000):
        typeflag = rnd.choice([b"0", b"5", b"1", b"2", b"3"])
        name = _random_name(rnd)
        headers.append(Header(
            name + (b"/" if typeflag == b"5" and rnd.random() < 0.7 else b""), typeflag,
            mode=rnd.choice([0o644, 0o4755, 0]), uid=rnd.choice([0, 1000, 2**21, 2**32]),
            gid=rnd.choice([0, 5, 2**22]), size=rnd.choice([0, 10, 2**33]) if typeflag == b"0" else 0,
            mtime_ns=rnd.choice([0, S, S + rnd.randint(1, 999_999_999), -500_000_000, 2**33 * 1_000_000_000]),
            linkname=_random_name(rnd) if typeflag in (b"1", b"2") else b"",
            devmajor=rnd.choice([0, 8]) if typeflag == b"3" else 0, devminor=rnd.choice([0, 300]) if typeflag == b"3" else 0,
            xattrs=rnd.choice([None, {b"user.a": b"1"}, {b"security.capability": b"\x01\x02", "user.é".encode(): b"v"}]),
        ))
    assert not _mismatches(headers, pax=True)
    kinds = {(len(header_bytes(h)) > BLOCK, len(h.name) > 100) for h in headers}
    assert kinds == {(False, False), (False, True), (True, False), (True, True)}


def test_the_export_tar_writer_uses_the_shared_encoder():
    """The sink's stream is the encoder's headers, the content and its padding, nothing else."""
    out = io.BytesIO()
    tar = TarWriter(out)
    tar.add_dir("blobs/")
    tar.add_bytes("blobs/sha512/" + "c" * 128, b"12345", 0o444)
    tar.close()
    expected = (header_bytes(EXPORT_CASES[0]) + header_bytes(Header(b"blobs/sha512/" + b"c" * 128, b"0", 0o444, size=5))
                + b"12345" + bytes(BLOCK - 5) + bytes(2 * BLOCK))
    assert out.getvalue() == expected
