"""Small hand-made inputs the source tests share: a one-file layer, an OCI layout marker, and
tars with any kind of member (links, devices, FIFOs) for hostile-input cases."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

#: the ``oci-layout`` file of every layout
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def sha(data: bytes) -> str:
    """The ``sha256:<hex>`` digest string of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(content: bytes = b"hello\n") -> bytes:
    """A one-file layer (``etc/hello``), uncompressed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("etc/hello")
        info.size = len(content)
        tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def make_tar(path: Path, members: list[Any]) -> Path:
    """Members are ``(name, data)`` or ``(name, "symlink"|"hardlink"|"dir"|"chardev"|"fifo", target)``."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info = tarfile.TarInfo(m[0])
            if len(m) == 2:
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
                continue
            kind, target = m[1], m[2]
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "dir": tarfile.DIRTYPE, "chardev": tarfile.CHRTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = target
            tf.addfile(info)
    return path


def with_index(archive: Path, out: Path, change: Any, extra: dict[str, bytes] | None = None) -> Path:
    """``archive`` (an OCI layout tar) copied to ``out`` with its ``index.json`` document passed
    through ``change(index)`` (which edits it in place), and ``extra`` members added after it."""
    import io
    import json
    import tarfile

    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "index.json":
                index = json.loads(data)  # type: ignore[arg-type]
                change(index)
                data = json.dumps(index).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
            if member.name == "index.json":
                for name, payload in (extra or {}).items():
                    added = tarfile.TarInfo(name)
                    added.size = len(payload)
                    dst.addfile(added, io.BytesIO(payload))
    return out
