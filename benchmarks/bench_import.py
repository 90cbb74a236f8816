#!/usr/bin/env python3
"""Benchmark ``ctrconv import`` against ``ctr images import``, with and without unpacking.

Builds one single-layer image from this machine's own files (a tar of ``--dirs``, by default
about 1.6 GB and 80,000 entries of ``/usr``, compressed with ``pigz -1`` to about 600 MB) as an
OCI archive, then times, for ``--rounds`` rounds, each on a fresh root:

* ``ctrconv import`` (unpacks into overlayfs snapshots) vs ``ctr images import`` (same, done by
  a private containerd started on an empty root before the clock starts),
* ``ctrconv import --no-unpack`` vs ``ctr images import --no-unpack``,
* floors: ``tar xzf`` of the layer blob into a temp dir (and ``tar -I unpigz``, the decompressor
  containerd 1.6 uses when it is on PATH), ``cp`` of the archive.

Before every case the previous case's writes are flushed (``sync``, not timed) and the page
cache is dropped when the kernel allows it (``--warm`` keeps it). Nobody fsyncs unpacked files
(containerd does not; ctrconv does not either), both fsync content blobs.

The first ctrconv root of the run is checked with a real containerd (``ctr images check``:
complete and unpacked), so both sides do the same job. Peak RSS comes from
``/usr/bin/time``; the daemon's ``VmHWM`` after each ``ctr`` import is shown as a note.
``--profile DIR`` afterwards runs each ctrconv import once more under cProfile and prints the
top functions. Not a test; results go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_import.py [--rounds 2] [--dirs usr/share ...] [--warm]
[--profile DIR] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import (MT_LAYER_GZIP, PrivateContainerd, Results, Run, ctrconv, ctrconv_env, gzip_layer,
                     machine_facts, oci_archive, remove, scratch, settle, shell, timed, vm_hwm_kib)

IMAGE = "docker.io/library/bench-import:v1"
DEFAULT_DIRS = ["usr/share", "usr/include", "usr/bin", "usr/lib/python3", "usr/lib/llvm-14"]

CTRCONV_UNPACK = "ctrconv import"
CTR_UNPACK = "ctr images import"
CTRCONV_NO_UNPACK = "ctrconv import --no-unpack"
CTR_NO_UNPACK = "ctr images import --no-unpack"
TAR_XZF = "tar xzf layer (floor)"
TAR_UNPIGZ = "tar -I unpigz -xf layer (floor)"
CP = "cp archive (floor)"
#: what each case's ratio is taken against
REFERENCE = {CTR_UNPACK: CTR_UNPACK, CTRCONV_UNPACK: CTR_UNPACK, TAR_XZF: CTR_UNPACK, TAR_UNPIGZ: CTR_UNPACK,
             CTR_NO_UNPACK: CTR_NO_UNPACK, CTRCONV_NO_UNPACK: CTR_NO_UNPACK, CP: CTR_NO_UNPACK}
TARGETS = {CTRCONV_UNPACK: 0.6, CTRCONV_NO_UNPACK: 0.5}
RSS_TARGET_MIB = 150


def build_layer(work: Path, dirs: list[str]) -> tuple[Path, str, int]:
    """``tar cf - DIRS | pigz -1``, hashing the tar on the way: (path, diff_id, tar bytes)."""
    layer = work / "layer.tar.gz"
    diff_id, size = gzip_layer(dirs, layer)
    return layer, diff_id, size


def check_with_containerd(root: Path, work: Path, unpacked: bool) -> None:
    """A real containerd on ``root`` sees the image complete (and unpacked when asked)."""
    with PrivateContainerd(root=root, workdir=work) as daemon:
        rows = [r for r in daemon.images_check() if r.ref == IMAGE]
        if not rows or not rows[0].complete or rows[0].unpacked != unpacked:
            raise SystemExit(f"containerd does not accept ctrconv's root: {rows}")


def ctr_import(work: Path, archive: Path, *, no_unpack: bool, cold: bool) -> tuple[Run, int]:
    """One ``ctr images import`` into a fresh private daemon: (client run, daemon VmHWM KiB)."""
    with PrivateContainerd(workdir=work) as daemon:
        cmd = [str(daemon.ctr_bin), "--address", daemon.address, "-n", "default", "images", "import",
               *(["--no-unpack"] if no_unpack else []), str(archive)]
        settle(cold)
        run = timed(cmd)
        hwm = vm_hwm_kib(daemon.pid) or 0
        rows = [r for r in daemon.images_check() if r.ref == IMAGE]
        if not rows or not rows[0].complete or rows[0].unpacked == no_unpack:
            raise SystemExit(f"ctr import did not leave the image complete/unpacked: {rows}")
    return run, hwm


def profile(archive: Path, work: Path, out_dir: Path) -> None:
    """cProfile each ctrconv import once; print the top functions by own and cumulative time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for label, extra in (("import-unpack", []), ("import-no-unpack", ["--no-unpack"])):
        root = work / f"prof-{label}"
        prof = out_dir / f"{label}.prof"
        settle(True)
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "ctrconv", "import",
                        "--root", str(root), "-i", str(archive), "-q", *extra],
                       env=ctrconv_env(), check=True, stdout=subprocess.DEVNULL)
        remove(root)
        print(f"\n== cProfile: ctrconv {label} ({prof}) ==")
        stats = pstats.Stats(str(prof))
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS, help="paths under / for the layer")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache between cases")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile dumps of ctrconv here")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()

    work = scratch("bench-import-", args.workdir)
    results = Results(runs={case: [] for case in REFERENCE})  # table rows in this order
    daemon_hwm: dict[str, int] = {}
    cold = not args.warm
    dropped = False
    try:
        t0 = time.perf_counter()
        layer, diff_id, tar_size = build_layer(work, args.dirs)
        layer_copy = work / "layer-floor.tar.gz"
        os.link(layer, layer_copy)  # the layout takes the other name; no second copy on disk
        layer_size = layer.stat().st_size
        entries = int(subprocess.run(shell(f"tar tzf {layer_copy} | wc -l"), capture_output=True, text=True,
                                     check=True).stdout)
        archive = oci_archive(work, IMAGE, [(layer, MT_LAYER_GZIP, diff_id)])
        print(f"built {archive.stat().st_size / 1e6:.0f} MB archive (layer {layer_size / 1e6:.0f} MB gzip -1, "
              f"{tar_size / 1e9:.2f} GB tar, {entries} entries) in {time.perf_counter() - t0:.0f}s", flush=True)

        env = ctrconv_env()
        root = work / "root"
        scratch_dir = work / "out"
        ctrconv_cases = {
            CTRCONV_UNPACK: ctrconv("import", "--root", str(root), "-i", str(archive), "-q"),
            CTRCONV_NO_UNPACK: ctrconv("import", "--root", str(root), "-i", str(archive), "-q", "--no-unpack"),
        }
        floors = {
            TAR_XZF: ["tar", "xzf", str(layer_copy), "-C", str(scratch_dir)],
            TAR_UNPIGZ: ["tar", "-I", "unpigz", "-xf", str(layer_copy), "-C", str(scratch_dir)],
            CP: ["cp", str(archive), str(scratch_dir / "copy.tar")],
        }
        for rnd in range(args.rounds):
            for case, cmd in ctrconv_cases.items():
                remove(root)
                dropped = settle(cold)
                results.add(case, timed(cmd, env))
                if rnd == 0:
                    check_with_containerd(root, work, unpacked=case == CTRCONV_UNPACK)
                remove(root)
            for case, no_unpack in ((CTR_UNPACK, False), (CTR_NO_UNPACK, True)):
                run, hwm = ctr_import(work, archive, no_unpack=no_unpack, cold=cold)
                results.add(case, run)
                daemon_hwm[case] = max(hwm, daemon_hwm.get(case, 0))
                results.notes[case] = f"client only; daemon VmHWM up to {daemon_hwm[case] / 1024:.0f} MiB"
            for case, cmd in floors.items():
                remove(scratch_dir)
                scratch_dir.mkdir()
                dropped = settle(cold)
                results.add(case, timed(cmd))
                remove(scratch_dir)
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
        if args.profile:
            profile(archive, work, args.profile)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cache = ("page cache dropped before every case" if dropped else
             "warm page cache for every case alike" + (" (dropping it was refused)" if cold else ""))
    print(f"\n{machine_facts(work.parent)}")
    print(f"image: 1 layer, {layer_size / 1e6:.0f} MB gzip -1 ({tar_size / 1e9:.2f} GB tar, {entries} entries), "
          f"{args.rounds} rounds, {cache}\n")
    print(results.table(ref=REFERENCE))
    print()
    for case, target in TARGETS.items():
        ratio = results.median(case) / results.median(REFERENCE[case])
        print(f"target {case}: <= {target:.1f}x ctr -> {ratio:.2f}x {'met' if ratio <= target else 'MISSED'}")
    for case in TARGETS:
        rss = results.peak_rss_mib(case)
        print(f"target {case}: peak RSS < {RSS_TARGET_MIB} MiB -> {rss:.0f} MiB "
              f"{'met' if rss < RSS_TARGET_MIB else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
