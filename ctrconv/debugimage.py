"""A debug-container image of ctrconv, made by ctrconv's own writers.

The image holds the standalone executable (``scripts/build-standalone``) and the shared
libraries it loads from the machine (what ``ldd`` names: glibc's libraries and the dynamic
loader, libz), on an empty base, in one layer:

    /usr/local/bin/ctrconv          the standalone file
    /lib/x86_64-linux-gnu/libc.so.6 ... and the other libraries, at the paths ldd resolved
    /lib64/ld-linux-x86-64.so.2     the dynamic loader the executable names
    /tmp                            1777: the bootloader unpacks the bundle here

The layer is written by :func:`ctrconv.layers.regenerate.write_layer` (the deterministic tar
writer of ``export --from-snapshots``), the image as an OCI layout tar or directory by the
export sinks (:mod:`ctrconv.sinks`), and into a containerd root by the import writer
(:func:`ctrconv.api.import_images`). With the same executable, libraries and ``created`` time
the image digest is the same on every build (every mtime is set to ``created``).

Its config runs nothing by itself (``Cmd ["ctrconv", "--help"]``, no entrypoint), so the
command given to ``kubectl debug node/NAME --image=... -- ctrconv verify ...``, ``ctr run`` or
``docker run`` is run as it is. Labels (and manifest annotations): ``org.opencontainers.image.
{title,description,version,source,revision,created,licenses}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ctrconv import __version__
from ctrconv.digest import Digest
from ctrconv.errors import CtrconvError, UsageError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.gojson import marshal_go

BINARY_PATH = "/usr/local/bin/ctrconv"
ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_NAME = f"localhost/ctrconv:{__version__}"
#: machine -> OCI architecture
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64", "i686": "386"}
FORMATS = ("oci-tar", "oci-dir", "containerd-root")


@dataclass
class DebugImage:
    """What was built (and where it went)."""

    name: str
    digest: str
    config_digest: str
    layer_digest: str
    diff_id: str
    size: int
    platform: str
    files: list[str]
    labels: dict[str, str]
    output: str
    format: str
    #: the import report when written into a root
    imported: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"}


def machine_libraries(binary: str | os.PathLike[str]) -> list[str]:
    """The absolute paths ``ldd`` resolves for ``binary`` (the dynamic loader included)."""
    try:
        out = subprocess.run(["ldd", os.fspath(binary)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CtrconvError(f"cannot list the libraries of {binary} with ldd: {exc}") from exc
    paths = []
    for line in out.splitlines():
        if "not found" in line:
            raise CtrconvError(f"{binary}: a library it needs is missing here: {line.strip()}")
        match = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+) \(", line)
        if match:
            paths.append(match.group(1))
    if not paths:
        raise UsageError(f"{binary} is not a dynamically linked executable (ldd names no library)")
    return paths


def default_labels(source: str | None = None, revision: str | None = None, created: str | None = None) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": "ctrconv",
        "org.opencontainers.image.description":
            "ctrconv (standalone, no Python): read, verify, export and repair a containerd root without the daemon",
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    if source:
        labels["org.opencontainers.image.source"] = source
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    if created:
        labels["org.opencontainers.image.created"] = created
    return labels


def _stage(stage: Path, binary: Path, libraries: list[str], mtime: int) -> list[str]:
    """The image's root filesystem in ``stage``; returns its file paths."""
    files = [BINARY_PATH]
    target = stage / BINARY_PATH.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copyfile(binary, target)
    os.chmod(target, 0o755)
    for lib in libraries:
        copy = stage / lib.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.realpath(lib), copy)
        os.chmod(copy, 0o755)
        files.append(lib)
    (stage / "tmp").mkdir()
    os.chmod(stage / "tmp", 0o1777)
    for path in sorted(stage.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return sorted(files)


@dataclass
class _Blobs:
    """The image's blobs as written to a temporary directory: descriptor and file by digest."""

    descriptors: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def add(self, descriptor: dict[str, Any], path: Path) -> dict[str, Any]:
        self.descriptors[descriptor["digest"]] = descriptor
        self.files[descriptor["digest"]] = path
        return descriptor

    def write(self, directory: Path, media_type: str, data: bytes) -> dict[str, Any]:
        """Write a small document blob (config, manifest) and return its descriptor."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = directory / digest.replace(":", "-")
        path.write_bytes(data)
        return self.add({"mediaType": media_type, "digest": digest, "size": len(data)}, path)


def _config(created: str, arch: str, labels: dict[str, str], diff_id: str, libraries: int) -> dict[str, Any]:
    """The image config: ``ctrconv --help`` as the command, the labels, one layer's history."""
    return {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": [ENV_PATH, "TMPDIR=/tmp"],
            "Cmd": ["ctrconv", "--help"],
            "WorkingDir": "/",
            "Labels": dict(sorted(labels.items())),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": f"ctrconv {__version__} debug image: "
                     f"{BINARY_PATH} and the {libraries} libraries ldd names"}],
    }


