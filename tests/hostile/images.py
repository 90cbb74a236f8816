"""Builders for hostile image archives: layers, documents and tars assembled byte by byte.

Everything is valid except the one thing a case attacks (digests and diff IDs are computed
from the hostile bytes, so the readers get past the integrity checks to the code under test).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Any, Callable

from fuzz.seeds import MTIME, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, sha256

Entry = tuple[tarfile.TarInfo, "bytes | None"]


def member(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes | None = None, linkname: str = "",
           mode: int = 0o644, uid: int = 0, devmajor: int = 0, devminor: int = 0,
           pax: dict[str, str] | None = None) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime, info.uid = kind, linkname, mode, MTIME, uid
    info.devmajor, info.devminor = devmajor, devminor
    if pax:
        info.pax_headers = dict(pax)
    if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
        data = data or b""
        info.size = len(data)
    return info, data


def tar(entries: list[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def raw_tar(blocks: list[tuple[bytes, bytes]]) -> bytes:
    """A tar from (name bytes, data) pairs written as raw ustar headers (any bytes in names)."""
    out = bytearray()
    for name, data in blocks:
        header = bytearray(512)
        header[0 : len(name)] = name[:100]
        header[100:108] = b"0000644\0"
        header[108:116] = header[116:124] = b"0000000\0"
        header[124:136] = b"%011o\0" % len(data)
        header[136:148] = b"%011o\0" % MTIME
        header[156:157] = b"0"
        header[257:265] = b"ustar\x0000"
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        out += header + data + b"\0" * (-len(data) % 512)
    return bytes(out + b"\0" * 1024)


def doc(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def image(
    layers: list[bytes],
    *,
    compress: Callable[[bytes], bytes] = lambda raw: gzip.compress(raw, mtime=0),
    name: str = "docker.io/library/hostile:1",
    annotations: dict[str, str] | None = None,
    edit_index: Callable[[dict[str, Any], dict[str, bytes]], Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> bytes:
    """An OCI layout tar with the given uncompressed layer tars (diff IDs computed from them).

    ``edit_index(index, blobs)`` may rewrite the index (and add blobs) before it is serialised.
    """
    blobs = [compress(raw) for raw in layers]
    config = doc({"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": [sha256(raw) for raw in layers]}})
    manifest = doc({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": desc(OCI_CONFIG, config),
                    "layers": [desc(OCI_LAYER_GZIP, b) for b in blobs]})
    files = {sha256(b)[7:]: b for b in (*blobs, config, manifest)}
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        desc(OCI_MANIFEST, manifest, annotations={"io.containerd.image.name": name, **(annotations or {})})]}
    if edit_index is not None:
        extra: dict[str, bytes] = {}
        index = edit_index(index, extra) or index
        files.update({sha256(b)[7:]: b for b in extra.values()})
    entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
               "index.json": index if isinstance(index, bytes) else doc(index)}
    entries.update({f"blobs/sha256/{hexpart}": data for hexpart, data in files.items()})
    entries.update(extra_files or {})
    return tar([member(n, data=d) for n, d in entries.items()])
