#!/usr/bin/env python3
"""Benchmark ``ctrconv import`` against ``ctr images import``, with and without unpacking.

Builds one single-layer image from this machine's own files (a tar of ``--dirs``, by default
about 1.6 GB and 80,000 entries of ``/usr``, compressed with ``pigz -1`` to about 600 MB) as an
OCI archive (``--layer-per-dir``: one layer per directory, e.g. the issue's 150 MB, 3-layer
image from ``usr/include usr/share/locale usr/share/doc``), then times, for ``--rounds``
rounds, each on a fresh root:

* ``ctrconv import`` (unpacks into overlayfs snapshots) vs ``ctr images import`` (same, done by
  a private containerd started on an empty root before the clock starts),
* ``ctrconv import --no-unpack`` vs ``ctr images import --no-unpack``,
* ``ctrconv import`` with zlib's inflate instead of ISA-L's (when ``isal`` is installed),
* floors: ``tar xzf`` (``--compression zstd``: ``tar -I zstd -xf``, ``none``: ``tar xf``) of each
  layer blob into its own temp dir, in order (and, gzip, ``tar -I unpigz``,
  the decompressor containerd 1.6 uses when it is on PATH), the same followed by ``sync`` (what
  ctrconv does: its tree is durable before it reports), ``cp`` of the archive.

Before every case the previous case's writes are flushed (``sync``, not timed) and the page
cache is dropped when the kernel allows it (``--warm`` keeps it). Nobody fsyncs unpacked files
(containerd does not; ctrconv does not either), both fsync content blobs.

The first ctrconv root of the run is checked with a real containerd (``ctr images check``:
complete and unpacked), so both sides do the same job. Peak RSS comes from
``/usr/bin/time``; the daemon's ``VmHWM`` after each ``ctr`` import is shown as a note.
``--profile DIR`` afterwards runs each ctrconv import once more under cProfile and prints the
top functions. Not a test; results go in ``benchmarks/README.md``.

CPU: each case's user + system seconds (``/usr/bin/time``; for ``ctr`` the client's plus the
daemon's, from ``/proc/PID/stat`` around the import), a second table: on a shared machine CPU
time separates the cases where wall time cannot. Kernel writeback threads are nobody's.

``--fs ext4-loop`` runs everything (archive, roots, the private containerd's root, the floors'
output) on a freshly made, journaled ext4 filesystem in a loop-mounted file under the workdir
(``mkfs.ext4`` with its inode tables initialised up front, so no background ``ext4lazyinit``;
the loop device does direct I/O, so ``fsync``/``sync`` reach the disk; unmounted, detached and
removed at the end): the kind of filesystem nodes run on, without the
recently-deleted-inode cost of this VM's long-used, journal-less root filesystem. Needs root.

Usage: ``python3 benchmarks/bench_import.py [--rounds 2] [--dirs usr/share ...] [--layer-per-dir] [--compression zstd]
[--warm] [--profile DIR] [--workdir DIR] [--fs default|ext4-loop] [--loop-size GB]``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from _common import (MT_LAYER, MT_LAYER_GZIP, PrivateContainerd, Results, Run, ctrconv, ctrconv_env, gzip_layer,
                     hashing_pipe, machine_facts, oci_archive, remove, scratch, settle, shell, timed, vm_hwm_kib)

IMAGE = "docker.io/library/bench-import:v1"
DEFAULT_DIRS = ["usr/share", "usr/include", "usr/bin", "usr/lib/python3", "usr/lib/llvm-14"]

CTRCONV_UNPACK = "ctrconv import"
CTRCONV_ZLIB = "ctrconv import, zlib inflate"
CTR_UNPACK = "ctr images import"
CTRCONV_NO_UNPACK = "ctrconv import --no-unpack"
CTR_NO_UNPACK = "ctr images import --no-unpack"
TAR_XZF = "tar -x layers (floor)"
TAR_XZF_SYNC = "tar -x layers + sync (floor)"
TAR_UNPIGZ = "tar -I unpigz -xf layers (floor)"
CP = "cp archive (floor)"
#: what each case's ratio is taken against
REFERENCE = {CTR_UNPACK: CTR_UNPACK, CTRCONV_UNPACK: CTR_UNPACK, CTRCONV_ZLIB: CTR_UNPACK, TAR_XZF: CTR_UNPACK,
             TAR_XZF_SYNC: CTR_UNPACK, TAR_UNPIGZ: CTR_UNPACK,
             CTR_NO_UNPACK: CTR_NO_UNPACK, CTRCONV_NO_UNPACK: CTR_NO_UNPACK, CP: CTR_NO_UNPACK}
TARGETS = {CTRCONV_UNPACK: 0.6, CTRCONV_NO_UNPACK: 0.5}
#: against the floor: unpacking must beat ``tar xzf`` + ``sync`` of the same layers
FLOOR_TARGETS = {CTRCONV_UNPACK: (TAR_XZF_SYNC, 0.9)}
#: ``python -c`` prefix running ctrconv with zlib's inflate (the fallback without ``isal``)
ZLIB_INFLATE = ("import sys, zlib; import ctrconv.layers.compression as c; "
                "c.inflate_backend = lambda: (zlib, (zlib.error,)); from ctrconv.entry import main; sys.exit(main())")
RSS_TARGET_MIB = 150


#: ``--compression``: (media type, ``tar`` arguments extracting such a layer: the floor)
COMPRESSIONS = {
    "gzip": (MT_LAYER_GZIP, "xzf"),  # pigz -1, as before
    "zstd": ("application/vnd.oci.image.layer.v1.tar+zstd", "-I zstd -xf"),  # zstd -3, as registries hold them
    "none": (MT_LAYER, "xf"),
}


def build_layers(work: Path, dirs: list[str], per_dir: bool,
                 compression: str = "gzip") -> tuple[list[tuple[Path, str, str]], int]:
    """``tar cf - DIRS | pigz -1`` (``zstd -3``, or nothing: ``--compression``), one layer or
    one per directory, hashing the tar on the way: ([(path, media type, diff_id)], tar bytes)."""
    groups = [[d] for d in dirs] if per_dir else [dirs]
    layers, total = [], 0
    for i, group in enumerate(groups):
        layer = work / f"layer{i}.tar.{compression}"
        if compression == "gzip":
            diff_id, size = gzip_layer(group, layer)
        else:
            diff_id, size = _other_layer(group, layer, compression)
        layers.append((layer, COMPRESSIONS[compression][0], diff_id))
        total += size
    return layers, total


def _other_layer(dirs: list[str], path: Path, compression: str) -> tuple[str, int]:
    """``tar cf - -C / DIRS`` into ``path`` through ``zstd -3`` or as it is: (diff_id, tar bytes)."""
    with open(path, "wb") as out:
        tar = subprocess.Popen(["tar", "cf", "-", "-C", "/", *dirs], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        comp = subprocess.Popen(["zstd", "-3", "-q", "-c", "-T0"], stdin=subprocess.PIPE, stdout=out) \
            if compression == "zstd" else None
        assert tar.stdout is not None
        sink = comp.stdin if comp is not None else out
        assert sink is not None
        hexd, size = hashing_pipe(tar.stdout, sink)
        if comp is not None:
            assert comp.stdin is not None
            comp.stdin.close()
        if tar.wait() not in (0, 1) or (comp is not None and comp.wait() != 0):
            raise SystemExit(f"building a layer of {' '.join(dirs)} failed")
    return f"sha256:{hexd}", size


def untar_all(floor_layers: list[Path], out: Path, tar_args: str, sync: bool = False) -> list[str]:
    """Each layer into its own directory under ``out``, in order (then ``sync``)."""
    steps = [f"mkdir {out}/{i} && tar {tar_args} {path} -C {out}/{i}" for i, path in enumerate(floor_layers)]
    return shell(" && ".join(steps + (["sync"] if sync else [])))


def check_with_containerd(root: Path, work: Path, unpacked: bool) -> None:
    """A real containerd on ``root`` sees the image complete (and unpacked when asked)."""
    with PrivateContainerd(root=root, workdir=work) as daemon:
        rows = [r for r in daemon.images_check() if r.ref == IMAGE]
        if not rows or not rows[0].complete or rows[0].unpacked != unpacked:
            raise SystemExit(f"containerd does not accept ctrconv's root: {rows}")


def process_cpu(pid: int | None) -> float:
    """CPU seconds a process and its waited-for children used so far (``/proc/PID/stat``)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def ctr_import(work: Path, archive: Path, *, no_unpack: bool, cold: bool) -> tuple[Run, int]:
    """One ``ctr images import`` into a fresh private daemon: (client run with the daemon's CPU
    added, daemon VmHWM KiB)."""
    with PrivateContainerd(workdir=work) as daemon:
        cmd = [str(daemon.ctr_bin), "--address", daemon.address, "-n", "default", "images", "import",
               *(["--no-unpack"] if no_unpack else []), str(archive)]
        settle(cold)
        before = process_cpu(daemon.pid)
        run = timed(cmd)
        run = Run(run.wall, run.rss_kib, (run.cpu or 0.0) + process_cpu(daemon.pid) - before)
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


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, list[Path], str]:
    """The archive, hard links to its layer blobs for the floors, and a line describing it."""
    t0 = time.perf_counter()
    layers, tar_size = build_layers(work, args.dirs, args.layer_per_dir, args.compression)
    floor_layers = []
    for i, (path, _, _) in enumerate(layers):
        floor_layers.append(work / f"floor{i}.tar.{args.compression}")
        os.link(path, floor_layers[-1])  # the layout takes the other name; no second copy on disk
    gz_size = sum(p.stat().st_size for p in floor_layers)
    list_args = COMPRESSIONS[args.compression][1].replace("x", "t")
    entries = sum(int(subprocess.run(shell(f"tar {list_args} {p} | wc -l"), capture_output=True, text=True,
                                     check=True).stdout) for p in floor_layers)
    archive = oci_archive(work, IMAGE, layers)
    label = {"gzip": "gzip -1", "zstd": "zstd -3", "none": "uncompressed"}[args.compression]
    what = (f"{len(layers)} layer(s) ({', '.join(args.dirs)}), {gz_size / 1e6:.0f} MB {label}, floors: "
            f"tar {COMPRESSIONS[args.compression][1]}, "
            f"{tar_size / 1e9:.2f} GB tar, {entries} entries")
    print(f"built {archive.stat().st_size / 1e6:.0f} MB archive: {what}, in {time.perf_counter() - t0:.0f}s",
          flush=True)
    return archive, floor_layers, what


