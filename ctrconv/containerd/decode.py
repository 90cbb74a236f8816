"""Human decoding of raw bolt values by where they sit in a containerd file (for ``dump``)."""

from __future__ import annotations

from typing import Any

from ctrconv.containerd import schema as K
from ctrconv.containerd.codec import decode_time, decode_uvarint, decode_uvarint_exact, decode_varint
from ctrconv.errors import FormatError

_TIME_KEYS = {K.CREATED_AT, K.UPDATED_AT, K.EXPIRE_AT}
_VARINT_KEYS = {K.SIZE, K.INODES}


def text_or_none(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def decode_value(path: tuple[bytes, ...], key: bytes, value: bytes) -> Any:
    """Best-effort decoded form of ``value`` at ``path/key``; ``None`` if it is opaque."""
    try:
        if key in _TIME_KEYS:
            return decode_time(value).isoformat()
        if key in _VARINT_KEYS or (key == K.VERSION and path == (K.V1,)):
            return decode_varint(value)
        if path[-1:] == (K.PARENTS,) and path[:1] == (K.V1,):
            return text_or_none(value)
        if key == K.ID and K.SNAPSHOTS in path:
            return decode_uvarint_exact(value)
        if key == K.KIND and len(value) == 1:
            return K.SNAPSHOT_KINDS.get(value[0], value[0])
    except FormatError:
        return None
    return text_or_none(value)


def decode_key(path: tuple[bytes, ...], key: bytes) -> str | None:
    """Readable form of a key; snapshotter ``parents`` keys become ``<parent id>/<child id>``."""
    if path[-1:] == (K.PARENTS,) and path[:1] == (K.V1,):
        try:
            pid, n = decode_uvarint(key)
            if n < len(key) and key[n] == 0:
                return f"{pid}/{decode_uvarint_exact(key[n + 1:])}"
        except FormatError:
            return None
    return text_or_none(key)
