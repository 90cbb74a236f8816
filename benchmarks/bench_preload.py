#!/usr/bin/env python3
"""Benchmark a node preload of many archives: one ``import`` of all of them vs one per archive.

Builds ``--archives`` small OCI archives (one tiny gzip layer each, distinct images) and times,
for ``--rounds`` rounds, each on a fresh root:

* ``ctrconv import -i DIR`` (every archive in the directory: one lock, one content pass, one
  meta.db commit),
* ``ctrconv import -i A`` run once per archive (what a preload script did before),
* ``ctr images import`` once per archive into a private containerd started before the clock
  (the daemon's own way; its start is not timed).

Both ctrconv cases unpack; the first root of each is checked with ``ls`` (every image
complete). Not a test; results go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_preload.py [--archives 30] [--rounds 3] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import (MT_LAYER_GZIP, PrivateContainerd, Results, Run, ctrconv, ctrconv_env, machine_facts,
                     oci_archive, remove, scratch, settle, timed, tiny_layer)

ONE_RUN = "ctrconv import -i DIR (one run)"
PER_ARCHIVE = "ctrconv import per archive"
CTR = "ctr images import per archive"


def make_archives(work: Path, count: int) -> Path:
    """``count`` OCI archives in ``work/archives``, one image each."""
    out = work / "archives"
    out.mkdir(parents=True)
    for i in range(count):
        part = work / f"build-{i}"
        part.mkdir()
        data, diff_id = tiny_layer(f"preload-{i}")
        layer = part / "layer.tar.gz"
        layer.write_bytes(data)
        archive = oci_archive(part, f"docker.io/library/preload-{i}:v1", [(layer, MT_LAYER_GZIP, diff_id)])
        archive.rename(out / f"preload-{i:03d}.tar")
        remove(part)
    return out


def _all_complete(root: Path, env: dict[str, str], count: int) -> None:
    listed = subprocess.run(ctrconv("ls", "--root", str(root), "--json"), env=env, check=True,
                            capture_output=True, text=True).stdout
    images = json.loads(listed)["images"]
    if len(images) != count or not all(i["complete"] for i in images):
        raise SystemExit(f"{root}: expected {count} complete images, got {len(images)}")


def _per_archive(archives: list[Path], root: Path, env: dict[str, str]) -> Run:
    start = time.perf_counter()
    peak = 0
    for archive in archives:
        run = timed(ctrconv("import", "--root", str(root), "-q", "-i", str(archive)), env)
        peak = max(peak, run.rss_kib)
    return Run(time.perf_counter() - start, peak)


def _ctr_per_archive(archives: list[Path], daemon: PrivateContainerd) -> Run:
    start = time.perf_counter()
    for archive in archives:
        daemon.ctr("images", "import", str(archive), timeout=600)
    return Run(time.perf_counter() - start, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archives", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = scratch("bench-preload-", args.workdir)
    env = ctrconv_env()
    try:
        directory = make_archives(work, args.archives)
        archives = sorted(directory.iterdir())
        results = Results()
        for round_ in range(args.rounds):
            root = work / f"one-{round_}"
            settle(False)
            results.add(ONE_RUN, timed(ctrconv("import", "--root", str(root), "-q", "-i", str(directory)), env))
            if round_ == 0:
                _all_complete(root, env, args.archives)
            remove(root)
            root = work / f"each-{round_}"
            settle(False)
            results.add(PER_ARCHIVE, _per_archive(archives, root, env))
            if round_ == 0:
                _all_complete(root, env, args.archives)
            remove(root)
            with PrivateContainerd(None, root=work / f"ctr-{round_}") as daemon:
                settle(False)
                results.add(CTR, _ctr_per_archive(archives, daemon))
            remove(work / f"ctr-{round_}")
        results.notes[CTR] = "daemon already running; peak RSS not measured"
        print(machine_facts(work))
        print(f"{args.archives} archives, {args.rounds} rounds")
        print(results.table(ref={ONE_RUN: PER_ARCHIVE, PER_ARCHIVE: PER_ARCHIVE, CTR: PER_ARCHIVE}))
    finally:
        remove(work)


if __name__ == "__main__":
    sys.exit(main())