def one_round(work: Path, archive: Path, floor_layers: list[Path], results: Results, *, first: bool,
              cold: bool, daemon_hwm: dict[str, int], compression: str = "gzip") -> bool:
    """Every case once; returns whether the page cache could be dropped."""
    env, root, out = ctrconv_env(), work / "root", work / "out"
    dropped = False
    ctrconv_cases = {
        CTRCONV_UNPACK: ctrconv("import", "--root", str(root), "-i", str(archive), "-q"),
        CTRCONV_NO_UNPACK: ctrconv("import", "--root", str(root), "-i", str(archive), "-q", "--no-unpack"),
    }
    if compression == "gzip" and importlib.util.find_spec("isal") is not None:
        ctrconv_cases[CTRCONV_ZLIB] = [sys.executable, "-c", ZLIB_INFLATE, "import", "--root", str(root),
                                       "-i", str(archive), "-q"]
    for case, cmd in ctrconv_cases.items():
        remove(root)
        dropped = settle(cold)
        results.add(case, timed(cmd, env))
        if first and case != CTRCONV_ZLIB:
            check_with_containerd(root, work, unpacked=case == CTRCONV_UNPACK)
        remove(root)
    for case, no_unpack in ((CTR_UNPACK, False), (CTR_NO_UNPACK, True)):
        run, hwm = ctr_import(work, archive, no_unpack=no_unpack, cold=cold)
        results.add(case, run)
        daemon_hwm[case] = max(hwm, daemon_hwm.get(case, 0))
        results.notes[case] = f"client only; daemon VmHWM up to {daemon_hwm[case] / 1024:.0f} MiB"
    floors = {
        TAR_XZF: untar_all(floor_layers, out, COMPRESSIONS[compression][1]),
        TAR_XZF_SYNC: untar_all(floor_layers, out, COMPRESSIONS[compression][1], sync=True),
        **({TAR_UNPIGZ: untar_all(floor_layers, out, "-I unpigz -xf")} if compression == "gzip" else {}),
        CP: ["cp", str(archive), str(out / "copy.tar")],
    }
    for case, cmd in floors.items():
        remove(out)
        out.mkdir()
        dropped = settle(cold)
        results.add(case, timed(cmd))
        remove(out)
    return dropped


