#!/usr/bin/env python3
"""What making an unpacked layer durable costs: one ``syncfs`` vs ``fsync`` per file vs nothing.

``ctrconv import`` syncs the blobs and snapshot trees it wrote before it commits meta.db
(docs/import.md, "Durability"). This measures the choice on a tree like a layer's: for
``--rounds`` rounds, each on a fresh copy of a tree cut from this machine's own files
(``--dirs``, by default ~/usr/share/doc + /usr/include: tens of thousands of small files):

* ``write only``: copy the tree, no sync (what the import did before: not durable);
* ``write + syncfs``: copy, then one ``syncfs(2)`` of the filesystem (what ctrconv does);
* ``write + fsync each``: copy, then ``fsync`` every file and directory (the alternative).

Each case starts with everything flushed (``sync``, not timed), so the cost shown is the cost
of this tree's data reaching the disk. A ``syncfs`` also flushes whatever else is dirty on that
filesystem at the moment: on a busy node that is extra time the import waits for, not extra
work. Not a test; results go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_durability.py [--rounds 3] [--dirs usr/share/doc ...] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctrconv.durability import syncfs  # noqa: E402

from _common import machine_facts, scratch  # noqa: E402

DEFAULT_DIRS = ["usr/share/doc", "usr/include"]


def copy_tree(sources: list[Path], dest: Path) -> int:
    """``cp -a`` the sources under ``dest``; returns the number of files."""
    dest.mkdir()
    for src in sources:
        subprocess.run(["cp", "-a", str(src), str(dest / src.name)], check=True)
    return sum(len(files) for _, _, files in os.walk(dest))


def fsync_each(tree: Path) -> None:
    for here, dirs, files in os.walk(tree, topdown=False):
        for name in files:
            path = os.path.join(here, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


CASES = {
    "write only": lambda tree: None,
    "write + syncfs": lambda tree: syncfs(tree),
    "write + fsync each": fsync_each,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    sources = [Path("/") / d for d in args.dirs if (Path("/") / d).is_dir()]
    work = scratch("bench-durability-", args.workdir)
    print(machine_facts(work))
    times: dict[str, list[float]] = {case: [] for case in CASES}
    files = 0
    try:
        for round_no in range(args.rounds):
            for case, finish in CASES.items():
                tree = work / f"{round_no}-{case.replace(' ', '_').replace('+', '')}"
                subprocess.run(["sync"], check=True)
                started = time.monotonic()
                files = copy_tree(sources, tree)
                finish(tree)
                times[case].append(time.monotonic() - started)
                shutil.rmtree(tree)
        base = statistics.median(times["write only"])
        print(f"tree: {files} files from {', '.join(map(str, sources))}; {args.rounds} rounds")
        print(f"{'case':<24}{'median s':>10}{'min s':>8}{'vs write only':>15}")
        for case, values in times.items():
            median = statistics.median(values)
            print(f"{case:<24}{median:>10.2f}{min(values):>8.2f}{median / base:>14.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
