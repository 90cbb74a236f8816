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


def _layout_blob(layout: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def busybox_oci_archive(work: Path, name: str, *, tail: bytes = b"", arch: str | None = None,
                        cmd: str = "echo ok", unlisted_layer: bytes | None = None,
                        extra: dict[str, bytes] | None = None, no_diff_ids: bool = False) -> Path:
    """``work/<last part of name>.tar``: an OCI archive of one image named ``name`` whose one
    gzip layer (busybox as ``/bin/sh``) is followed by ``tail``; its config names ``arch``
    (default: this host's) and runs ``/bin/sh -c cmd``. ``unlisted_layer`` (a layer tar): a
    second layer in the manifest that the config's diff IDs do not list (a malformed image
    containerd 1.6 and 1.7 record and cannot unpack). ``extra``: more files in the layer
    (path -> content: a layer, and so a snapshot, of its own). ``no_diff_ids``: the config lists
    none (malformed: its layer is not listed)."""
    import gzip
    import io
    import json
    import os
    import subprocess
    import tarfile

    layout = work / f"layout-{name.rsplit('/', 1)[-1].replace(':', '-')}"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    busybox = Path("/bin/busybox").read_bytes()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bin")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        info = tarfile.TarInfo("bin/sh")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
        for path, data in (extra or {}).items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    layer = _layout_blob(layout, gzip.compress(raw.getvalue(), mtime=0) + tail, "application/vnd.oci.image.layer.v1.tar+gzip")
    machine = os.uname().machine
    arch = arch or {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    config = _layout_blob(layout, json.dumps({
        "architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh", "-c", cmd]},
        "rootfs": {"type": "layers",
                   "diff_ids": [] if no_diff_ids else ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]},
    }).encode(), "application/vnd.oci.image.config.v1+json")
    layers = [layer]
    if unlisted_layer is not None:
        layers.append(_layout_blob(layout, gzip.compress(unlisted_layer, mtime=0),
                                   "application/vnd.oci.image.layer.v1.tar+gzip"))
    manifest = _layout_blob(layout, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "config": config, "layers": layers}).encode(),
                            "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    archive = work / f"{layout.name[len('layout-'):]}.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(layout), "."], check=True)
    return archive
