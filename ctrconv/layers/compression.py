"""Open a layer blob as its uncompressed tar stream (gzip, zstd or plain), streaming.

The compression is sniffed from the magic bytes and checked against the media type the way
containerd applies a layer: a compressed media type (gzip, zstd) goes through its
``DecompressStream``, which follows the magic bytes, so a plain tar or a gzip blob named zstd
unpacks (images from tools that mislabel their layers run on containerd, and import here); an
uncompressed one feeds its bytes to the tar reader unchanged, so compressed bytes there fail,
here with a :class:`FormatError` that names both. The diff ID check after the unpack still
holds the tar to the config. ``strict=True`` refuses every mismatch.

Decoding mirrors containerd's readers: gzip is multi-member, and what follows the last member
is decided as containerd on this host decides it (:func:`containerd_ignores_trailing_gzip_data`:
``unpigz`` on the PATH ignores it, Go's ``gzip.Reader`` refuses it); zstd reads all frames and
rejects trailing garbage and truncated frames. An external ``igzip``/``pigz``/``zstd``
process can do the work on another core instead (``external=None``: when installed,
``True``: required). It is off by default: measured on 2 cores it is no faster than in-process
zlib/zstd (pigz inflates single-threaded at zlib speed), and ``pigz``, like containerd 1.6 with
``unpigz`` on its PATH, silently ignores trailing garbage after the last gzip member.

In-process gzip uses ISA-L's inflate (``isal.isal_zlib``, the ``isal`` package) when it is
installed: the same ``decompressobj`` interface and checks (header, CRC-32, length) as zlib at
about twice the speed (840 vs 360-490 MB/s of output per core measured on a ``pigz -1`` layer,
benchmarks/README.md), and it releases the interpreter lock too. Without it, zlib does the work.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import tempfile
import queue
import threading
import zlib
from typing import IO, Any, Callable, Generator, Iterator, Literal, Protocol

from ctrconv.errors import CtrconvError, FormatError
from ctrconv.oci.mediatypes import layer_compression

CHUNK = 1 << 20
#: zstd input per decompress call: bounds the output a hostile frame can produce at once
_ZSTD_IN = 1 << 15
_F_SETPIPE_SZ = 1031

Compression = Literal["none", "gzip", "zstd"]
#: the compressions a layer can be written with (``--compression``), in the order help texts list them
COMPRESSIONS: tuple[Compression, ...] = ("gzip", "zstd", "none")

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: bytes read before the compression is named (xz's magic is the longest)
_MAGIC_LEN = 6


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def sniff_compression(head: bytes) -> Compression:
    """Compression named by the first bytes of a blob (containerd ``DetectCompression``)."""
    if head[:3] == _GZIP_MAGIC + b"\x08":
        return "gzip"
    if head[:4] == _ZSTD_MAGIC:
        return "zstd"
    if len(head) >= 4 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50:
        return "zstd"  # a skippable frame starts the stream
    if head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        raise FormatError("layer is bzip2/xz compressed, which containerd does not support")
    return "none"


def media_type_compression(media_type: str) -> Compression | None:
    """What a layer media type promises; ``None`` = not stated (Docker ``diff.tar``: sniff)."""
    if "encrypted" in media_type.split("+")[1:]:
        raise FormatError(f"encrypted layers are not supported ({media_type})")
    kind = layer_compression(media_type)
    if kind == "unknown":
        return None
    return kind or "none"


class LayerStream:
    """The decompressed bytes of one layer, read with ``read(n)`` (short reads possible).

    ``close()`` stops any helper process. Errors in the compressed data surface as
    :class:`FormatError` from ``read``; the total is capped by ``max_bytes`` when given.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        compression: Compression,
        max_bytes: int | None,
        hasher: "hashlib._Hash | None" = None,
    ) -> None:
        self._chunks = chunks
        self._hasher = hasher
        self.compression = compression
        self.max_bytes = max_bytes
        self.bytes_out = 0
        self._buf = b""
        self._pos = 0
        self._eof = False

    def _fill(self) -> bool:
        while not self._eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._eof = True
                return False
            if chunk:
                self.bytes_out += len(chunk)
                if self.max_bytes is not None and self.bytes_out > self.max_bytes:
                    raise FormatError(
                        f"layer expands to more than {self.max_bytes} bytes (decompression limit)"
                    )
                self._buf, self._pos = chunk, 0
                return True
        return False

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            parts = []
            while data := self.read(CHUNK):
                parts.append(data)
            return b"".join(parts)
        if n == 0:
            return b""
        if self._pos >= len(self._buf) and not self._fill():
            return b""
        buf, pos = self._buf, self._pos
        if pos == 0 and n >= len(buf):
            self._pos = len(buf)
            return buf
        end = min(pos + n, len(buf))
        self._pos = end
        return buf[pos:end]

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._eof = True

    @property
    def produced(self) -> threading.Event | None:
        """Set once every chunk was inflated (or inflating stopped); ``None``: no helper thread."""
        return getattr(self._chunks, "produced", None)

    def digest_of_stream(self) -> str | None:
        """sha256 of every uncompressed byte, computed on the read-ahead thread.

        Complete once the stream was read to its end; ``None`` when this stream does not hash.
        """
        return None if self._hasher is None else f"sha256:{self._hasher.hexdigest()}"

    def __enter__(self) -> "LayerStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Prefetch:
    """Run a chunk generator in a background thread, a few chunks ahead of its reader.

    zlib and zstandard release the GIL while they inflate, and the blob read is plain I/O, so
    decompression (and reading the blob) overlaps with the extraction that consumes the
    chunks. Memory stays bounded: at most ``depth`` chunks wait in the queue. Exceptions in
    the generator are re-raised in the reader; ``close()`` stops the thread.
    """

    _END = object()

    def __init__(self, chunks: Iterator[bytes], depth: int = 4, after: threading.Event | None = None) -> None:
        self._chunks = chunks
        self._queue: queue.Queue[Any] = queue.Queue(depth)
        self._stop = threading.Event()
        self._after = after
        #: set once the generator is exhausted, failed or stopped: a next layer may start then
        self.produced = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="layer-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            # a layer read ahead starts inflating once the one before it has produced
            # everything: the two never compete for the core, and memory stays at two queues
            while self._after is not None and not self._after.wait(0.05):
                if self._stop.is_set():
                    return
            for chunk in self._chunks:
                if self._stop.is_set():
                    return
                self._queue.put(chunk)
            self._queue.put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self._queue.put(exc)
        finally:
            self.produced.set()
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> "Prefetch":
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is self._END:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._done = True
        while self._thread.is_alive():
            try:  # unblock a producer waiting on a full queue
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


