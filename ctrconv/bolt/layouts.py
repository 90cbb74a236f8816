"""The byte layouts of the bbolt file format, declared once, with construct.

Every structure the reader, the checker, salvage and the writer decode or encode is one
declaration below (field names as in bbolt's Go structs; meanings in docs/formats.md). The hot
paths do not run construct: :func:`derive` computes a ``struct`` format from each declaration's
fields (as dissect.cstruct compiles its definitions) and :func:`generated_block` writes those
codecs into :mod:`ctrconv.bolt._structs`, so reading a root needs no construct at all. The
writer builds its two meta pages with construct itself.

    python3 -m ctrconv.bolt.layouts --write    # regenerate the codecs in _structs.py
    python3 -m ctrconv.bolt.layouts --check    # exit 1 if they drifted
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

from construct import Construct, FormatField, Int16ul, Int32ul, Int64ul, Renamed, Struct

from ctrconv.bolt._structs import BYTE_ORDER

#: At offset 0 of every page but overflow continuations; inline buckets carry one with id 0.
PageHeader = Struct("id" / Int64ul, "flags" / Int16ul, "count" / Int16ul, "overflow" / Int32ul)
#: The value of a bucket entry; root 0 means an inline leaf page follows it in the value.
BucketHeader = Struct("root" / Int64ul, "sequence" / Int64ul)
#: At page offset 16 of pages 0 and 1; ``checksum`` is FNV-1a 64 of the fields before it.
Meta = Struct(
    "magic" / Int32ul,
    "version" / Int32ul,
    "page_size" / Int32ul,
    "flags" / Int32ul,
    "root" / BucketHeader,
    "freelist" / Int64ul,
    "pgid" / Int64ul,
    "txid" / Int64ul,
    "checksum" / Int64ul,
)
#: The element arrays start right after the page header; ``pos`` counts from the element itself.
LeafElement = Struct("flags" / Int32ul, "pos" / Int32ul, "ksize" / Int32ul, "vsize" / Int32ul)
BranchElement = Struct("pos" / Int32ul, "ksize" / Int32ul, "pgid" / Int64ul)
#: A freelist page holds ``count`` of these after its header (FreelistCount first on overflow).
FreelistCount = Int64ul
FreelistId = Int64ul

#: the codecs of _structs.py, by name, and the declaration each is derived from
CODECS: dict[str, Construct] = {
    "PAGE_HEADER": PageHeader,
    "BUCKET_HEADER": BucketHeader,
    "LEAF_ELEMENT": LeafElement,
    "BRANCH_ELEMENT": BranchElement,
    "FREELIST_COUNT": FreelistCount,
    "FREELIST_ID": FreelistId,
    "META": Meta,
}


def _int_fields(layout: Construct, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], FormatField]]:
    """The fixed-size integer fields of ``layout`` in byte order with their names, nested
    structs flattened."""
    if isinstance(layout, FormatField):
        return [(path, layout)]
    if isinstance(layout, Renamed):
        return _int_fields(layout.subcon, path + (layout.name,))
    if isinstance(layout, Struct):
        return [item for sub in layout.subcons for item in _int_fields(sub, path)]
    raise TypeError(f"{layout!r} is not made of fixed-size integer fields; it has no struct format")


def derive(layout: Construct) -> struct.Struct:
    """The ``struct.Struct`` that reads and writes exactly what ``layout`` does, flattened."""
    fields = [field for _, field in _int_fields(layout)]
    orders = {field.fmtstr[0] for field in fields}
    if orders != {BYTE_ORDER}:
        raise TypeError(f"{layout!r} mixes byte order {sorted(orders)}; bolt layouts are {BYTE_ORDER!r}")
    codec = struct.Struct(BYTE_ORDER + "".join(field.fmtstr[1:] for field in fields))
    if codec.size != layout.sizeof():
        raise TypeError(f"struct format {codec.format!r} is {codec.size} bytes, {layout!r} {layout.sizeof()}")
    return codec


def field_names(layout: Construct) -> tuple[str, ...]:
    """The flattened fields' own names, in the order the derived codec unpacks them."""
    return tuple(path[-1] for path, _ in _int_fields(layout))


def offset_of(layout: Struct, name: str) -> int:
    """Where top-level field ``name`` starts in ``layout``."""
    offset = 0
    for sub in layout.subcons:
        if sub.name == name:
            return offset
        offset += sub.sizeof()
    raise KeyError(name)


BEGIN = "# BEGIN GENERATED: python3 -m ctrconv.bolt.layouts --write"
END = "# END GENERATED"
STRUCTS = Path(__file__).with_name("_structs.py")


def generated_block() -> str:
    """The lines between BEGIN and END in _structs.py, made from the declarations."""
    lines = [BEGIN]
    lines += [f'{name} = struct.Struct("{derive(layout).format}")' for name, layout in CODECS.items()]
    lines.append(f"META_FIELDS = {field_names(Meta)!r}".replace("'", '"'))
    lines.append(f"META_CHECKSUMMED = {offset_of(Meta, 'checksum')}")
    lines.append(END)
    return "\n".join(lines)


def with_block(text: str) -> str:
    """``text`` (the source of _structs.py) with its generated block made anew."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + generated_block() + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ctrconv.bolt.layouts", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the codecs in _structs.py")
    mode.add_argument("--check", action="store_true", help="exit 1 if _structs.py is out of date")
    args = parser.parse_args(argv)
    text = STRUCTS.read_text()
    fresh = with_block(text)
    if args.write:
        if fresh != text:
            STRUCTS.write_text(fresh)
        return 0
    if fresh != text:
        sys.stderr.write(f"{STRUCTS}: the codecs are out of date (python3 -m ctrconv.bolt.layouts --write)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