def cpu_table(results: Results) -> str:
    """Median user + system CPU seconds per case, and the ratio to the case's reference."""
    width = max(len(c) for c in results.runs) + 1
    lines = [f"{'case':{width}} {'CPU s (user+sys)':>17} {'ratio':>14}"]
    for case in results.runs:
        cpu, ref = results.cpu_median(case), REFERENCE.get(case)
        ref_cpu = results.cpu_median(ref) if ref in results.runs else None
        ratio = f"{cpu / ref_cpu:.2f}x" if cpu is not None and ref_cpu else "-"
        lines.append(f"{case:{width}} {'-' if cpu is None else f'{cpu:.2f}':>17} {ratio:>14}")
    for case, (floor, _) in FLOOR_TARGETS.items():
        cpu, floor_cpu = results.cpu_median(case), results.cpu_median(floor)
        if cpu is not None and floor_cpu:
            lines.append(f"CPU {case} vs {floor}: {cpu / floor_cpu:.2f}x")
    return "\n".join(lines)


def report(results: Results) -> None:
    """The tables, then each target met or missed."""
    print(results.table(ref=REFERENCE))
    print()
    print(cpu_table(results))
    print()
    for case, target in TARGETS.items():
        ratio = results.median(case) / results.median(REFERENCE[case])
        print(f"target {case}: <= {target:.1f}x ctr -> {ratio:.2f}x {'met' if ratio <= target else 'MISSED'}")
    for case, (floor, target) in FLOOR_TARGETS.items():
        ratio = results.median(case) / results.median(floor)
        print(f"target {case}: <= {target:.1f}x {floor} -> {ratio:.2f}x {'met' if ratio <= target else 'MISSED'}")
    if results.runs.get(CTRCONV_ZLIB):
        print(f"ISA-L vs zlib inflate: {results.median(CTRCONV_UNPACK) / results.median(CTRCONV_ZLIB):.2f}x")
    for case in TARGETS:
        rss = results.peak_rss_mib(case)
        print(f"target {case}: peak RSS < {RSS_TARGET_MIB} MiB -> {rss:.0f} MiB "
              f"{'met' if rss < RSS_TARGET_MIB else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS, help="paths under / for the layer(s)")
    parser.add_argument("--layer-per-dir", action="store_true", help="one layer per --dirs entry")
    parser.add_argument("--compression", choices=sorted(COMPRESSIONS), default="gzip",
                        help="layer compression: gzip (pigz -1, default), zstd (zstd -3) or none; the floors "
                             "extract the same layers with tar")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache between cases")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile dumps of ctrconv here")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    parser.add_argument("--fs", choices=("default", "ext4-loop"), default="default",
                        help="ext4-loop: run every case on a fresh journaled ext4 loop filesystem")
    parser.add_argument("--loop-size", type=int, default=12, help="GB of the ext4-loop filesystem (sparse file)")
    args = parser.parse_args()
    with workspace(args) as work:
        return run_all(work, args)