def open_layer(
    stream: Readable,
    media_type: str | None = None,
    *,
    strict: bool = False,
    external: bool | None = False,
    max_bytes: int | None = None,
    read_ahead: int = 4,
    after: threading.Event | None = None,
) -> LayerStream:
    """Wrap a layer blob stream so that reads return the uncompressed tar bytes.

    Args:
        stream: the blob, positioned at its start; read in 1 MiB chunks, never seeked.
        media_type: the descriptor's media type; ``None`` trusts the magic bytes.
        strict: refuse a compressed media type whose compression disagrees with the magic
            bytes too (default: follow the magic bytes, as containerd does).
        external: use an ``igzip``/``pigz``/``zstd`` process (``None``: when installed).
        max_bytes: fail once more than this many uncompressed bytes come out.
        read_ahead: chunks (<= 1 MiB each) inflated ahead of the reader on a helper thread.
        after: start inflating only once this is set (the layer before is inflated).

    Raises:
        FormatError: unsupported media type or compression, compressed bytes under an
            uncompressed media type, or (``strict``) any other media-type/magic mismatch.
    """
    head = _read_head(stream)
    found = sniff_compression(head)
    compression = found
    if media_type is not None:
        promised = media_type_compression(media_type)
        if promised is not None and promised != found and (strict or promised == "none"):
            raise FormatError(f"layer media type {media_type} means {promised} but the content is {found}")
    source = Prepended(head, stream)
    hasher = hashlib.sha256()
    chunks = _hashed(_decoder(compression, source, external), hasher)
    return LayerStream(Prefetch(chunks, read_ahead, after), compression, max_bytes, hasher)


def decompressed_chunks(stream: Readable) -> Iterator[bytes]:
    """The uncompressed bytes of a gzip-, zstd- or plain stream (sniffed from its first bytes),
    decoded in this thread with the layers' rules: multi-member gzip, every zstd frame, and a
    truncated stream or trailing garbage a :class:`FormatError`. The one decompressor of
    layers and of compressed image archives (``import -i image.tar.zst``)."""
    head = _read_head(stream)
    return _decoder(sniff_compression(head), Prepended(head, stream), False)


def _read_head(stream: Readable) -> bytes:
    """The first bytes that name the compression (fewer only at the end of the stream); a
    stream may return less than asked for, so read until there are enough."""
    head = b""
    while len(head) < _MAGIC_LEN:
        data = stream.read(_MAGIC_LEN - len(head))
        if not data:
            break
        head += data
    return head


