#!/usr/bin/env python3
"""Start-up cost: ``ctrconv --version``, ``--help`` and ``ls`` on the small fixture root, as
milliseconds above a bare interpreter (``python3 -c pass``) measured in the same run.

    python3 benchmarks/bench_startup.py [--rounds 21] [--against REF]

Each round runs every case once, in a rotating order (so a burst of load on the shared machine
does not land on one case only); the table shows each case's median and minimum wall time and
its median minus the floor's median. ``--against REF`` also runs the same cases from the
``ctrconv/`` of git ref REF (``git archive`` into a scratch directory: the checkout is not
touched), for a before/after in one run. Bytecode is compiled first for both trees, as an
installed package has it (this machine sets ``PYTHONDONTWRITEBYTECODE``). Issue 17's target:
``--version`` <= 80 ms above the floor.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from _common import REPO, machine_facts, remove, scratch

SMALL_ROOT = REPO / "fixtures" / "small-root.tar.xz"


def _tree(ref: str | None, work: Path) -> Path:
    """A directory whose ``ctrconv/`` is the checkout's (None) or REF's, compiled to bytecode."""
    if ref is None:
        tree = REPO
    else:
        tree = work / "against"
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "ctrconv", "schemas"],
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="fully_trusted")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "ctrconv")], check=True)
    return tree


Case = tuple[list[str], dict[str, str], Path]


def _cases(tree: Path, root: Path, label: str) -> dict[str, Case]:
    """``python -m`` puts the working directory first on ``sys.path``: each tree runs from itself."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    run = [sys.executable, "-m", "ctrconv"]
    return {
        f"{label}--version": ([*run, "--version"], env, tree),
        f"{label}--help": ([*run, "--help"], env, tree),
        f"{label}ls": ([*run, "ls", "--root", str(root)], env, tree),
    }


def _once(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU (user + system of the child) is what the other
    sessions' load on this shared machine does not inflate."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--against", metavar="REF", help="also measure the ctrconv/ of this git ref")
    args = parser.parse_args()
    work = scratch("ctrconv-bench-startup-", None)
    try:
        with tarfile.open(SMALL_ROOT) as tar:
            tar.extractall(work, filter="fully_trusted")
        root = work / "small-root"
        cases: dict[str, Case] = {"python3 -c pass": ([sys.executable, "-c", "pass"], {**os.environ}, work)}
        cases.update(_cases(_tree(None, work), root, "ctrconv "))
        if args.against:
            cases.update(_cases(_tree(args.against, work), root, f"{args.against} "))
        for case in cases.values():  # warm the page cache and check every case runs
            _once(*case)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        names = list(cases)
        for n in range(args.rounds):
            for name in names[n % len(names):] + names[:n % len(names)]:
                times[name].append(_once(*cases[name]))
        print(machine_facts(work))
        print(f"{args.rounds} rounds, per run (ms): wall median and min, CPU (user+sys) median; "
              "'above' = median minus the floor's median")
        floor = [statistics.median(t[k] for t in times["python3 -c pass"]) * 1000 for k in (0, 1)]
        print(f"{'case':30} {'wall':>7} {'min':>7} {'above':>7} {'CPU':>7} {'above':>7}")
        for name in names:
            wall, cpu = (statistics.median(t[k] for t in times[name]) * 1000 for k in (0, 1))
            least = min(t[0] for t in times[name]) * 1000
            above = ("", "") if name == "python3 -c pass" else (f"{wall - floor[0]:+.0f}", f"{cpu - floor[1]:+.0f}")
            print(f"{name:30} {wall:7.0f} {least:7.0f} {above[0]:>7} {cpu:7.0f} {above[1]:>7}")
    finally:
        remove(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
