#!/usr/bin/env python3
"""Benchmark ctrconv on a large root: 10,000 images, ~30,000 blobs, 5,000 snapshots (issue 17).

The root is written straight from ctrconv's own record writers by ``tests/support/scale_root.py``
(three blobs per image over 50 shared base layers, every 20th image a two-platform index, the
first half of the images unpacked into committed overlayfs snapshots), deterministically, and
cached under ``.cache/bench-scale/`` (built once, under a file lock). ``--images N`` (default
10,000) gives ~3N blobs and ~N/2 snapshots; ``--scale K`` multiplies N.

Then, for ``--rounds`` rounds (warm page cache), times under ``/usr/bin/time`` (peak RSS):
``ls -A`` (with an empty listing-facts directory, as a root's first listing, and ``ls warm``
with the facts a first listing left: :mod:`ctrconv.listingfacts`), ``verify -A -q`` (hashing every blob) and ``verify -A -q --no-hash``, ``export --all``
to oci-tar and to docker-archive, ``rebuild -o`` (``--link``, and copying), plus the floors
measured in the same run: ``ctrconv --help`` (start-up), ``sha256sum`` of every blob, ``tar cf``
of the blob directory and ``cp -a`` of the root. With ``--compare-scale K`` it also builds the
K-times root and prints, per command, the ratio of the two (at most 2.0 for a doubling is the
target: linear cost). ``--own-layers L`` builds the deeper shape of ``build_deep_root`` instead
(5 shared layers and L of each image's own; at L=9 a 10,000-image root holds 167,700 blobs and
34,500 snapshots), where per-blob and per-snapshot costs show.

Usage: ``python3 benchmarks/bench_scale.py [--images 10000] [--scale 1] [--compare-scale 2]
[--own-layers L] [--rounds 1] [--only ls,verify-nohash] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import GNU_TIME, REPO, ctrconv, ctrconv_env, machine_facts, scratch, shell

from support.fixture_set import build_once  # noqa: E402
from support.scale_root import build_deep_root, build_root  # noqa: E402

from ctrconv.containerd import schema as K

BUILD_VERSION = "1"  # bump when the generated root changes
CACHE = REPO / ".cache" / "bench-scale"


def cached_root(count: int, own_layers: int = 0) -> tuple[Path, dict[str, int]]:
    """The root for ``count`` images under ``.cache/bench-scale/`` (built once); ``own_layers``:
    the deep shape with that many layers of each image's own (0: the default shape)."""
    def build(staging: Path) -> None:
        staging.mkdir(parents=True)
        if own_layers:
            facts = build_deep_root(staging / "root", count, own_layers=own_layers)
        else:
            facts = build_root(staging / "root", count)
        (staging / "root.json").write_text(json.dumps(facts))

    shape = f"-deep{own_layers}" if own_layers else ""
    final = build_once(CACHE, f"images-{count}{shape}-v{BUILD_VERSION}", "root.json", build)
    return final / "root", json.loads((final / "root.json").read_text())


def cases(root: Path, out: Path, only: set[str] | None) -> dict[str, tuple[list[str], tuple[int, ...]]]:
    """name -> (command, accepted exit codes); outputs go under ``out`` (removed between runs)."""
    blobs = root / K.CONTENT_PLUGIN_DIR / "blobs" / "sha256"
    r = str(root)
    all_cases = {
        "start-up": (ctrconv("--help"), (0,)),
        "ls": (ctrconv("ls", "--root", r, "-A"), (0,)),
        "ls warm": (ctrconv("ls", "--root", r, "-A"), (0,)),
        "ls --json": (ctrconv("ls", "--root", r, "-A", "--json"), (0,)),
        "verify-nohash": (ctrconv("verify", "--root", r, "-A", "-q", "--no-hash"), (0,)),
        "verify": (ctrconv("verify", "--root", r, "-A", "-q"), (0,)),
        "export-oci": (ctrconv("export", "--root", r, "--all", "-q", "-o", str(out / "all.tar")), (0,)),
        "export-docker": (ctrconv("export", "--root", r, "--all", "-q", "-f", "docker-archive",
                                  "-o", str(out / "all-docker.tar")), (0,)),
        "rebuild-link": (ctrconv("rebuild", "--root", r, "-q", "--link", "--trust-snapshots", "-o", str(out / "rb")), (0,)),
        "rebuild-copy": (ctrconv("rebuild", "--root", r, "-q", "--trust-snapshots", "-o", str(out / "rb")), (0,)),
        "floor: sha256sum blobs": (shell(f"cd {blobs} && ls -f | grep -v '^\\.' | xargs sha256sum -- >/dev/null"), (0,)),
        "floor: tar cf blobs": (shell(f"tar cf {out}/blobs.tar -C {blobs.parent} sha256"), (0,)),
        "floor: cp -a root": (["cp", "-a", r, str(out / "cp")], (0,)),
    }
    if not only:
        return all_cases
    return {k: v for k, v in all_cases.items() if k in only or k.startswith("floor") and "floors" in only}


@dataclass(frozen=True)
class CpuRun:
    """One command: wall seconds, CPU seconds (user + sys) and peak RSS (KiB), from GNU time."""

    wall: float
    cpu: float
    rss_kib: int


