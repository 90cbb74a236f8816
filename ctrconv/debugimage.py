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
from ctrconv.oci.model import marshal_go

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


def _write_blob(directory: Path, data: bytes) -> tuple[dict[str, Any], Path]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = directory / digest.replace(":", "-")
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}, path


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
    from ctrconv.sinks import ExportedImage, blob_path, open_sink
    from ctrconv.sinks._layout import name_entry
    from ctrconv.streams import VerifyingReader

    if format not in FORMATS:
        raise UsageError(f"unknown format {format!r} (choose from {', '.join(FORMATS)})")
    binary = Path(binary)
    if not binary.is_file():
        raise UsageError(f"{binary} does not exist (build it with scripts/build-standalone)")
    if created is None:
        created = datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")), timezone.utc)
    created_text = created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    libraries = machine_libraries(binary) if libraries is None else libraries
    all_labels = {**default_labels(created=created_text), **(labels or {})}
    arch = _ARCHES.get(_platform.machine(), _platform.machine())
    layer_type = {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}.get(compression)
    if layer_type is None:
        raise UsageError(f"unknown compression {compression!r} (gzip, zstd or none)")

    with tempfile.TemporaryDirectory(prefix="ctrconv-debug-image-") as tmp:
        work = Path(tmp)
        stage = work / "rootfs"
        stage.mkdir()
        files = _stage(stage, binary, libraries, int(created.timestamp()))
        blobs = work / "blobs"
        blobs.mkdir()
        layer_file = blobs / "layer"
        fd = os.open(layer_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            layer = write_layer(fd, compression, tree=stage)  # type: ignore[arg-type]
        finally:
            os.close(fd)
        layer_desc = {"mediaType": layer_type, "digest": layer.digest, "size": layer.size}
        config = {
            "created": created_text,
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": [ENV_PATH, "TMPDIR=/tmp"],
                "Cmd": ["ctrconv", "--help"],
                "WorkingDir": "/",
                "Labels": dict(sorted(all_labels.items())),
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": created_text, "created_by": f"ctrconv {__version__} debug image: "
                         f"{BINARY_PATH} and the {len(libraries)} libraries ldd names"}],
        }
        config_ref, config_file = _write_blob(blobs, json.dumps(config, indent=None, separators=(",", ":")).encode())
        config_desc = {"mediaType": mt.OCI_CONFIG, **config_ref}
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config_desc,
            "layers": [layer_desc],
            "annotations": dict(sorted(all_labels.items())),
        }
        manifest_ref, manifest_file = _write_blob(blobs, marshal_go(manifest))
        platform = {"architecture": arch, "os": "linux"}
        manifest_desc = {"mediaType": mt.OCI_MANIFEST, **manifest_ref}
        planned = PlannedManifest(descriptor=manifest_desc, platform=platform, config=config_desc,
                                  layers=[layer_desc], document=manifest)
        blob_files = {layer.digest: layer_file, config_ref["digest"]: config_file, manifest_ref["digest"]: manifest_file}
        descriptors = {layer.digest: layer_desc, config_ref["digest"]: config_desc, manifest_ref["digest"]: manifest_desc}

        def write_layout(fmt: str, out: Path) -> None:
            sink = open_sink(fmt, out)
            try:
                sink.add_names([ExportedImage(name, name_entry(manifest_desc, name), planned)])
                for digest in sorted(blob_files, key=blob_path):
                    desc = descriptors[digest]
                    with open(blob_files[digest], "rb") as stream:
                        reader = VerifyingReader(stream, Digest.parse(digest), desc["size"])
                        sink.add_blob(desc, reader, source_path=blob_files[digest])
                sink.commit()
            except BaseException:
                sink.abort()
                raise

        result = DebugImage(
            name=name, digest=manifest_ref["digest"], config_digest=config_ref["digest"], layer_digest=layer.digest,
            diff_id=layer.diff_id, size=manifest_ref["size"] + config_ref["size"] + layer.size,
            platform=f"linux/{arch}", files=files, labels=all_labels, output=os.fspath(output), format=format,
        )
        if format == "containerd-root":
            from ctrconv import api

            archive = work / "image.tar"
            write_layout("oci-tar", archive)
            options: dict[str, Any] = {}
            if containerd_version is not None:
                options["containerd_version"] = containerd_version
            report = api.import_images(str(archive), output, namespace, **options)
            result.imported = report.to_json()
        else:
            write_layout(format, Path(output))
    return result
