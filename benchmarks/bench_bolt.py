#!/usr/bin/env python3
"""A/B benchmark of ``ctrconv/bolt``: ``ls``, ``dump`` and ``verify`` on a large root, two bolt layers.

Builds the root of ``bench_ls.py`` (``--images``, default 1,000: a 13.7 MiB meta.db; 10,000
gives ~140 MiB) and then times the same commands with two copies of ctrconv that differ only in
``ctrconv/bolt/``: *after* is this checkout as it is, *before* is the same checkout with
``ctrconv/bolt/`` taken from git ref ``--against`` (so other work in progress in the checkout
cannot tell the two apart). Both copies run every case in every round, in ABBA order (the one
that goes first alternates), so a busy shared machine slows both alike; compare the two columns
of one run, not runs with each other.

Commands (``/usr/bin/time``: wall and CPU seconds, peak RSS; warm page cache): ``ctrconv ls --root R -A``, ``ctrconv dump
meta.db`` (text and ``--json``), ``ctrconv verify --root R -A -q``; their outputs must be equal.
Then the bolt layer alone, least CPU time of five runs in one fresh process per copy and round: ``read_tree``,
``api.dump_bolt``, ``check_bolt``, ``salvage`` and ``write_bolt_to`` of the tree just read
(the benchmark fails if the two copies write different bytes).

Usage: ``python3 benchmarks/bench_bolt.py --against REF [--images 1000] [--rounds 5] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _common import GNU_TIME, REPO, Results, Run, ctrconv, machine_facts, precompile, scratch
from bench_ls import build_root

from ctrconv.containerd import schema as K

# Runs inside each copy: the bolt layer alone (least CPU time of five runs per case), and a digest
# of what it writes.
_IN_PROCESS = r"""
import hashlib, io, json, os, sys, time
import ctrconv
from ctrconv import api
from ctrconv.bolt.check import check_bolt
from ctrconv.bolt.reader import read_tree
from ctrconv.bolt.salvage import salvage
from ctrconv.bolt.writer import write_bolt_to

path = sys.argv[1]
if not ctrconv.__file__.startswith(os.environ["PYTHONPATH"]):
    raise SystemExit(f"imported {ctrconv.__file__}, not the copy under test")
tree = read_tree(path)
out = io.BytesIO()

def write():
    out.seek(0)
    write_bolt_to(out, tree, page_size=4096, freelist=True)

cases = {"read_tree": lambda: read_tree(path), "api.dump_bolt": lambda: api.dump_bolt(path),
         "check_bolt": lambda: check_bolt(path), "salvage": lambda: salvage(path), "write_bolt_to": write}
seconds = {}
for name, fn in cases.items():
    for _ in range(5):  # the least of five: a load spike on a shared machine only adds time
        start = time.process_time()
        result = fn()
        seconds[name] = min(seconds.get(name, 1e9), time.process_time() - start)
    if name == "check_bolt" and result:
        raise SystemExit(f"check_bolt found problems: {result[:3]}")
