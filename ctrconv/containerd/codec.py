"""Go value encodings containerd stores in bolt, decoded and encoded exactly.

* sizes, ``version``, snapshot usage: ``binary.PutVarint`` (zigzag + LEB128)
* snapshot ids, parents-key parts: ``binary.PutUvarint`` (LEB128, no zigzag)
* timestamps: Go ``time.Time.MarshalBinary`` (v1 15 bytes / v2 16 bytes)
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

from ctrconv.errors import FormatError

_GO_EPOCH_OFFSET = 62135596800  # seconds from 0001-01-01 to 1970-01-01
#: a binary Go time after its version byte: seconds since year 1, nanoseconds, zone minutes
_TIME_FIELDS = struct.Struct(">qih")
_SIGNED_BYTE = struct.Struct(">b")
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("uvarint of a negative number")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Return (value, bytes consumed); error on truncation or > 64 bits, like Go."""
    result = shift = 0
    for i in range(offset, min(len(data), offset + 10)):
        byte = data[i]
        if i - offset == 9 and byte > 1:
            raise FormatError("uvarint overflows 64 bits")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i - offset + 1
        shift += 7
    raise FormatError(f"truncated varint {bytes(data[offset:offset + 10]).hex()}")


def encode_varint(value: int) -> bytes:
    """Go ``binary.PutVarint`` (int64 zigzag)."""
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError("varint outside int64")
    return encode_uvarint(((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)


def decode_varint(data: bytes) -> int:
    """Go ``binary.Varint`` of a whole value (trailing bytes are an error)."""
    u, n = decode_uvarint(data)
    if n != len(data):
        raise FormatError(f"varint {data.hex()} has {len(data) - n} trailing bytes")
    return (u >> 1) ^ -(u & 1)


def decode_uvarint_exact(data: bytes) -> int:
    u, n = decode_uvarint(data)
    if n != len(data):
        raise FormatError(f"uvarint {data.hex()} has {len(data) - n} trailing bytes")
    return u


class GoTime:
    """A decoded Go timestamp: Unix nanoseconds plus the zone offset it was stored with."""

    __slots__ = ("unix_ns", "offset_seconds")

    def __init__(self, unix_ns: int, offset_seconds: int | None) -> None:
        self.unix_ns = unix_ns
        self.offset_seconds = offset_seconds  # None = UTC

    def isoformat(self) -> str:
        """RFC 3339 with nanoseconds, like Go's ``time.RFC3339Nano`` (trailing zeros trimmed)."""
        seconds, nanos = divmod(self.unix_ns, 1_000_000_000)
        offset = self.offset_seconds or 0
        try:
            base = _UNIX_EPOCH + timedelta(seconds=seconds + offset)
        except OverflowError:
            return f"@{self.unix_ns}ns"
        frac = f".{nanos:09d}".rstrip("0").rstrip(".")
        if self.offset_seconds is None:
            zone = "Z"
        else:
            sign = "+" if offset >= 0 else "-"
            hh, mm = divmod(abs(offset) // 60, 60)
            zone = f"{sign}{hh:02d}:{mm:02d}"
        return f"{base.year:04d}-{base.month:02d}-{base.day:02d}T{base.hour:02d}:{base.minute:02d}:{base.second:02d}{frac}{zone}"

    def __repr__(self) -> str:
        return f"GoTime({self.isoformat()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoTime) and (self.unix_ns, self.offset_seconds) == (other.unix_ns, other.offset_seconds)


def encode_go_time(when: GoTime) -> bytes:
    """Go ``time.MarshalBinary`` of a decoded timestamp, byte for byte: version 1 with the
    zone offset in minutes (-1 = UTC), version 2 when the offset has seconds (Go does too)."""
    seconds, nanos = divmod(when.unix_ns, 1_000_000_000)
    if when.offset_seconds is None:
        return b"\x01" + struct.pack(">qih", seconds + _GO_EPOCH_OFFSET, nanos, -1)
    offset = when.offset_seconds
    # Go divides toward zero: -3601 s is -60 min and -1 s
    minutes = -(-offset // 60) if offset < 0 else offset // 60
    extra = offset - minutes * 60
    head = struct.pack(">qih", seconds + _GO_EPOCH_OFFSET, nanos, minutes)
    return b"\x01" + head if extra == 0 else b"\x02" + head + struct.pack(">b", extra)


def decode_time(data: bytes) -> GoTime:
    """Go ``time.UnmarshalBinary``: version 1 (15 bytes) or 2 (16 bytes), exact length."""
    if not data:
        raise FormatError("empty timestamp")
    version = data[0]
    if version == 1 and len(data) == 15:
        extra = 0
    elif version == 2 and len(data) == 16:
        extra = _SIGNED_BYTE.unpack_from(data, 15)[0]
    else:
        raise FormatError(f"invalid Go timestamp {data.hex()}")
    sec, nsec, offset_min = _TIME_FIELDS.unpack_from(data, 1)  # (no slice: two per record, 42,000 records)
    if not 0 <= nsec < 1_000_000_000:
        raise FormatError(f"invalid Go timestamp nanoseconds {nsec}")
    unix_ns = (sec - _GO_EPOCH_OFFSET) * 1_000_000_000 + nsec
    offset = None if offset_min == -1 else offset_min * 60 + extra
    return GoTime(unix_ns, offset)
