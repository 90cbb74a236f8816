#!/usr/bin/env python3
"""Does unpacking an image's layers side by side pay off on this machine? ``import -j N`` vs ``-j 1``.

Builds one image of ``--dirs`` (one gzip layer per directory, ``pigz -1``, from this machine's
own files) as an OCI archive, then times, for ``--rounds`` rounds, each on a fresh root with the
page cache dropped first: ``ctrconv import -j 1`` (in order, the default), ``ctrconv import -j N``
(worker processes), ``ctr images import`` (a private containerd, in order), and two floors that
show what the kernel and disk allow: ``tar xzf`` of the layers one after the other, and the same
``N`` at a time (``xargs -P``). If parallel ``tar`` is not faster than sequential ``tar`` here,
no parallel unpacker can be either.

Usage: ``python3 benchmarks/bench_unpack_jobs.py [--jobs N] [--rounds 3] [--dirs ...] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from _common import (MT_LAYER_GZIP, PrivateContainerd, Results, ctrconv, ctrconv_env, gzip_layer,
                     machine_facts, oci_archive, remove, scratch, settle, shell, timed)

IMAGE = "docker.io/library/bench-jobs:v1"
DEFAULT_DIRS = ["usr/share/doc", "usr/include", "usr/lib/python3", "usr/share/locale"]


def build_layers(work: Path, dirs: list[str]) -> list[tuple[Path, str, str]]:
    """One ``tar | pigz -1`` layer per directory: (file, media type, diff_id)."""
    layers = []
    for i, directory in enumerate(dirs):
        path = work / f"layer{i}.tar.gz"
        diff_id, _ = gzip_layer([directory], path)
        layers.append((path, MT_LAYER_GZIP, diff_id))
    return layers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=max(2, len(os.sched_getaffinity(0))))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = scratch("bench-jobs-", args.workdir)
    in_order, parallel = "ctrconv import -j 1", f"ctrconv import -j {args.jobs}"
    ctr_case, tar_seq, tar_par = "ctr images import", "tar xzf, layers in order (floor)", \
        f"tar xzf, {args.jobs} layers at once (floor)"
    results = Results(runs={c: [] for c in (in_order, parallel, ctr_case, tar_seq, tar_par)})
    try:
        floor_layers = work / "floor"
        floor_layers.mkdir()
        layers = build_layers(work, args.dirs)
        for path, _, _ in layers:
            os.link(path, floor_layers / path.name)
        archive = oci_archive(work, IMAGE, layers)
        tar_bytes = sum(os.path.getsize(f) for f in floor_layers.iterdir())
        root, out = work / "root", work / "out"
        env = ctrconv_env()
        cases = {
            in_order: ctrconv("import", "--root", str(root), "-i", str(archive), "-q", "-j", "1"),
            parallel: ctrconv("import", "--root", str(root), "-i", str(archive), "-q", "-j", str(args.jobs)),
        }
        untar = f"mkdir -p {out}/$(basename {{}}) && tar xzf {{}} -C {out}/$(basename {{}})"
        floors = {
            tar_seq: shell(f"ls {floor_layers}/* | xargs -I{{}} -P 1 sh -c '{untar}'"),
            tar_par: shell(f"ls {floor_layers}/* | xargs -I{{}} -P {args.jobs} sh -c '{untar}'"),
        }
        for rnd in range(args.rounds):
            for case, cmd in cases.items():
                remove(root)
                settle(True)
                results.add(case, timed(cmd, env))
            remove(root)
            with PrivateContainerd(workdir=work) as daemon:
                settle(True)
                results.add(ctr_case, timed([str(daemon.ctr_bin), "--address", daemon.address, "-n", "default",
                                             "images", "import", str(archive)]))
            for case, cmd in floors.items():
                remove(out)
                out.mkdir()
                settle(True)
                results.add(case, timed(cmd))
            remove(out)
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{machine_facts(work.parent)}")
    print(f"image: {len(args.dirs)} gzip layers ({', '.join(args.dirs)}), {tar_bytes / 1e6:.0f} MB compressed, "
          f"{args.rounds} rounds, page cache dropped before every case\n")
    print(results.table(ref={in_order: in_order, parallel: in_order, ctr_case: in_order,
                             tar_seq: in_order, tar_par: tar_seq}))
    speedup = results.median(in_order) / results.median(parallel)
    floor = results.median(tar_seq) / results.median(tar_par)
    print(f"\nparallel speed-up: ctrconv {speedup:.2f}x, tar floor {floor:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