write()
print(json.dumps({"seconds": seconds, "written_sha256": hashlib.sha256(out.getvalue()).hexdigest()}))
"""


def make_copy(dest: Path, against: str | None) -> Path:
    """A copy of this checkout's ``ctrconv`` package, with ``ctrconv/bolt`` from ``against``."""
    shutil.copytree(REPO / "ctrconv", dest / "ctrconv", ignore=shutil.ignore_patterns("__pycache__"))
    if against is not None:
        shutil.rmtree(dest / "ctrconv" / "bolt")
        archive = subprocess.run(["git", "-C", str(REPO), "archive", against, "ctrconv/bolt"],
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "ctrconv")], check=True)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="git ref whose ctrconv/bolt is 'before'")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()

    precompile()
    work = scratch("bench-bolt-", args.workdir)
    try:
        copies = {"before": make_copy(work / "before", args.against), "after": make_copy(work / "after", None)}
        # PYTHONSAFEPATH: ``-m``/``-c`` would put the working directory (this checkout) first on
        # sys.path, and both copies would run the same code
        envs = {label: {**os.environ, "PYTHONPATH": str(path), "PYTHONSAFEPATH": "1"}
                for label, path in copies.items()}
        root = work / "root"
        blobs = build_root(root, args.images)
        meta_db = root / K.METADATA_PLUGIN_DIR / K.META_DB
        size_mib = meta_db.stat().st_size / 2**20
        print(f"built root: {args.images} images, {blobs} blobs, meta.db {size_mib:.1f} MiB", flush=True)

        commands = {
            "ctrconv ls -A": ctrconv("ls", "--root", str(root), "-A"),
            "ctrconv dump meta.db": ctrconv("dump", str(meta_db)),
            "ctrconv dump meta.db --json": ctrconv("dump", str(meta_db), "--json"),
            "ctrconv verify -A -q": ctrconv("verify", "--root", str(root), "-A", "-q"),
        }
        results = Results()
        outputs: dict[tuple[str, str], str] = {}
        in_process: dict[str, dict[str, list[float]]] = {label: {} for label in envs}
        cpu: dict[str, list[float]] = {}
        written: set[str] = set()
        for round_ in range(args.rounds):
            # ABBA: the copy that goes first alternates, so a load that drifts hits both alike
            order = list(envs) if round_ % 2 == 0 else list(reversed(envs))
            for case, cmd in commands.items():
                for label in order:
                    out = work / f"out-{label}"
                    wall, cpu_s, rss_kib = _timed_cpu(cmd, envs[label], out)
                    results.add(f"{case} [{label}]", Run(wall, rss_kib))
                    cpu.setdefault(f"{case} [{label}]", []).append(cpu_s)
                    outputs[(case, label)] = out.read_text()
            for label in order:
                proc = subprocess.run([sys.executable, "-c", _IN_PROCESS, str(meta_db)],
                                      env=envs[label], capture_output=True, text=True, check=True)
                run = json.loads(proc.stdout)
                written.add(run["written_sha256"])
                for name, seconds in run["seconds"].items():
                    in_process[label].setdefault(name, []).append(seconds)
        for case in commands:
            if outputs[(case, "before")] != outputs[(case, "after")]:
                raise SystemExit(f"{case}: output differs between before and after")
        if len(written) != 1:
            raise SystemExit("write_bolt_to wrote different bytes before and after")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{machine_facts(work.parent)}")
    print(f"{args.images} images, meta.db {size_mib:.1f} MiB, {args.rounds} rounds, warm page cache; "
          f"before = ctrconv/bolt at {args.against}, after = this checkout\n")
    print(_table(results, cpu, list(commands)))
    print(f"\nbolt layer alone, CPU seconds (least of 5 per process, one process per copy and round); "
          f"written bytes identical "
          f"(sha256 {written.pop()[:16]}...)")
    print(f"{'case':18} {'before med':>10} {'after med':>10} {'after/before':>13} {'before min':>10} {'after min':>10}")
    for name, before in in_process["before"].items():
        after = in_process["after"][name]
        b_med, a_med = statistics.median(before), statistics.median(after)
        print(f"{name:18} {b_med:10.3f} {a_med:10.3f} {a_med / b_med:12.2f}x {min(before):10.3f} {min(after):10.3f}")
    return 0


def _timed_cpu(cmd: list[str], env: dict[str, str], stdout: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + sys, children included) and peak RSS KiB of ``cmd``.

    CPU time is what a change of the code moves; wall time on a shared machine also holds the
    time spent waiting for a core.
    """
    with tempfile.NamedTemporaryFile(prefix="bench-time-") as stats, open(stdout, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "%U %S %M", "-o", stats.name, "--", *cmd], env=env,
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
        user, sys_, rss = Path(stats.name).read_text().split()[-3:]
    return wall, float(user) + float(sys_), int(rss)


def _table(results: Results, cpu: dict[str, list[float]], cases: list[str]) -> str:
    lines = [f"{'command':28} {'wall before':>11} {'wall after':>10} {'ratio':>6} "
             f"{'CPU before':>10} {'CPU after':>9} {'ratio':>6} {'RSS after':>10}   (medians, s)"]
    for case in cases:
        before, after = results.runs[f"{case} [before]"], results.runs[f"{case} [after]"]
        b_med, a_med = (statistics.median(r.wall for r in runs) for runs in (before, after))
        b_cpu, a_cpu = (statistics.median(cpu[f"{case} [{label}]"]) for label in ("before", "after"))
        lines.append(f"{case:28} {b_med:11.3f} {a_med:10.3f} {a_med / b_med:5.2f}x "
                     f"{b_cpu:10.3f} {a_cpu:9.3f} {a_cpu / b_cpu:5.2f}x "
                     f"{results.peak_rss_mib(f'{case} [after]'):6.1f} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
