"""Image sources for ``import -i`` and ``verify -i``: detect the input kind and open it.

Kinds (detected, never guessed from the file name):

* a directory with an ``oci-layout`` file -> :class:`OciLayoutSource` over the directory;
* a tar whose namespace has ``oci-layout`` -> :class:`OciLayoutSource` over the tar (OCI
  archives, ``ctr images export`` output, Docker 25+ ``docker save`` — the OCI layout wins over
  a ``manifest.json`` beside it, as in ctr);
* a tar with ``manifest.json`` only -> :class:`DockerArchiveSource` (classic ``docker save``,
  skopeo ``docker-archive:``);
* a directory with skopeo's ``version`` file and ``manifest.json`` -> :class:`SkopeoDirSource`
  (skopeo ``dir:``, blobs named by hex digest);
* anything else -> :class:`UsageError` "unrecognized image format" (exit 2), naming the
  formats ctrconv reads (:data:`READABLE_FORMATS`).

Tars are read by offset, so they must be seekable files. ``-`` (stdin) and non-seekable inputs
(pipes, character devices) are first spooled to an anonymous temp file in ``workdir`` (default:
the system temp dir, ``$TMPDIR``); a gzip- or zstd-compressed tar is decompressed into such a
file too. Anonymous files (already unlinked) never outlive the process. The disk needed is the
size of the (uncompressed) tar.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Union

from ctrconv import stdstreams
from ctrconv.errors import CtrconvError, FormatError, NotFoundError, UsageError
from ctrconv.lazy import lazy_exports
from ctrconv.streams import CHUNK

if TYPE_CHECKING:
    from datetime import date

    from ctrconv.registry import RegistryOptions
    from ctrconv.sources.containerd_root import ContainerdRootSource, RootEntry
    from ctrconv.sources.docker_archive import DockerArchiveSource, ReuseCompressed
    from ctrconv.sources.layout_dir import open_layout_dir
    from ctrconv.sources.oci_layout import OciLayoutSource
    from ctrconv.sources.skopeo_dir import SkopeoDirSource

#: name -> the submodule defining it, imported on first use (PEP 562): ``export`` reads a root
#: through :mod:`.containerd_root` and needs none of the file readers (tar, docker archive...)
_WHERE = {
    **dict.fromkeys(("ContainerdRootSource", "RootEntry"), "containerd_root"),
    **dict.fromkeys(("DockerArchiveSource", "ReuseCompressed", "MANIFEST_FILE"), "docker_archive"),
    "open_layout_dir": "layout_dir",
    **dict.fromkeys(("OciLayoutSource", "LAYOUT_FILE"), "oci_layout"),
    **dict.fromkeys(("SkopeoDirSource", "is_skopeo_dir"), "skopeo_dir"),
    "TarArchive": "archive",
}
_lazy_getattr, __dir__ = lazy_exports(__name__, _WHERE)


def __getattr__(name: str) -> Any:
    """The names of :data:`_WHERE`, and :data:`FileSource` (which needs three of them)."""
    if name == "FileSource":
        from ctrconv.sources.docker_archive import DockerArchiveSource
        from ctrconv.sources.oci_layout import OciLayoutSource
        from ctrconv.sources.skopeo_dir import SkopeoDirSource

        value = Union[OciLayoutSource, DockerArchiveSource, SkopeoDirSource]
        globals()[name] = value
        return value
    return _lazy_getattr(name)


__all__ = [
    "ContainerdRootSource",
    "DockerArchiveSource",
    "FileSource",
    "OciLayoutSource",
    "READABLE_FORMATS",
    "ReuseCompressed",
    "RootEntry",
    "SkopeoDirSource",
    "open_layout_dir",
    "open_source",
    "open_tar",
]

if TYPE_CHECKING:
    #: What :func:`open_source` returns (at run time served by :func:`__getattr__`).
    FileSource = Union[OciLayoutSource, DockerArchiveSource, SkopeoDirSource]

#: The inputs :func:`open_source` reads, as an unrecognised input's error lists them.
READABLE_FORMATS = (
    "an OCI image layout directory (oci-layout, index.json, blobs/)",
    "an OCI layout tar (ctr images export, docker save of Docker 25+)",
    "a docker-archive tar (manifest.json: docker save, skopeo docker-archive:)",
    "a skopeo dir: layout (version, manifest.json, blobs named by hex digest)",
    "any of these tars gzip- or zstd-compressed",
    "docker://REGISTRY/REPO[:TAG|@DIGEST]",
)


def readable_formats() -> str:
    return "ctrconv reads " + "; ".join(READABLE_FORMATS)



def _temp_file(workdir: str | os.PathLike[str] | None) -> BinaryIO:
    import tempfile

    try:
        return tempfile.TemporaryFile(prefix="ctrconv-input-", dir=workdir)  # type: ignore[return-value]
    except OSError as exc:
        raise CtrconvError(f"cannot create a temp file in {workdir or tempfile.gettempdir()}: {exc}") from None


def _copy(src: BinaryIO, dst: BinaryIO, what: str) -> None:
    try:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            dst.write(chunk)
        dst.flush()
    except OSError as exc:
        raise CtrconvError(f"{what}: cannot spool the input to a temp file: {exc}") from None


def spool(stream: BinaryIO, workdir: str | os.PathLike[str] | None, what: str) -> BinaryIO:
    """Copy a non-seekable stream into an anonymous temp file in ``workdir``; return it at 0."""
    out = _temp_file(workdir)
    try:
        _copy(stream, out, what)
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out


def _compressed(head: bytes) -> bool:
    """gzip or zstd by the magic bytes (anything else, bzip2 and xz too, is read as a tar)."""
    from ctrconv.layers.compression import sniff_compression

    try:
        return sniff_compression(head) != "none"
    except FormatError:
        return False


def _decompress(file: BinaryIO, workdir: str | os.PathLike[str] | None, what: str) -> BinaryIO:
    """A gzip/zstd-compressed tar, decompressed into a temp file (``file`` is closed)."""
    from ctrconv.layers.compression import decompressed_chunks

    with file:
        file.seek(0)
        out = _temp_file(workdir)
        try:
            try:
                for chunk in decompressed_chunks(file):
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise CtrconvError(f"{what}: cannot write the decompressed tar: {exc}") from None
            except FormatError as exc:
                raise FormatError(f"{what}: corrupt compressed input: {exc}") from None
            out.flush()
            out.seek(0)
        except BaseException:
            out.close()
            raise
        return out


def _open_file(path: Path, workdir: str | os.PathLike[str] | None) -> BinaryIO:
    try:
        st = os.stat(path)
        f: BinaryIO = open(path, "rb")
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return f
    with f:
        return spool(f, workdir, str(path))


def open_tar(
    file: BinaryIO,
    *,
    what: str = "archive",
    workdir: str | os.PathLike[str] | None = None,
    base_name: str | None = None,
    today: date | None = None,
    reuse_compressed: ReuseCompressed | None = None,
) -> FileSource:
    """Open a seekable tar (or gzip/zstd-compressed tar) file object as an image source.

    Takes ownership of ``file``. Raises :class:`UsageError` "unrecognized image format" when it
    is neither a tar nor holds ``oci-layout`` or ``manifest.json``.
    """
    from ctrconv.sources.archive import TarArchive
    from ctrconv.sources.docker_archive import MANIFEST_FILE, DockerArchiveSource
    from ctrconv.sources.oci_layout import LAYOUT_FILE, OciLayoutSource

    try:
        head = os.pread(file.fileno(), 8, 0)
    except OSError as exc:
        file.close()
        raise UsageError(f"{what}: cannot read: {exc.strerror or exc}") from None
    if _compressed(head):
        file = _decompress(file, workdir, what)
    archive = TarArchive(file, what=what)
    try:
        if archive.has(LAYOUT_FILE):
            return OciLayoutSource(archive, base_name=base_name, today=today)
        if archive.has(MANIFEST_FILE):
            return DockerArchiveSource(
                archive, base_name=base_name, today=today, reuse_compressed=reuse_compressed
            )
    except BaseException:
        archive.close()
        raise
    archive.close()
    raise UsageError(
        f"{what}: unrecognized image format (a tar with neither {LAYOUT_FILE} nor {MANIFEST_FILE})",
        hint=readable_formats(),
    )


def open_source(
    path_or_dash: str | os.PathLike[str],
    *,
    workdir: str | os.PathLike[str] | None = None,
    base_name: str | None = None,
    stdin: BinaryIO | None = None,
    today: date | None = None,
    reuse_compressed: ReuseCompressed | None = None,
    registry: "RegistryOptions | None" = None,
) -> FileSource:
    """Open an OCI layout directory, an OCI layout tar or a docker-archive tar (``-`` = stdin),
    or ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``: an image in a registry, reached with the
    ``registry`` options (:class:`ctrconv.registry.RegistryOptions`).

    ``base_name`` is ctr's ``--base-name`` for entries named only by a bare
    ``org.opencontainers.image.ref.name``; ``stdin`` replaces ``sys.stdin.buffer`` (tests);
    ``today`` fixes the date of ``import-YYYY-MM-DD`` names (tests); ``reuse_compressed`` is
    ctr's lookup of already-compressed layers in the destination (docker-archive only, see
    :mod:`ctrconv.sources.docker_archive`). The caller closes the
    source. Errors: :class:`NotFoundError`/:class:`UsageError` (exit 2) for a missing,
    unreadable or unrecognised input, :class:`FormatError` (exit 1) for a damaged or hostile one.
    """
    from ctrconv.sources.layout_dir import open_layout_dir
    from ctrconv.sources.oci_layout import LAYOUT_FILE
    from ctrconv.sources.skopeo_dir import SkopeoDirSource, is_skopeo_dir

    from ctrconv.sources.multi import refuse_empty_input

    refuse_empty_input(path_or_dash)
    if str(path_or_dash).startswith("docker://"):
        from ctrconv.registry.source import open_registry_source

        return open_registry_source(str(path_or_dash), registry)  # type: ignore[return-value]
    if str(path_or_dash) == "-":
        if stdin is None:
            stdstreams.require("stdin", "-i -")
        stream = stdin if stdin is not None else sys.stdin.buffer
        if stream.isatty():
            raise UsageError("refusing to read an image archive from a terminal (stdin)")
        file = spool(stream, workdir, "stdin")
        return open_tar(file, what="stdin", workdir=workdir, base_name=base_name, today=today,
                        reuse_compressed=reuse_compressed)
    path = Path(path_or_dash)
    if path.is_dir():
        if not (path / LAYOUT_FILE).is_file() and is_skopeo_dir(path):
            return SkopeoDirSource(path)
        if not (path / LAYOUT_FILE).is_file():
            raise UsageError(f"{path}: unrecognized image format: a directory that is neither an OCI layout (no "
                             f"{LAYOUT_FILE}) nor a skopeo dir: layout (no version and manifest.json)",
                             hint=readable_formats())
        return open_layout_dir(path, base_name=base_name, today=today)
    file = _open_file(path, workdir)
    return open_tar(file, what=str(path), workdir=workdir, base_name=base_name, today=today,
                    reuse_compressed=reuse_compressed)
