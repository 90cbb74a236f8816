#!/usr/bin/env python3
"""A/B: ``ctrconv import`` (with unpack) of this checkout against a git revision of it, rounds
interleaved, next to the ``tar xzf`` + ``sync`` floor of the same layers.

A change to the unpack path is judged on a shared, noisy machine by alternating the two
builds round after round (same archive, same page-cache state) rather than by comparing runs
made minutes apart. The revision is exported with ``git archive`` into the scratch dir and run
from there; the image is built as ``bench_import.py`` builds it.

Usage: ``python3 benchmarks/bench_import_ab.py --base REV [--rounds 3] [--dirs ...]
[--layer-per-dir] [--warm] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _common import REPO, Results, ctrconv, ctrconv_env, machine_facts, remove, scratch, settle, timed
from bench_import import DEFAULT_DIRS, TAR_XZF_SYNC, prepare, untar_all


def export_revision(rev: str, dest: Path) -> dict[str, str]:
    """``rev``'s ctrconv package under ``dest`` (compiled), and the environment that runs it.
    ``schemas/`` comes along: ``ctrconv/schemas`` is a symlink to it."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "ctrconv", "schemas"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "ctrconv")], check=True)
    return {**os.environ, "PYTHONPATH": str(dest)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD~1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS)
    parser.add_argument("--layer-per-dir", action="store_true")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache between cases")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = scratch("bench-import-ab-", args.workdir)
    base_case, new_case = f"ctrconv import @ {args.base}", "ctrconv import @ checkout"
    results = Results(runs={base_case: [], new_case: [], TAR_XZF_SYNC: []})
    try:
        archive, floor_layers, what = prepare(work, args)
        envs = {base_case: export_revision(args.base, work / "base"), new_case: ctrconv_env()}
        root, out = work / "root", work / "out"
        cmd = ctrconv("import", "--root", str(root), "-i", str(archive), "-q")
        for rnd in range(args.rounds):
            order = [base_case, new_case] if rnd % 2 == 0 else [new_case, base_case]
            for case in order:
                remove(root)
                settle(not args.warm)
                results.add(case, timed(cmd, envs[case]))
                remove(root)
            remove(out)
            out.mkdir()
            settle(not args.warm)
            results.add(TAR_XZF_SYNC, timed(untar_all(floor_layers, out, "xzf", sync=True)))
            remove(out)
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{machine_facts(work.parent)} | load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"image: {what}, {args.rounds} rounds interleaved\n")
    ref = {case: TAR_XZF_SYNC for case in results.runs}
    print(results.table(ref=ref))
    for case in (base_case, new_case):
        cpu, floor = results.cpu_median(case), results.cpu_median(TAR_XZF_SYNC)
        print(f"CPU {case} vs floor: {cpu / floor:.2f}x" if cpu and floor else "")
    print(f"wall checkout vs {args.base}: {results.median(new_case) / results.median(base_case):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