def _write_layout(fmt: str, out: Path, name: str, manifest: Any, blobs: _Blobs) -> None:
    """Write the image through the sink of ``fmt``, every blob verified as it is copied."""
    from ctrconv.sinks import ExportedImage, blob_path, open_sink
    from ctrconv.sinks._layout import name_entry
    from ctrconv.streams import VerifyingReader

    sink = open_sink(fmt, out)
    try:
        sink.add_names([ExportedImage(name, name_entry(manifest.descriptor, name), manifest)])
        for digest in sorted(blobs.files, key=blob_path):
            desc = blobs.descriptors[digest]
            with open(blobs.files[digest], "rb") as stream:
                reader = VerifyingReader(stream, Digest.parse(digest), desc["size"])
                sink.add_blob(desc, reader, source_path=blobs.files[digest])
        sink.commit()
    except BaseException:
        sink.abort()
        raise


def _layer_media_type(compression: str) -> str:
    layer_type = {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}.get(compression)
    if layer_type is None:
        raise UsageError(f"unknown compression {compression!r} (gzip, zstd or none)")
    return layer_type


def build_debug_image(
    binary: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: str = "oci-tar",
    name: str = DEFAULT_NAME,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    created: datetime | None = None,
    compression: str = "gzip",
    libraries: list[str] | None = None,
    containerd_version: str | None = None,
) -> DebugImage:
    """Make the debug image of ``binary`` and write it to ``output``: an OCI layout tar
    (``oci-tar``) or directory (``oci-dir``), or into the containerd root ``output``
    (``containerd-root``: in ``namespace``, unpacked for the host's snapshotter, overlayfs).

    ``created`` (default: ``SOURCE_DATE_EPOCH``, else the Unix epoch) is the image's creation
    time and every file's mtime, so equal inputs give an equal digest.
    """
    from ctrconv.layers.regenerate import write_layer
    from ctrconv.image.plan import PlannedManifest

    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r} (choose from {', '.join(FORMATS)})")
    binary = Path(binary)
    if not binary.is_file():
        raise UsageError(f"{binary} does not exist (build it with scripts/build-standalone)")
    layer_type = _layer_media_type(compression)
    if created is None:
        created = datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")), timezone.utc)
    created_text = created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    libraries = machine_libraries(binary) if libraries is None else libraries
    all_labels = {**default_labels(created=created_text), **(labels or {})}
    arch = _ARCHES.get(_platform.machine(), _platform.machine())

    with tempfile.TemporaryDirectory(prefix="ctrconv-debug-image-") as tmp:
        work = Path(tmp)
        (work / "rootfs").mkdir()
        files = _stage(work / "rootfs", binary, libraries, int(created.timestamp()))
        (work / "blobs").mkdir()
        blobs = _Blobs()
        fd = os.open(work / "blobs" / "layer", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            layer = write_layer(fd, compression, tree=work / "rootfs")  # type: ignore[arg-type]
        finally:
            os.close(fd)
        layer_desc = blobs.add({"mediaType": layer_type, "digest": layer.digest, "size": layer.size},
                               work / "blobs" / "layer")
        config = _config(created_text, arch, all_labels, layer.diff_id, len(libraries))
        config_desc = blobs.write(work / "blobs", mt.OCI_CONFIG, json.dumps(config, separators=(",", ":")).encode())
        manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc,
                    "layers": [layer_desc], "annotations": dict(sorted(all_labels.items()))}
        manifest_desc = blobs.write(work / "blobs", mt.OCI_MANIFEST, marshal_go(manifest))
        planned = PlannedManifest(descriptor=manifest_desc, platform={"architecture": arch, "os": "linux"},
                                  config=config_desc, layers=[layer_desc], document=manifest)
        result = DebugImage(
            name=name, digest=manifest_desc["digest"], config_digest=config_desc["digest"], layer_digest=layer.digest,
            diff_id=layer.diff_id, size=manifest_desc["size"] + config_desc["size"] + layer.size,
            platform=f"linux/{arch}", files=files, labels=all_labels, output=os.fspath(output), format=format,
        )
        if format == "containerd-root":
            result.imported = _import_into_root(work / "image.tar", output, namespace, containerd_version,
                                                name, planned, blobs)
        else:
            _write_layout(format, Path(output), name, planned, blobs)
    return result


def _import_into_root(archive: Path, root: str | os.PathLike[str], namespace: str, containerd_version: str | None,
                      name: str, manifest: Any, blobs: _Blobs) -> dict[str, Any]:
    """Into a containerd root the image goes the way every archive does: ``import``."""
    from ctrconv import api

    _write_layout("oci-tar", archive, name, manifest, blobs)
    options: dict[str, Any] = {}
    if containerd_version is not None:
        options["containerd_version"] = containerd_version
    return api.import_images(str(archive), root, namespace, **options).to_json()
