"""Export destinations: OCI layout directory, OCI layout tar, docker archive, skopeo ``dir:``.

:func:`open_sink` builds the sink for a format; :func:`detect_format` picks the format from
the output name the way the CLI contract says (``*.tar`` -> oci-tar, else oci-dir).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ctrconv.errors import UsageError
from ctrconv.lazy import lazy_exports
from ctrconv.outputs import Output, resolve_output

if TYPE_CHECKING:
    from ctrconv.sinks.base import Sink

FORMATS = ("oci-dir", "oci-tar", "docker-archive", "dir")
#: formats whose output is a directory
DIRECTORY_FORMATS = ("oci-dir", "dir")

__all__ = [
    "DIRECTORY_FORMATS", "FORMATS", "BlobReader", "DockerArchiveSink", "ExportedImage", "OciDirSink", "OciTarSink",
    "Sink", "SkopeoDirSink", "blob_path", "detect_format", "name_entry", "open_sink", "resolve_sink_output",
]

#: the sinks and their helpers, imported on first use (PEP 562): the format names above are
#: all ``ctrconv --help`` needs, and the sinks bring the schema validation with them
_WHERE = {
    "name_entry": "_layout",
    **dict.fromkeys(("BlobReader", "ExportedImage", "Sink", "blob_path"), "base"),
    "DockerArchiveSink": "docker_archive",
    "OciDirSink": "oci_dir",
    "OciTarSink": "oci_tar",
    "SkopeoDirSink": "skopeo_dir",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)


def detect_format(out: str) -> str:
    """``-`` and ``*.tar`` -> ``oci-tar``; anything else -> ``oci-dir``."""
    return "oci-tar" if out == "-" or out.endswith(".tar") else "oci-dir"


def resolve_sink_output(out: str | Path | BinaryIO, fmt: str | None) -> tuple[Output, str]:
    """Where an image output goes (:mod:`ctrconv.outputs`: stdout, a device or FIFO written
    through, a symlink resolved, else a path written atomically), and in which format: the
    given one, else oci-tar for a stream or node, else by the (resolved) name. Shared by every
    command that writes an image file or layout (export, convert, commit)."""
    resolved = resolve_output(out) if isinstance(out, (str, Path)) else Output("-", stream=out)
    if fmt is None:
        fmt = "oci-tar" if resolved.is_stream else detect_format(str(resolved.path))
    if resolved.is_stream and fmt in DIRECTORY_FORMATS:
        resolved.require_streaming(fmt)
    path = resolved.path
    if path is not None and fmt not in DIRECTORY_FORMATS:
        if path.is_dir():
            raise UsageError(f"{path} is a directory; a {fmt} output is a file")
        if not path.parent.is_dir():
            raise UsageError(f"{path.parent} does not exist")
    return resolved, fmt


def open_sink(
    fmt: str,
    out: Path | BinaryIO,
    *,
    index_media_type: bool | None = None,
    manifest_json: bool = True,
    link: bool = False,
    verify_links: bool = True,
    all_platforms: bool = False,
) -> Sink:
    """The sink for ``fmt`` writing to ``out`` (a path, or a binary stream for tar formats).

    ``index_media_type=None`` means the format's default: omitted for OCI formats (as
    containerd 1.6.20 writes index.json), present for docker-archive (as Docker 25+ does).
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    from ctrconv.sinks.docker_archive import DockerArchiveSink
    from ctrconv.sinks.oci_dir import OciDirSink
    from ctrconv.sinks.oci_tar import OciTarSink
    from ctrconv.sinks.skopeo_dir import SkopeoDirSink

    if fmt == "oci-dir":
        if not isinstance(out, Path):
            raise UsageError("oci-dir cannot be written to a stream; use --format oci-tar with -o -")
        return OciDirSink(out, index_media_type=bool(index_media_type), manifest_json=manifest_json,
                          link=link, verify_links=verify_links)
    if fmt == "dir":
        if not isinstance(out, Path):
            raise UsageError("a dir: layout cannot be written to a stream; use --format oci-tar with -o -")
        if link:
            raise UsageError("--link only applies to --format oci-dir")
        return SkopeoDirSink(out, all_platforms=all_platforms)
    if link:
        raise UsageError("--link only applies to --format oci-dir")
    if fmt == "oci-tar":
        return OciTarSink(out, index_media_type=bool(index_media_type), manifest_json=manifest_json)
    if not manifest_json:
        raise UsageError("a docker archive always has manifest.json")
    return DockerArchiveSink(out, index_media_type=True if index_media_type is None else index_media_type)
