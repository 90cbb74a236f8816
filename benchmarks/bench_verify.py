#!/usr/bin/env python3
"""Benchmark ``ctrconv verify`` on a root with >= 1 GB of blobs against ``sha256sum`` and a plain read.

Builds a single-platform image from this machine's own files (three uncompressed layers cut
from ``/usr/lib``, 1/2 + 1/3 + 1/6 of ``--size-mb``), imports it with
``ctrconv import --no-unpack`` into a fresh root, then times, for several rounds:

* ``ctrconv verify --root R -A -q`` (hashing threads = cores) and with ``-j 1``,
* ``sha256sum`` of every blob file, in one process and in one process per core
  (``xargs -P``), the floor the task names for "read and hash every byte",
* ``openssl dgst -sha256`` (one process; uses the CPU's SHA extensions like Python's
  ``hashlib``, which coreutils ``sha256sum`` does not),
* ``dd bs=1M`` of every blob file to ``/dev/null``: the floor for "read every byte" (``cat``
  is no floor: it splices into ``/dev/null`` without reading the pages).

Every case is preceded by ``sync``; with ``--cold`` the page cache is dropped too (each case
then reads from the disk), otherwise the cache is warm for every case alike. Throughput is
total blob bytes / median wall time. Peak RSS is from ``/usr/bin/time``. Not a test; results
go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_verify.py [--size-mb 1100] [--rounds 3] [--cold] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import (MT_LAYER, Results, ctrconv, ctrconv_env, file_lists, machine_facts, oci_archive, scratch,
                     settle, sha256_file, shell, timed)

IMAGE = "docker.io/library/bench-verify:v1"


def build_root(work: Path, size_mb: int) -> Path:
    """A root holding one ``size_mb`` image, imported by ctrconv without unpacking."""
    total = size_mb << 20
    layers = []
    for i, files in enumerate(file_lists(Path("/usr/lib"), [total // 2, total // 3, total // 6])):
        listing = work / f"files{i}.txt"
        listing.write_text("\n".join(files) + "\n")
        tar_path = work / f"layer{i}.tar"
        subprocess.run(["tar", "cf", str(tar_path), "-C", "/", "--no-recursion", "-T", str(listing)],
                       check=True, stderr=subprocess.DEVNULL)
        listing.unlink()
        layers.append((tar_path, MT_LAYER, "sha256:" + sha256_file(tar_path)))
    archive = oci_archive(work, IMAGE, layers)
    root = work / "root"
    subprocess.run(ctrconv("import", "--root", str(root), "-i", str(archive), "--no-unpack", "-q"),
                   env=ctrconv_env(), check=True, stdout=subprocess.DEVNULL)
    archive.unlink()
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1100, help="image size in MiB (default 1100, > 1 GB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every case")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()

    work = scratch("bench-verify-", args.workdir)
    results = Results()
    dropped = False
    try:
        t0 = time.perf_counter()
        root = build_root(work, args.size_mb)
        blobs = root / "io.containerd.content.v1.content" / "blobs" / "sha256"
        files = sorted(blobs.iterdir())
        size = sum(p.stat().st_size for p in files)
        print(f"built root: {len(files)} blobs, {size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f}s", flush=True)
        env = ctrconv_env()
        cpus = os.cpu_count() or 1
        cases = {
            "ctrconv verify -A -q": ctrconv("verify", "--root", str(root), "-A", "-q"),
            "ctrconv verify -A -q -j 1": ctrconv("verify", "--root", str(root), "-A", "-q", "-j", "1"),
            "sha256sum blobs (1 process)": shell(f"cd {blobs} && sha256sum -- *"),
            f"sha256sum blobs ({cpus} processes)": shell(f"cd {blobs} && ls | xargs -P {cpus} -n 1 sha256sum --"),
            "openssl dgst -sha256 blobs": shell(f"cd {blobs} && openssl dgst -sha256 -- *"),
            # not ``cat > /dev/null``: coreutils cat splices into /dev/null without reading
            "read blobs (dd bs=1M to /dev/null)": shell(
                f"cd {blobs} && for f in *; do dd if=\"$f\" of=/dev/null bs=1M status=none; done"),
        }
        for _ in range(args.rounds):
            for case, cmd in cases.items():
                dropped = settle(args.cold)
                results.add(case, timed(cmd, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cache = "cold page cache (dropped before every case)" if dropped else "warm page cache for every case"
    if args.cold and not dropped:
        cache = "warm page cache for every case (dropping it was refused)"
    print(f"\n{machine_facts(work.parent)}")
    print(f"{len(files)} blobs, {size / 1e9:.2f} GB, {args.rounds} rounds, {cache}; "
          f"GB/s = {size / 1e9 / results.median('ctrconv verify -A -q'):.2f} for ctrconv verify\n")
    print(results.table(ref="sha256sum blobs (1 process)", size_bytes=size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
