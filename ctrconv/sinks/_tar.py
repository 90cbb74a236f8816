"""A streaming tar writer whose bytes equal Go's ``archive/tar`` for headers holding only Name,
Mode, Size and Typeflag (what ``ctr images export`` writes): uid/gid/mtime 0, empty owner names.

The headers come from :mod:`ctrconv.layers.tarwrite` (the one encoder of Go's tar headers,
shared with regenerated layers): a long name in the USTAR prefix field or a PAX ``path``, a
size beyond the USTAR limit in a PAX ``size``. The stream ends with two zero blocks and no
further padding (Python's :mod:`tarfile` pads to 10240 bytes).
"""

from __future__ import annotations

from typing import BinaryIO

from ctrconv.layers.tarwrite import BLOCK, TYPE_DIR, TYPE_REG, Header, header_bytes

_ZERO_BLOCK = bytes(BLOCK)


def _pad(size: int) -> int:
    return (-size) % BLOCK


class TarWriter:
    """Writes entries to ``stream``; file content may be streamed in chunks.

    Use :meth:`add_dir`, :meth:`add_bytes`, or :meth:`begin_file` + :meth:`write` +
    :meth:`end_file`; finish with :meth:`close` (which does not close ``stream``).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._out = stream
        self._remaining: int | None = None
        self._pending_pad = 0
        self.bytes_written = 0

    def _emit(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self.bytes_written += len(data)

    def _header(self, name: str, mode: int, size: int, typeflag: bytes) -> None:
        if self._remaining is not None:
            raise RuntimeError("previous tar entry not finished")
        self._emit(header_bytes(Header(name=name.encode("utf-8"), typeflag=typeflag, mode=mode, size=size)))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._header(name, mode, 0, TYPE_DIR)

    def add_bytes(self, name: str, data: bytes, mode: int) -> None:
        self.begin_file(name, len(data), mode)
        self.write(data)
        self.end_file()

    def begin_file(self, name: str, size: int, mode: int) -> None:
        self._header(name, mode, size, TYPE_REG)
        self._remaining = size
        self._pending_pad = _pad(size)

    def write(self, data: bytes | memoryview) -> int:
        """Content of the current file; writing more than its declared size is refused."""
        if self._remaining is None:
            raise RuntimeError("no tar entry open")
        if len(data) > self._remaining:
            raise ValueError("write exceeds the tar entry's declared size")
        self._emit(data)
        self._remaining -= len(data)
        return len(data)

    def wrote_directly(self, n: int) -> None:
        """``n`` bytes of the current file went to the output file without :meth:`write`
        (a kernel copy into the same file, after the stream was flushed)."""
        if self._remaining is None:
            raise RuntimeError("no tar entry open")
        if n > self._remaining:
            raise ValueError("write exceeds the tar entry's declared size")
        self._remaining -= n
        self.bytes_written += n

    def end_file(self) -> None:
        if self._remaining is None:
            raise RuntimeError("no tar entry open")
        if self._remaining:
            raise ValueError(f"tar entry short by {self._remaining} bytes")
        self._remaining = None
        if self._pending_pad:
            self._emit(bytes(self._pending_pad))
        self._pending_pad = 0

    def close(self) -> None:
        """The end-of-archive marker: two zero blocks (no padding to a record size)."""
        if self._remaining is not None:
            raise RuntimeError("tar entry not finished")
        self._emit(_ZERO_BLOCK * 2)
