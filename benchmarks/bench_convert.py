#!/usr/bin/env python3
"""Benchmark ``ctrconv convert`` against ``skopeo copy`` and a plain ``cp`` / ``tar xf``.

Builds the same >= 500 MB single-platform OCI archive as ``bench_export.py`` (two uncompressed
layers cut from ``/usr/lib``), then times, for several rounds (warm page cache for everyone),
the conversion of that archive to each format:

* ``ctrconv convert`` to oci-tar, oci-dir, docker-archive and dir (every blob hashed while it
  is copied, output fsynced and renamed into place);
* ``skopeo copy`` from ``oci-archive:`` to ``oci:``, ``docker-archive:`` and ``dir:`` (it also
  verifies digests; it extracts the archive to a temp dir first);
* ``cp`` of the archive and ``tar xf`` of it (lower bounds: no hashing, no JSON, no fsync).

Prints wall times, throughput, ratios to skopeo (same output kind) and to the floor, and peak
RSS. Not a test; results go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_convert.py [--size-mb 600] [--rounds 3] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from _common import ctrconv_env  # noqa: E402  (benchmarks/ is the script directory)
from bench_export import _clear, build_archive, timed  # noqa: E402

#: case -> (command builder (input, output) -> argv, output suffix, the skopeo case it compares with)
CASES = {
    "ctrconv convert oci-tar": (lambda i, o: _ctrconv(i, o, "oci-tar"), ".tar", "cp archive (floor)"),
    "ctrconv convert oci-dir": (lambda i, o: _ctrconv(i, o, "oci-dir"), "", "skopeo copy -> oci:"),
    "ctrconv convert docker-archive": (lambda i, o: _ctrconv(i, o, "docker-archive"), ".tar",
                                       "skopeo copy -> docker-archive:"),
    "ctrconv convert dir": (lambda i, o: _ctrconv(i, o, "dir"), "", "skopeo copy -> dir:"),
    "skopeo copy -> oci:": (lambda i, o: _skopeo(i, f"oci:{o}:v1"), "", None),
    "skopeo copy -> docker-archive:": (lambda i, o: _skopeo(i, f"docker-archive:{o}:bench:v1"), ".tar", None),
    "skopeo copy -> dir:": (lambda i, o: _skopeo(i, f"dir:{o}"), "", None),
    "cp archive (floor)": (lambda i, o: ["cp", str(i), str(o)], ".tar", None),
    "tar xf archive (floor)": (lambda i, o: ["sh", "-c", f"mkdir {o} && tar xf {i} -C {o}"], "", None),
}


def _ctrconv(archive: Path, out: Path, fmt: str) -> list[str]:
    return [sys.executable, "-m", "ctrconv", "convert", "-i", str(archive), "-o", str(out), "-f", fmt, "-q"]


def _skopeo(archive: Path, dest: str) -> list[str]:
    return ["skopeo", "--insecure-policy", "copy", "-q", f"oci-archive:{archive}:v1", dest]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed")
    work = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=args.workdir or "/var/tmp"))
    results: dict[str, list[tuple[float, int]]] = {case: [] for case in CASES}
    try:
        t0 = time.perf_counter()
        archive = build_archive(work, args.size_mb)
        size = archive.stat().st_size
        print(f"built {size / 2**20:.0f} MiB archive in {time.perf_counter() - t0:.1f}s", flush=True)
        env = ctrconv_env()
        for _ in range(args.rounds):
            for case, (argv, suffix, _) in CASES.items():
                out = work / f"out{suffix}"
                _clear(out)
                results[case].append(timed(argv(archive, out), env))
                _clear(out)
        _report(results, size, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _report(results: dict[str, list[tuple[float, int]]], size: int, rounds: int) -> None:
    medians = {case: statistics.median(w for w, _ in runs) for case, runs in results.items()}
    print(f"image {size / 2**20:.0f} MiB (oci-archive input), {rounds} rounds, warm page cache")
    print(f"{'case':34} {'median s':>9} {'min s':>7} {'MiB/s':>7} {'vs other':>9} {'peak RSS':>10}")
    for case, runs in results.items():
        median = medians[case]
        other = CASES[case][2]
        ratio = f"{median / medians[other]:.2f}x" if other else ""
        rss = max(r for _, r in runs) / 1024
        print(f"{case:34} {median:9.2f} {min(w for w, _ in runs):7.2f} {size / 2**20 / median:7.0f} "
              f"{ratio:>9} {rss:7.1f} MiB")
    print("vs other: ctrconv against skopeo writing the same kind of output (oci-tar: against cp)")


if __name__ == "__main__":
    raise SystemExit(main())
