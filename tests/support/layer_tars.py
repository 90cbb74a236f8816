"""A small builder for layer tarballs, used by the layer, compression and unpack tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

MTIME = 1_700_000_000


class LayerTar:
    """Builds a PAX layer tar entry by entry; ``data()`` returns the finished bytes."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, info: tarfile.TarInfo, data: bytes | None = None) -> "LayerTar":
        if data is not None:
            info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    @staticmethod
    def info(name: str, kind: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
             mtime: float = MTIME, xattrs: dict[str, bytes | str] | None = None,
             pax: dict[str, str] | None = None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
        headers = dict(pax or {})
        for key, value in (xattrs or {}).items():
            if isinstance(value, bytes):
                value = value.decode("utf-8", "surrogateescape")
            headers["SCHILY.xattr." + key] = value
        info.pax_headers = headers
        return info

    def file(self, name: str, data: bytes = b"", **kw: object) -> "LayerTar":
        return self.add(self.info(name, tarfile.REGTYPE, **kw), data)  # type: ignore[arg-type]

    def dir(self, name: str, **kw: object) -> "LayerTar":
        kw.setdefault("mode", 0o755)
        return self.add(self.info(name, tarfile.DIRTYPE, **kw))  # type: ignore[arg-type]

    def symlink(self, name: str, target: str, **kw: object) -> "LayerTar":
        kw.setdefault("mode", 0o777)
        info = self.info(name, tarfile.SYMTYPE, **kw)  # type: ignore[arg-type]
        info.linkname = target
        return self.add(info)

    def hardlink(self, name: str, target: str, **kw: object) -> "LayerTar":
        info = self.info(name, tarfile.LNKTYPE, **kw)  # type: ignore[arg-type]
        info.linkname = target
        return self.add(info)

    def device(self, name: str, kind: bytes, major: int = 0, minor: int = 0,
               **kw: object) -> "LayerTar":
        info = self.info(name, kind, **kw)  # type: ignore[arg-type]
        info.devmajor, info.devminor = major, minor
        return self.add(info)

    def whiteout(self, name: str, **kw: object) -> "LayerTar":
        """``dir/.wh.x`` for ``dir/x``; ``opaque`` dirs use :meth:`opaque`."""
        head, _, base = name.rpartition("/")
        return self.file((head + "/" if head else "") + ".wh." + base, **kw)

    def opaque(self, directory: str) -> "LayerTar":
        return self.file(directory.rstrip("/") + "/.wh..wh..opq")

    def data(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gzip_members(data: bytes, parts: int = 2) -> bytes:
    """The same bytes as several concatenated gzip members."""
    step = max(1, len(data) // parts)
    chunks = [data[i:i + step] for i in range(0, len(data), step)]
    return b"".join(gzip.compress(c, mtime=0) for c in chunks)