@contextlib.contextmanager
def workspace(args: argparse.Namespace) -> Iterator[Path]:
    """The scratch dir: under the workdir, or on a fresh ext4 loop filesystem made there."""
    if args.fs == "default":
        yield scratch("bench-import-", args.workdir)
        return
    base = scratch("bench-import-loop-", args.workdir)
    image, mnt = base / "ext4.img", base / "mnt"
    mnt.mkdir()
    try:
        with open(image, "wb") as fh:
            fh.truncate(args.loop_size << 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)],
                       check=True)
        # direct I/O: the loop device writes to the disk, not into the backing file's page
        # cache, so fsync and sync cost there what they cost on a real disk
        device = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", str(image)], check=True,
                                capture_output=True, text=True).stdout.strip()
        try:
            subprocess.run(["mount", device, str(mnt)], check=True)
            try:
                yield scratch("bench-import-", mnt)
            finally:
                subprocess.run(["umount", str(mnt)], check=False)
        finally:
            subprocess.run(["losetup", "-d", device], check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_all(work: Path, args: argparse.Namespace) -> int:
    """Build the image, run the rounds, print the report."""
    results = Results(runs={case: [] for case in REFERENCE})  # table rows in this order
    daemon_hwm: dict[str, int] = {}
    dropped = False
    try:
        archive, floor_layers, what = prepare(work, args)
        for rnd in range(args.rounds):
            dropped = one_round(work, archive, floor_layers, results, first=rnd == 0, cold=not args.warm,
                                daemon_hwm=daemon_hwm, compression=args.compression)
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
        if args.profile:
            profile(archive, work, args.profile)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results.runs = {case: runs for case, runs in results.runs.items() if runs}
    cache = ("page cache dropped before every case" if dropped else
             "warm page cache for every case alike" + (" (dropping it was refused)" if not args.warm else ""))
    print(f"\n{machine_facts(work.parent)}" + (" | fresh journaled ext4 on a loop file" if args.fs != "default" else ""))
    print(f"image: {what}, {args.rounds} rounds, {cache}\n")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