def timed_cpu(cmd: list[str], env: dict[str, str]) -> CpuRun:
    """:func:`_common.timed` with CPU time too: on a shared machine wall time also holds the
    time spent waiting for a core, CPU time does not."""
    fd, stats_name = tempfile.mkstemp(prefix="bench-scale-")
    os.close(fd)
    try:
        with tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.run([GNU_TIME, "-f", "%M %U %S", "-o", stats_name, "--", *cmd], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            wall = time.perf_counter() - start
            err.seek(0)
            err_text = err.read().decode(errors="replace")
        stats = Path(stats_name).read_text().strip().splitlines()[-1].split()
    finally:
        os.unlink(stats_name)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err_text[-1500:]}")
    return CpuRun(wall, float(stats[1]) + float(stats[2]), int(stats[0]))


#: cases run with the listing facts of an earlier run (:mod:`ctrconv.listingfacts`); every other
#: case runs with an empty facts directory of its own, as the first ``ls`` of a root does
WARM = {"ls warm"}


def measure(root: Path, rounds: int, only: set[str] | None, workdir: Path | None,
            label: str) -> dict[str, list[CpuRun]]:
    runs: dict[str, list[CpuRun]] = {}
    base_env = ctrconv_env()
    out = scratch("bench-scale-", workdir)
    kept = scratch("bench-scale-facts-", workdir)
    try:
        for _ in range(rounds):
            for case, (cmd, _ok) in cases(root, out, only).items():
                facts = kept if case in WARM else scratch("bench-scale-cold-", workdir)
                env = {**base_env, "CTRCONV_CACHE_DIR": str(facts)}
                if case in WARM and not any(facts.iterdir()):
                    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)  # learn, untimed
                try:
                    run = timed_cpu(cmd, env)
                except SystemExit as exc:  # one failing command does not lose the others' figures
                    print(f"  {case} [{label}]: FAILED {str(exc)[-500:]}", flush=True)
                    continue
                finally:
                    for entry in list(out.iterdir()):
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                    if facts is not kept:
                        shutil.rmtree(facts, ignore_errors=True)
                runs.setdefault(case, []).append(run)
                print(f"  {case} [{label}]: {run.wall:.2f} s wall, {run.cpu:.2f} s CPU, {run.rss_kib / 1024:.0f} MiB",
                      flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(kept, ignore_errors=True)
    return runs


def table(by_size: dict[int, dict[str, list[CpuRun]]]) -> str:
    """Medians per case and root size; the last columns compare each larger root with the first."""
    sizes = sorted(by_size)
    first = by_size[sizes[0]]
    lines = [f"{'case':24} {'images':>7} {'wall s':>8} {'min s':>7} {'CPU s':>8} {'peak RSS':>10} {'CPU vs first':>13} "
             f"{'RSS vs first':>13}"]
    for case in first:
        for n in sizes:
            runs = by_size[n].get(case)
            if not runs:
                lines.append(f"{case:24} {n:7d}   failed")
                continue
            wall = statistics.median(r.wall for r in runs)
            fastest = min(r.wall for r in runs)
            cpu = statistics.median(r.cpu for r in runs)
            rss = max(r.rss_kib for r in runs) / 1024
            base = first[case]
            cpu_ratio = cpu / max(statistics.median(r.cpu for r in base), 1e-3)
            rss_ratio = rss / (max(r.rss_kib for r in base) / 1024)
            ratios = f"{cpu_ratio:12.2f}x {rss_ratio:12.2f}x" if n != sizes[0] else ""
            lines.append(f"{case:24} {n:7d} {wall:8.2f} {fastest:7.2f} {cpu:8.2f} {rss:6.1f} MiB {ratios}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--scale", type=int, default=1, help="multiply --images (2: the doubled root)")
    parser.add_argument("--compare-scale", type=int, default=0, help="also measure the root K times larger")
    parser.add_argument("--own-layers", type=int, default=0,
                        help="the deep shape: 5 shared layers and this many of each image's own")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated case names (e.g. ls,verify-nohash,floors)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None

    sizes = [args.images * args.scale] + ([args.images * args.scale * args.compare_scale] if args.compare_scale else [])
    by_size: dict[int, dict[str, list[CpuRun]]] = {}
    described = []
    for count in sizes:
        t0 = time.perf_counter()
        root, facts = cached_root(count, args.own_layers)
        described.append(f"{facts['images']} images, {facts['blobs']} blobs, {facts['snapshots']} snapshots, "
                         f"meta.db {facts['meta_db_bytes'] / 2**20:.1f} MiB (ready in {time.perf_counter() - t0:.1f} s)")
        print(described[-1], flush=True)
        by_size[count] = measure(root, args.rounds, only, args.workdir, str(count))
    print(f"\n{machine_facts(args.workdir or Path('/var/tmp'))}")
    for line in described:
        print(line)
    print(f"{args.rounds} round(s), medians (min: the fastest round: this shared VM's speed moves within minutes); "
          "CPU = user + sys of the command (wall also holds waiting for a core)\n")
    print(table(by_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
