#!/usr/bin/env python3
"""Benchmark the registry transport: ``ctrconv export --to docker://`` vs ``skopeo copy``, and
``ctrconv import -i docker://`` (pull + unpack) vs ``ctr images pull`` (pull + unpack).

Builds a single-layer image from this machine's own files (``tar | pigz -1`` of ``--dirs``,
~150 MB compressed by default) as an OCI archive, then per round, each case against a fresh
``docker-registry`` (distribution 2.8, plain HTTP on 127.0.0.1, ``tests/support/registry.py``)
so nothing is already there:

* ``skopeo copy oci-archive:X docker://...`` vs ``ctrconv export --to docker://...`` from a
  root the archive was imported into (not timed);
* ``ctr images pull --plain-http`` into a private containerd started on an empty root before the
  clock starts vs ``ctrconv import -i docker://... --plain-http`` into a fresh root (both
  unpack into overlayfs); the same pull with ``-j 1`` (one blob at a time, the unpack after the
  download: what the overlap of download and unpack saves); and, to show where the pull's time
  goes, the pull with ``--no-unpack`` (download only) and an import of the OCI archive (unpack
  only, no network).

Targets (issue 16): push <= 1.0x skopeo, pull + unpack <= 0.6x ctr. Warm page cache. Not a
test; results go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_registry.py [--rounds 2] [--dirs usr/bin ...] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from _common import (MT_LAYER_GZIP, PrivateContainerd, Results, ctrconv, ctrconv_env, gzip_layer, machine_facts,
                     oci_archive, remove, scratch, timed)
from support.registry import PrivateRegistry

IMAGE = "docker.io/library/bench-registry:v1"
DEFAULT_DIRS = ["usr/bin", "usr/lib/python3", "usr/share/perl"]
SKOPEO = "skopeo copy (push)"
CTRCONV_PUSH = "ctrconv export --to (push)"
CTR_PULL = "ctr images pull (pull+unpack)"
CTRCONV_PULL = "ctrconv import -i docker:// (pull+unpack)"
CTRCONV_PULL_SEQ = "ctrconv import -i docker:// -j 1 (no overlap)"
CTRCONV_FETCH = "ctrconv import -i docker:// --no-unpack"
CTRCONV_UNPACK = "ctrconv import -i oci-archive (unpack only)"
REFERENCE = {SKOPEO: SKOPEO, CTRCONV_PUSH: SKOPEO, CTR_PULL: CTR_PULL, CTRCONV_PULL: CTR_PULL,
             CTRCONV_PULL_SEQ: CTR_PULL, CTRCONV_FETCH: CTR_PULL, CTRCONV_UNPACK: CTR_PULL}
TARGETS = {CTRCONV_PUSH: 1.0, CTRCONV_PULL: 0.6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS, help="paths under / for the layer")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()
    work = scratch("bench-registry-", args.workdir)
    results = Results(runs={case: [] for case in REFERENCE})
    try:
        layer = work / "layer.tar.gz"
        diff_id, _ = gzip_layer(args.dirs, layer)
        size = layer.stat().st_size
        archive = oci_archive(work, IMAGE, [(layer, MT_LAYER_GZIP, diff_id)])
        env = ctrconv_env()
        source_root = work / "source-root"
        subprocess.run(ctrconv("import", "--root", str(source_root), "-i", str(archive), "-q", "--no-unpack"),
                       env=env, check=True)
        print(machine_facts(work))
        print(f"image: one gzip layer of {size / 1e6:.0f} MB ({' '.join(args.dirs)})", flush=True)
        for n in range(args.rounds):
            with PrivateRegistry(workdir=work) as reg:
                results.add(SKOPEO, timed(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                           f"oci-archive:{archive}", f"docker://{reg.host}/bench/img:v1"]))
            with PrivateRegistry(workdir=work) as reg:
                results.add(CTRCONV_PUSH, timed(ctrconv("export", "--root", str(source_root), "--image", IMAGE, "-q",
                                                        "--to", f"docker://{reg.host}/bench/img:v1", "--plain-http"),
                                                env))
                ref = f"{reg.host}/bench/img:v1"
                with PrivateContainerd(workdir=work) as daemon:
                    results.add(CTR_PULL, timed([str(daemon.ctr_bin), "--address", daemon.address, "-n", "default",
                                                 "images", "pull", "--plain-http", ref]))
                root = work / f"pulled-{n}"
                results.add(CTRCONV_PULL, timed(ctrconv("import", "--root", str(root), "-i", f"docker://{ref}", "-q",
                                                        "--plain-http"), env))
                remove(root)
                # one blob at a time, the unpack after the download (what the overlap saves)
                results.add(CTRCONV_PULL_SEQ, timed(ctrconv("import", "--root", str(root), "-i", f"docker://{ref}", "-q",
                                                            "--plain-http", "-j", "1"), env))
                remove(root)
                # where the pull's time goes: the download alone, and the unpack from a local archive
                results.add(CTRCONV_FETCH, timed(ctrconv("import", "--root", str(root), "-i", f"docker://{ref}", "-q",
                                                         "--plain-http", "--no-unpack"), env))
                remove(root)
                results.add(CTRCONV_UNPACK, timed(ctrconv("import", "--root", str(root), "-i", str(archive), "-q"), env))
                remove(root)
            print(f"round {n + 1} done", flush=True)
        print(results.table(ref=REFERENCE, size_bytes=size))
        failed = [case for case, target in TARGETS.items()
                  if results.median(case) > target * results.median(REFERENCE[case])]
        for case in failed:
            print(f"target missed: {case} > {TARGETS[case]}x {REFERENCE[case]}")
        return 1 if failed else 0
    finally:
        remove(work)


if __name__ == "__main__":
    sys.exit(main())