def _hashed(chunks: Iterator[bytes], hasher: "hashlib._Hash") -> Iterator[bytes]:
    """Hash chunks as they pass; run inside :class:`Prefetch`, so the diff ID is computed off
    the extracting thread (hashlib releases the GIL on large updates)."""
    try:
        for chunk in chunks:
            hasher.update(chunk)
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class Prepended:
    """Replays bytes already read (a sniffed header) before the rest of the stream."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._rest.read(n)


def _decoder(compression: Compression, source: Readable, external: bool | None) -> Iterator[bytes]:
    if compression == "none":
        return _plain(source)
    argv = _external_tool(compression) if external is not False else None
    if external and argv is None:
        raise CtrconvError(f"no external {compression} decompressor installed")
    if argv is not None:
        return _external(argv, source)
    if compression == "gzip":
        return _gunzip(source, lenient=containerd_ignores_trailing_gzip_data())
    return _unzstd(source)


#: ``strconv.ParseBool``'s true spellings (``CONTAINERD_DISABLE_PIGZ``)
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


def containerd_ignores_trailing_gzip_data() -> bool:
    """Whether containerd on this host accepts bytes after a gzip layer's last member.

    containerd (1.6, 1.7 and 2.x alike) inflates gzip layers with ``unpigz -d -c`` when
    ``unpigz`` is on its PATH and ``CONTAINERD_DISABLE_PIGZ`` is not a true Go boolean (an
    unparsable value leaves pigz on), and with Go's ``gzip.Reader`` otherwise. unpigz ignores
    whatever follows a member unless it is a whole gzip header (magic, method 8, no reserved
    flag), which then must be a whole member; Go's reader refuses any of it ("unexpected EOF").
    Measured with each line's ``ctr images import``: zero padding, text and a broken header
    after the last member all unpack with unpigz installed and fail with it disabled. A root
    prepared here for another host follows this host's rule.
    """
    if os.environ.get("CONTAINERD_DISABLE_PIGZ", "") in _GO_TRUE:
        return False
    return shutil.which("unpigz") is not None


def _external_tool(compression: Compression) -> list[str] | None:
    if compression == "gzip":
        for tool in ("igzip", "pigz", "unpigz"):
            path = shutil.which(tool)
            if path:
                return [path, "-d", "-c"]
        return None
    path = shutil.which("zstd")
    return [path, "-d", "-c", "-q"] if path else None


def _plain(source: Readable) -> Iterator[bytes]:
    while data := source.read(CHUNK):
        yield data


@functools.cache
def inflate_backend() -> tuple[Any, tuple[type[Exception], ...]]:
    """(module with zlib's ``decompressobj``, its errors): ISA-L when installed, else zlib.

    Imported on first use, so commands that inflate nothing do not pay for it."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib, (zlib.error,)
    return isal_zlib, (isal_zlib.error, zlib.error)


#: longest gzip member header accepted (Go's reader refuses names and comments over 511 bytes)
_MAX_GZIP_HEADER = 1 << 17


def _gzip_header_end(buf: bytes) -> int | None:
    """Length of the gzip member header at the start of ``buf`` (RFC 1952: optional extra
    field, name, comment, header CRC), or ``None`` while it is incomplete."""
    if len(buf) < 10:
        return None
    flags, pos = buf[3], 10
    if flags & 0x04:  # FEXTRA
        if len(buf) < 12:
            return None
        pos = 12 + int.from_bytes(buf[10:12], "little")
    for bit in (0x08, 0x10):  # FNAME, FCOMMENT: NUL-terminated
        if flags & bit:
            nul = buf.find(b"\0", pos)
            if nul < 0:
                return None
            pos = nul + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return pos if len(buf) >= pos else None


def _zlib_header(data: bytes) -> bool:
    """A zlib stream's header as unpigz takes one: deflate with a window it knows, the header
    check, and no preset dictionary (that one it takes for junk)."""
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0 and not flg & 0x20


def _inflate_zlib_tail(backend: Any, source: Readable, data: bytes) -> Iterator[bytes]:
    """unpigz inflates a zlib stream after the last gzip member into the same output, then
    fails on anything after it ("trailing junk", exit 1); truncated or corrupt, it fails too."""
    rest = yield from _inflate_stream(backend.decompressobj(15), source, data, " (a zlib stream after its last member)")
    if rest or source.read(1):
        raise FormatError("gzip layer has trailing data after the zlib stream that follows its last member")


def _inflate_stream(inflater: Any, source: Readable, data: bytes, what: str) -> Generator[bytes, None, bytes]:
    """One deflate stream (a gzip member, a zlib stream) from ``data`` on, reading ``source``
    as needed; returns the bytes after it."""
    while not inflater.eof:
        if not data:
            data = source.read(CHUNK)
            if not data:
                raise FormatError(f"gzip layer is truncated{what}")
        out = inflater.decompress(data, CHUNK)
        data = inflater.unconsumed_tail
        if out:
            yield out
    return bytes(inflater.unused_data)  # (zlib repeats it in unconsumed_tail)


def _whole_member_header(data: bytes) -> bool:
    """``data`` starts with a complete gzip member header that unpigz takes for one: the magic,
    method 8 (deflate) and no reserved flag bit."""
    return data[:3] == _GZIP_MAGIC + b"\x08" and _gzip_header_end(data) is not None and not data[3] & 0xE0


def _member_start(source: Readable, data: bytes) -> bytes:
    """``data`` extended until it holds the next member's whole header (or the stream ends).

    ISA-L's streaming inflate miscomputes a header split across two calls when it carries
    optional fields (it then reports a bad checksum or deflate block): each member's header
    reaches the inflater in one piece, whichever backend runs."""
    while (len(data) < 2 or data[:2] == _GZIP_MAGIC) and _gzip_header_end(data) is None:
        if len(data) > _MAX_GZIP_HEADER:
            raise FormatError("gzip layer has a member header over 128 KiB")
        more = source.read(CHUNK)
        if not more:
            break  # done (nothing left) or a truncated header the inflater refuses
        data += more
    return data


def _gunzip(source: Readable, lenient: bool = False) -> Iterator[bytes]:
    """Multi-member gzip like Go's reader: after a member only EOF or another member may follow.
    ``lenient`` (unpigz's rule, checked against unpigz): after a member, a whole gzip header
    starts another; a zlib header (deflate, no preset dictionary) starts a zlib stream, whose
    output is the layer's too and after which nothing may follow; anything else ends the
    stream and is ignored. It is still read to the end, so the blob's own digest covers it."""
    backend, errors = inflate_backend()
    data = b""
    first = True
    try:
        while True:
            data = _member_start(source, data)
            if not data and not first:
                return
            if lenient and not first and not _whole_member_header(data):
                while len(data) < 2 and (more := source.read(CHUNK)):
                    data += more
                if _zlib_header(data):
                    yield from _inflate_zlib_tail(backend, source, data)
                    return
                while source.read(CHUNK):
                    pass
                return
            if data[:2] != _GZIP_MAGIC:
                raise FormatError("gzip layer has trailing data after its last member")
            first = False
            data = yield from _inflate_stream(backend.decompressobj(31), source, data, "")
    except errors as exc:
        raise FormatError(f"gzip layer is corrupt: {exc}") from None


def _unzstd(source: Readable) -> Iterator[bytes]:
    """All zstd frames in sequence; truncation and trailing garbage are errors."""
    import zstandard  # here: gzip and plain layers (and ``ls``) never load it

    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    try:
        while True:
            if obj.eof:
                data = obj.unused_data or source.read(_ZSTD_IN)
                if not data:
                    return
                obj = dctx.decompressobj()
            else:
                data = source.read(_ZSTD_IN)
                if not data:
                    raise FormatError("zstd layer is truncated")
            out = obj.decompress(data)
            if out:
                yield out
    except zstandard.ZstdError as exc:
        raise FormatError(f"zstd layer is corrupt: {exc}") from None


def _external(argv: list[str], source: Readable) -> Iterator[bytes]:
    """Run a decompressor process; a thread feeds it while this generator yields its output."""
    import subprocess  # here: only an external decompressor needs it (~2 ms of every export's start)

    errlog = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog)
    assert proc.stdin is not None and proc.stdout is not None
    for pipe in (proc.stdin, proc.stdout):
        try:
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, CHUNK)
        except OSError:
            pass  # larger pipes are an optimisation only
    failure: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(source, proc.stdin, failure), daemon=True)
    feeder.start()
    out_fd = proc.stdout.fileno()
    finished = False
    try:
        while data := os.read(out_fd, CHUNK):
            yield data
        feeder.join()
        if failure:
            raise failure[0]
        if proc.wait() != 0:
            errlog.seek(0)
            message = errlog.read(2000).decode("utf-8", "replace").strip()
            raise FormatError(f"{os.path.basename(argv[0])} failed: {message or proc.returncode}")
        finished = True
    finally:
        if not finished and proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        feeder.join()
        errlog.close()


def _feed(source: Readable, sink: IO[bytes], failure: list[BaseException]) -> None:
    write: Callable[[bytes], object] = sink.write
    try:
        while data := source.read(CHUNK):
            write(data)
    except BrokenPipeError:
        pass  # the process exited early; its status tells why
    except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
        failure.append(exc)
    finally:
        try:
            sink.close()
        except BrokenPipeError:
            pass
