#!/usr/bin/env python3
"""Benchmark ``ctrconv export`` against ``ctr images export`` and a plain ``tar cf``.

Builds a >= 500 MB single-platform image from this machine's own files (two layers cut from
``/usr/lib``, uncompressed by default, gzip or zstd with ``--compression``), imports it with
``ctr images import --no-unpack`` into a private containerd root,
then times, for several rounds (warm page cache for everyone):

* ``ctr images export`` (daemon running),
* ``ctrconv export`` to oci-tar, to oci-dir, and to oci-dir with ``--link`` (daemon stopped),
* ``tar cf`` of the content store's blob files (a lower bound: no hashing, no JSON, and the
  output left in the page cache when ``tar`` exits),
* the same ``tar cf`` followed by ``sync`` of the archive (the durable floor: what an export
  that must survive a power cut when it exits, as ctrconv's does, cannot go below without hashing),
* ``dd`` of as many zero bytes straight to the disk (``O_DIRECT``): what this disk needs to
  store the export's bytes at all, with nothing read, hashed or cached,

and prints wall times, throughput, ratios to ctr and to the ``tar cf`` floor, CPU time (user +
system) and peak RSS (``wait4`` rusage of each child), and the load average before and after
(other processes on the machine show there). Not a test; results go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_export.py [--size-mb 600] [--rounds 3] [--compression gzip] [--workdir DIR]``

``--size-mb`` is the size of the files in the layers; a compressed image's blobs are smaller
(the table prints the blob bytes). Registry images are gzip: ``--size-mb 300 --compression gzip``
gives an image of ~150 MB of blobs, the issue's "150 MB image" as nodes pull it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from support.daemon import PrivateContainerd, containerd_version  # noqa: E402

from _common import ctrconv_env, file_lists  # noqa: E402  (benchmarks/ is the script directory)

IMAGE = "docker.io/library/bench:v1"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
#: --compression: (media type suffix, command compressing stdin to stdout); gzip at Go's default level 6
COMPRESSORS = {"none": ("", None), "gzip": ("+gzip", ["gzip", "-6", "-n", "-c"]), "zstd": ("+zstd", ["zstd", "-3", "-q", "-c"])}


def _blob(layout: Path, data_path: Path | None = None, data: bytes | None = None, keep: bool = False) -> dict:
    """Descriptor of a blob, moved (or written) into the layout; ``keep``: only hash the file."""
    h = hashlib.sha256()
    if data is None:
        assert data_path is not None
        with open(data_path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        size = data_path.stat().st_size
    else:
        h.update(data)
        size = len(data)
    dest = layout / "blobs" / "sha256" / h.hexdigest()
    if keep:
        pass
    elif data is None:
        os.replace(data_path, dest)  # type: ignore[arg-type]
    else:
        dest.write_bytes(data)
    return {"digest": f"sha256:{h.hexdigest()}", "size": size}


def build_archive(work: Path, size_mb: int, compression: str = "none") -> Path:
    """An OCI archive with two layers of local files (about 2/3 + 1/3 of the size)."""
    layout = work / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    total = size_mb << 20
    layers = []
    diff_ids = []
    for i, files in enumerate(file_lists(Path("/usr/lib"), [total * 2 // 3, total // 3])):
        listing = work / f"files{i}.txt"
        listing.write_text("\n".join(files) + "\n")
        tar_path = work / f"layer{i}.tar"
        subprocess.run(["tar", "cf", str(tar_path), "-C", "/", "--no-recursion", "-T", str(listing)],
                       check=True, stderr=subprocess.DEVNULL)
        diff_ids.append(_blob(layout, data_path=tar_path, keep=True)["digest"])
        suffix, compressor = COMPRESSORS[compression]
        if compressor is not None:
            packed = work / f"layer{i}.tar.c"
            with open(tar_path, "rb") as src, open(packed, "wb") as dst:
                subprocess.run(compressor, stdin=src, stdout=dst, check=True)
            tar_path.unlink()
            tar_path = packed
        layers.append({"mediaType": MT_LAYER + suffix, **_blob(layout, tar_path)})
    config = {"architecture": _goarch(), "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(layout, data=json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": layers}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     **_blob(layout, data=json.dumps(manifest).encode()),
                     "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "v1"}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    archive = work / "image.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(layout), "."], check=True)
    shutil.rmtree(layout)
    return archive


def _goarch() -> str:
    import platform

    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """(wall seconds, peak RSS KiB, CPU seconds: user + system) of one child process.

    ``posix_spawn`` (not fork) so the child's ``ru_maxrss`` is its own, not this process's.
    """
    err_path = Path(tempfile.mkstemp(prefix="bench-err-")[1])
    actions = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
               (os.POSIX_SPAWN_OPEN, 2, str(err_path), os.O_WRONLY | os.O_TRUNC, 0)]
    start = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, env if env is not None else dict(os.environ), file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    err = err_path.read_text(errors="replace")
    err_path.unlink()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}): {err}")
    return wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compression", choices=sorted(COMPRESSORS), default="none",
                        help="layer compression (default: none)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-export-", dir=args.workdir or "/var/tmp"))
    results: dict[str, list[tuple[float, int, float]]] = {}
    load_before = os.getloadavg()
    try:
        t0 = time.perf_counter()
        archive = build_archive(work, args.size_mb, args.compression)
        root = work / "root"
        out = work / "out"
        print(f"built {archive.stat().st_size / 2**20:.0f} MiB archive in {time.perf_counter() - t0:.1f}s", flush=True)
        env = ctrconv_env()
        ctrconv = [sys.executable, "-m", "ctrconv", "export", "--root", str(root), "-q", "--image", IMAGE]
        with PrivateContainerd(root=root, workdir=work) as daemon:
            daemon.ctr("images", "import", "--no-unpack", str(archive), timeout=600)
            archive.unlink()
            ctr_cmd = [str(daemon.ctr_bin), "--address", daemon.address, "-n", "default", "images", "export",
                       str(out), IMAGE]
            for _ in range(args.rounds):
                _clear(out)
                results.setdefault("ctr images export", []).append(timed(ctr_cmd))
        blobs = root / "io.containerd.content.v1.content"
        size = sum(p.stat().st_size for p in (blobs / "blobs" / "sha256").iterdir())
        cases = {
            "ctrconv export oci-tar": ctrconv + ["-o", str(out) + ".tar"],
            "ctrconv export oci-dir": ctrconv + ["-o", str(out)],
            "ctrconv export oci-dir --link": ctrconv + ["-o", str(out), "--link"],
            "tar cf blobs (baseline)": ["tar", "cf", str(out) + ".tar", "-C", str(blobs), "blobs"],
            "tar cf blobs + sync (durable)": ["sh", "-c", 'tar cf "$1" -C "$2" blobs && sync "$1"', "sh",
                                              str(out) + ".tar", str(blobs)],
            # the disk's own floor: as many bytes written straight to it, nothing read or hashed
            "dd zeros, O_DIRECT (disk floor)": ["dd", "if=/dev/zero", f"of={out}.tar", "bs=8M",
                                                f"count={-(-size // (8 << 20))}", "oflag=direct", "status=none"],
        }
        for _ in range(args.rounds):
            for name, cmd in cases.items():
                _clear(out)
                _clear(Path(str(out) + ".tar"))
                results.setdefault(name, []).append(timed(cmd, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ctr_median = statistics.median(w for w, _, _ in results["ctr images export"])
    floor = results["tar cf blobs (baseline)"]
    floor_median, floor_min = statistics.median(w for w, _, _ in floor), min(w for w, _, _ in floor)
    durable_median = statistics.median(w for w, _, _ in results["tar cf blobs + sync (durable)"])
    print(f"\ncontainerd {containerd_version()}, image {size / 2**20:.0f} MiB of blobs "
          f"({args.compression} layers) in {len(list(results))} cases, "
          f"{args.rounds} rounds, warm page cache, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'case':32} {'median s':>9} {'min s':>7} {'MiB/s':>7} {'vs ctr':>7} {'vs tar':>7} {'min/min':>7} "
          f"{'vs tar+sync':>11} {'CPU s':>6} {'peak RSS':>9}")
    for name, runs in results.items():
        walls = [w for w, _, _ in runs]
        median = statistics.median(walls)
        rss = max(r for _, r, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        print(f"{name:32} {median:9.2f} {min(walls):7.2f} {size / 2**20 / median:7.0f} {median / ctr_median:6.2f}x "
              f"{median / floor_median:6.2f}x {min(walls) / floor_min:6.2f}x {median / durable_median:10.2f}x {cpu:6.2f} "
              f"{rss / 1024:7.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
