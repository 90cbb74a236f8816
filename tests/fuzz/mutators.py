"""Structure-aware mutators: ``mutate(data, rng) -> bytes`` for bolt files, tars and JSON.

All randomness comes from the ``random.Random`` passed in, so hypothesis (``st.randoms``) can
replay and shrink a case in CI and ``run_long.py`` can drive millions of cases from one seed.
Mutations that would only be rejected by a checksum keep that checksum valid (meta pages,
tar headers) so the damage reaches the code behind the check.
"""

from __future__ import annotations

import json
import random
import struct
import tarfile
from typing import Any, Callable

from ctrconv.bolt import _structs as S

Mutator = Callable[[bytes, random.Random], bytes]

#: numbers that make length, count and pointer checks interesting
INTERESTING = (0, 1, 2, 3, 7, 15, 16, 255, 256, 511, 512, 4095, 4096, 4097, 0x7FFF, 0x8000,
               0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 60,
               (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


def _number(rng: random.Random, bits: int, near: tuple[int, ...] = ()) -> int:
    mask = (1 << bits) - 1
    choice = rng.random()
    if near and choice < 0.4:
        return (rng.choice(near) + rng.randint(-2, 2)) & mask
    if choice < 0.8:
        return rng.choice(INTERESTING) & mask
    return rng.getrandbits(bits)


# -- generic byte mutations ------------------------------------------------------------------


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.getrandbits(8)])
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= rng.randint(1, 255)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 2:
        return b""
    if rng.random() < 0.5:  # at a block boundary (bolt pages are 4 KiB, tar blocks 512 B)
        unit = rng.choice((512, 4096))
        return data[: unit * rng.randrange(max(1, len(data) // unit))]
    return data[: rng.randrange(len(data))]


def append_garbage(data: bytes, rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        tail = b"\0" * rng.choice((1, 511, 512, 1024, 1536))
    elif kind < 0.6:
        tail = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 600)))
    else:
        tail = data[: rng.randint(1, 2048)]
    return data + tail


def splice(data: bytes, rng: random.Random) -> bytes:
    """Copy one region over another (duplicated headers, repeated pages)."""
    if len(data) < 4:
        return data
    n = rng.randint(1, min(len(data) // 2, 4096))
    src = rng.randrange(len(data) - n + 1)
    dst = rng.randrange(len(data) - n + 1)
    out = bytearray(data)
    out[dst : dst + n] = data[src : src + n]
    return bytes(out)


GENERIC: tuple[Mutator, ...] = (flip_bytes, truncate, append_garbage, splice)


def chain(mutators: tuple[Mutator, ...], data: bytes, rng: random.Random, most: int = 3) -> bytes:
    for _ in range(rng.randint(1, most)):
        data = rng.choice(mutators)(data, rng)
    return data


# -- bolt ------------------------------------------------------------------------------------


def _page_size(data: bytes) -> int:
    if len(data) >= 80:
        size = struct.unpack_from("<I", data, 24)[0]
        if size in (512, 1024, 2048, 4096, 8192, 16384, 65536):
            return size
    return 4096


def _pages(data: bytes) -> int:
    return max(1, len(data) // _page_size(data))


def _elements(data: bytes) -> list[tuple[int, int, int]]:
    """(page offset, element count, flags) of every branch/leaf page header that looks sane."""
    size = _page_size(data)
    found = []
    for pgid in range(2, len(data) // size):
        off = pgid * size
        _, flags, count, _ = S.PAGE_HEADER.unpack_from(data, off)
        if flags in (S.BRANCH_PAGE, S.LEAF_PAGE) and 0 < count < size // 16:
            found.append((off, count, flags))
    return found


def bolt_page_header(data: bytes, rng: random.Random) -> bytes:
    """Rewrite one field (id, flags, count, overflow) of one page header."""
    size, pages = _page_size(data), _pages(data)
    pgid = rng.randrange(pages)
    off = pgid * size
    if off + 16 > len(data):
        return data
    fields = list(S.PAGE_HEADER.unpack_from(data, off))
    which = rng.randrange(4)
    near = (pgid, pages)
    if which == 1:
        fields[1] = rng.choice((0, S.BRANCH_PAGE, S.LEAF_PAGE, S.META_PAGE, S.FREELIST_PAGE, 0x03, 0xFFFF))
    else:
        fields[which] = _number(rng, (64, 16, 16, 32)[which], near)
    out = bytearray(data)
    S.PAGE_HEADER.pack_into(out, off, *fields)
    return bytes(out)


def _fix_meta_checksum(out: bytearray, page: int, size: int) -> None:
    start = page * size + S.META_OFFSET
    checksum = S.fnv1a64(bytes(out[start : start + S.META_CHECKSUMMED]))
    struct.pack_into("<Q", out, start + S.META_CHECKSUMMED, checksum)


def bolt_meta(data: bytes, rng: random.Random) -> bytes:
    """Rewrite a meta field (root, freelist, high-water mark, txid, page size, flags) and re-sign it."""
    size, pages = _page_size(data), _pages(data)
    if len(data) < 2 * size:
        return data
    out = bytearray(data)
    page = rng.randrange(2)
    base = page * size + S.META_OFFSET
    # offsets inside the meta struct: page_size 8, flags 12, root 16, sequence 24, freelist 32, pgid 40, txid 48
    offset, fmt, bits = rng.choice(((8, "<I", 32), (12, "<I", 32), (16, "<Q", 64), (24, "<Q", 64),
                                    (32, "<Q", 64), (40, "<Q", 64), (48, "<Q", 64)))
    struct.pack_into(fmt, out, base + offset, _number(rng, bits, (pages, 2, 3, size)))
    if rng.random() < 0.7:  # make this meta the newest so the reader picks it
        struct.pack_into("<Q", out, base + 48, 1 << 40)
    _fix_meta_checksum(out, page, size)
    return bytes(out)


def bolt_element(data: bytes, rng: random.Random) -> bytes:
    """Rewrite a field of one branch/leaf element: key/value position and size, child pointer, flags."""
    candidates = _elements(data)
    if not candidates:
        return flip_bytes(data, rng)
    off, count, flags = rng.choice(candidates)
    elem = off + 16 + 16 * rng.randrange(count)
    out = bytearray(data)
    pages = _pages(data)
    if flags == S.BRANCH_PAGE:
        pos, ksize, child = S.BRANCH_ELEMENT.unpack_from(out, elem)
        which = rng.randrange(3)
        if which == 0:
            pos = _number(rng, 32, (pos,))
        elif which == 1:
            ksize = _number(rng, 32, (ksize,))
        else:
            child = _number(rng, 64, (child, pages, off // _page_size(data)))
        S.BRANCH_ELEMENT.pack_into(out, elem, pos, ksize, child)
    else:
        lflags, pos, ksize, vsize = S.LEAF_ELEMENT.unpack_from(out, elem)
        which = rng.randrange(5)
        if which == 0:
            lflags = rng.choice((0, 1, 2, 0xFFFFFFFF))
        elif which == 1:
            pos = _number(rng, 32, (pos,))
        elif which == 2:
            ksize = _number(rng, 32, (ksize,))
        elif which == 3:
            vsize = _number(rng, 32, (vsize,))
        else:  # the bucket header inside a bucket value: root page and sequence
            value = elem + pos + ksize
            if lflags & S.BUCKET_LEAF_FLAG and value + 16 <= len(out):
                root = _number(rng, 64, (0, pages, off // _page_size(data)))
                struct.pack_into("<Q", out, value, root)
                if root == 0 and value + 32 <= len(out):  # turn into a (bogus) inline page
                    S.PAGE_HEADER.pack_into(out, value + 16, 0, S.LEAF_PAGE, _number(rng, 16), 0)
        if which < 4:
            S.LEAF_ELEMENT.pack_into(out, elem, lflags, pos, ksize, vsize)
    return bytes(out)


def bolt_copy_page(data: bytes, rng: random.Random) -> bytes:
    """Copy a whole page over another: shared children, cycles, stale header ids."""
    size, pages = _page_size(data), _pages(data)
    if pages < 4:
        return data
    src, dst = rng.randrange(2, pages), rng.randrange(2, pages)
    out = bytearray(data)
    out[dst * size : (dst + 1) * size] = data[src * size : (src + 1) * size]
    if rng.random() < 0.5:
        struct.pack_into("<Q", out, dst * size, dst)  # keep the header id consistent
    return bytes(out)


BOLT: tuple[Mutator, ...] = (bolt_page_header, bolt_meta, bolt_element, bolt_element,
                             bolt_copy_page, flip_bytes, truncate, splice)


def mutate_bolt(data: bytes, rng: random.Random) -> bytes:
    return chain(BOLT, data, rng)


# -- tar -------------------------------------------------------------------------------------

HOSTILE_NAMES = ("../../escape", "/abs/file", "a/../../b", "./", ".", "..", "", "a\0b",
                 ".wh..", ".wh...", ".wh.", "dir/.wh..wh..opq", "x" * 300, "bin/sh/x",
                 "oci-layout", "index.json", "manifest.json", "blobs/sha256/../../x")
HOSTILE_LINKS = ("../../../etc/passwd", "/etc/passwd", "", ".", "..", "bin/sh", "self", "/")
TYPEFLAGS = b"01234567xgLKSVMDZ\0A"
# ustar field offsets and widths
_FIELDS = {"name": (0, 100), "mode": (100, 8), "uid": (108, 8), "size": (124, 12),
           "mtime": (136, 12), "type": (156, 1), "linkname": (157, 100), "magic": (257, 8),
           "devmajor": (329, 8), "devminor": (337, 8), "prefix": (345, 155)}


def tar_headers(data: bytes) -> list[int]:
    """Offsets of 512-byte blocks with a valid tar header checksum."""
    found = []
    for off in range(0, len(data) - 511, 512):
        block = data[off : off + 512]
        if block.count(0) == 512:
            continue
        try:
            stored = int(block[148:156].split(b"\0")[0].strip() or b"-1", 8)
        except ValueError:
            continue
        if stored == sum(block[:148]) + 256 + sum(block[156:]):
            found.append(off)
    return found


def _resign(out: bytearray, off: int) -> None:
    out[off + 148 : off + 156] = b" " * 8
    out[off + 148 : off + 156] = b"%06o\0 " % (sum(out[off : off + 512]) & 0o777777)


def _numeric(rng: random.Random, width: int) -> bytes:
    kind = rng.random()
    if kind < 0.25:  # GNU base-256, possibly huge or negative
        value = rng.choice((1 << 60, (1 << 63) - 1, 1 << (8 * (width - 1) - 1), 2**40))
        raw = value.to_bytes(width, "big")
        first = 0xFF if rng.random() < 0.3 else 0x80
        return bytes([first]) + raw[1:]
    if kind < 0.5:
        return bytes(rng.getrandbits(8) for _ in range(width))
    value = _number(rng, 3 * (width - 1))
    return (b"%0*o" % (width - 1, value))[-(width - 1):] + b"\0"


def tar_header_field(data: bytes, rng: random.Random) -> bytes:
    """Rewrite one field of one header (checksum fixed): names, links, sizes, types, devices."""
    headers = tar_headers(data)
    if not headers:
        return flip_bytes(data, rng)
    off = rng.choice(headers)
    field = rng.choice(tuple(_FIELDS))
    start, width = _FIELDS[field]
    if field in ("name", "linkname", "prefix"):
        text = rng.choice(HOSTILE_NAMES if field != "linkname" else HOSTILE_LINKS + HOSTILE_NAMES)
        raw = text.encode("utf-8")
        if rng.random() < 0.2:
            raw = raw + b"\xff\xfe"  # not UTF-8
        value = raw[:width].ljust(width, b"\0")
    elif field == "type":
        value = bytes([rng.choice(TYPEFLAGS)])
    elif field == "magic":
        value = rng.choice((b"ustar\x0000", b"ustar  \0", b"\0" * 8, b"garbage!"))
    else:
        value = _numeric(rng, width)
    out = bytearray(data)
    out[off + start : off + start + width] = value
    _resign(out, off)
    return bytes(out)


def tar_duplicate_member(data: bytes, rng: random.Random) -> bytes:
    """Repeat one header and the blocks after it at the end of the archive (duplicate names)."""
    headers = tar_headers(data)
    if not headers:
        return data
    off = rng.choice(headers)
    chunk = data[off : off + 512 * rng.randint(1, 4)]
    end = len(data.rstrip(b"\0"))
    end += -end % 512
    return data[:end] + chunk + b"\0" * 1024


def tar_pax_record(data: bytes, rng: random.Random) -> bytes:
    """Prepend a PAX header with hostile records to the archive."""
    key = rng.choice(("path", "linkpath", "size", "mtime", "atime", "uid", "SCHILY.xattr.user.x",
                      "SCHILY.xattr.trusted.overlay.opaque", "GNU.sparse.map", "GNU.sparse.size",
                      "GNU.sparse.major", "hdrcharset", "comment"))
    value = rng.choice(("../../x", "-1", "99999999999999999999999", "1e9", "NaN", "", "\udcff",
                        "0,10,99999999999,5", "1.5", "/etc", "x" * 5000))
    info = tarfile.TarInfo("victim")
    info.pax_headers = {key: value}
    info.size = 0
    try:
        block = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    except (ValueError, UnicodeError):
        return data
    if rng.random() < 0.5:
        # drop the member header that follows the PAX header so the record applies to the next entry
        block = block[:-512]
    return block + data


def tar_reorder(data: bytes, rng: random.Random) -> bytes:
    """Swap two header blocks (and what follows them) to break ordering assumptions."""
    headers = tar_headers(data)
    if len(headers) < 2:
        return data
    a, b = sorted(rng.sample(headers, 2))
    out = bytearray(data)
    out[a : a + 512], out[b : b + 512] = data[b : b + 512], data[a : a + 512]
    return bytes(out)


TAR: tuple[Mutator, ...] = (tar_header_field, tar_header_field, tar_duplicate_member,
                            tar_pax_record, tar_reorder, flip_bytes, truncate, append_garbage)


def mutate_tar(data: bytes, rng: random.Random) -> bytes:
    return chain(TAR, data, rng)


# -- JSON ------------------------------------------------------------------------------------

HOSTILE_VALUES: tuple[Any, ...] = (
    None, True, 0, -1, 2**53, 2**64, 1e308, 0.5, "", "sha256:../../x", "sha256:" + "A" * 64,
    "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:" + "0" * 63, "sha256:" + "0" * 64,
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+json", [], {}, [[[[]]]], {"a": {"b": {}}},
    "x" * 10000, "\u0000", "\ud800", {"os": 1}, [{"digest": 5}],
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found.extend(_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found.extend(_paths(v, prefix + (i,)))
    return found


def json_replace(data: bytes, rng: random.Random) -> bytes:
    """Parse, replace or delete the value at a random path, re-serialise."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return flip_bytes(data, rng)
    path = rng.choice(_paths(doc))
    value = rng.choice(HOSTILE_VALUES)
    if not path:
        doc = value
    else:
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        elif rng.random() < 0.2 and isinstance(parent, dict):
            parent[rng.choice(("mediaType", "digest", "size", "manifests", "layers", "config",
                               "rootfs", "platform", "urls", "data", "subject"))] = value
        else:
            parent[path[-1]] = value
    return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def json_duplicate_key(data: bytes, rng: random.Random) -> bytes:
    if not data.startswith(b"{"):
        return data
    return b'{"schemaVersion":2,' + data[1:]


def json_deep(data: bytes, rng: random.Random) -> bytes:
    depth = rng.choice((150, 199, 200, 201, 1000, 100_000))
    opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
    body = opener * depth + b"1" + closer * depth
    if rng.random() < 0.5:  # inside a real document
        return data.replace(b"2", body, 1)
    return body


JSON: tuple[Mutator, ...] = (json_replace, json_replace, json_replace, json_duplicate_key,
                             json_deep, flip_bytes, truncate, splice)


def mutate_json(data: bytes, rng: random.Random) -> bytes:
    return chain(JSON, data, rng, most=2)
