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

Besides wall time, each case's CPU time (user + sys of the command and everything it waited
for; for ``ctr images pull`` the containerd daemon's CPU during the pull too, since the daemon
downloads and unpacks) is printed in a second table: on a shared, loaded machine the wall
time of a CPU-bound case measures its share of the cores more than its work.

Every case starts after a ``sync`` (not timed), so none pays for an earlier case's writeback.

Targets (issue 16): push <= 1.0x skopeo, pull + unpack <= 0.6x ctr. Warm page cache. Not a
test; results go in ``benchmarks/README.md``.

Usage: ``python3 benchmarks/bench_registry.py [--rounds 2] [--dirs usr/bin ...] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from _common import (MT_LAYER_GZIP, PrivateContainerd, Results, Run, ctrconv, ctrconv_env, gzip_layer,
                     machine_facts, oci_archive, remove, scratch, timed)
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


def _process_cpu(pid: int | None) -> float:
    """CPU seconds a running process (and the children it waited for) has used so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class CpuTimes:
    """CPU seconds (user + sys) per case, beside the wall-clock :class:`Results`."""

    def __init__(self) -> None:
        self.runs: dict[str, list[float]] = {}

    def timed(self, case: str, results: Results, cmd: list[str], env: dict[str, str] | None = None,
              daemon_pid: int | None = None) -> None:
        """Run ``cmd`` as :func:`timed` does; record its wall time and its CPU time (plus the
        daemon's, when ``daemon_pid`` does the work). Dirty pages of earlier cases are written
        first (``sync``, off the clock): containerd leaves its unpacked layer unsynced (568 MiB
        dirty after a ``ctr images pull`` of the default layer), and the ``syncfs`` that makes
        the next ctrconv case durable would otherwise write them on that case's clock."""
        os.sync()
        before, daemon_before = resource.getrusage(resource.RUSAGE_CHILDREN), _process_cpu(daemon_pid)
        run: Run = timed(cmd, env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.runs.setdefault(case, []).append(cpu + _process_cpu(daemon_pid) - daemon_before)
        results.add(case, run)

    def table(self) -> str:
        lines = [f"{'case':46} {'CPU median s':>12} {'min s':>7} {'ratio':>10}"]
        for case, runs in self.runs.items():
            med, ref = statistics.median(runs), statistics.median(self.runs[REFERENCE[case]])
            lines.append(f"{case:46} {med:12.3f} {min(runs):7.3f} {med / ref:9.2f}x")
        return "\n".join(lines)



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
        cpu = CpuTimes()
        for n in range(args.rounds):
            _round(n, work, archive, source_root, env, results, cpu)
            print(f"round {n + 1} done", flush=True)
        print(results.table(ref=REFERENCE, size_bytes=size))
        print(cpu.table())
        failed = [case for case, target in TARGETS.items()
                  if results.median(case) > target * results.median(REFERENCE[case])]
        for case in failed:
            print(f"target missed: {case} > {TARGETS[case]}x {REFERENCE[case]}")
        return 1 if failed else 0
    finally:
        remove(work)


def _round(n: int, work: Path, archive: Path, source_root: Path, env: dict[str, str], results: Results,
           cpu: CpuTimes) -> None:
    """Every case once, each against a fresh registry (pushes) or from one (pulls)."""
    with PrivateRegistry(workdir=work) as reg:
        cpu.timed(SKOPEO, results, ["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                    f"oci-archive:{archive}", f"docker://{reg.host}/bench/img:v1"])
    with PrivateRegistry(workdir=work) as reg:
        cpu.timed(CTRCONV_PUSH, results, ctrconv("export", "--root", str(source_root), "--image", IMAGE, "-q",
                                                 "--to", f"docker://{reg.host}/bench/img:v1", "--plain-http"), env)
        ref = f"{reg.host}/bench/img:v1"
        with PrivateContainerd(workdir=work) as daemon:
            cpu.timed(CTR_PULL, results, [str(daemon.ctr_bin), "--address", daemon.address, "-n", "default",
                                          "images", "pull", "--plain-http", ref], daemon_pid=daemon.pid)
        root = work / f"pulled-{n}"
        pull = ["import", "--root", str(root), "-i", f"docker://{ref}", "-q", "--plain-http"]
        cpu.timed(CTRCONV_PULL, results, ctrconv(*pull), env)
        remove(root)
        # one blob at a time, the unpack after the download (what the overlap saves)
        cpu.timed(CTRCONV_PULL_SEQ, results, ctrconv(*pull, "-j", "1"), env)
        remove(root)
        # where the pull's time goes: the download alone, and the unpack from a local archive
        cpu.timed(CTRCONV_FETCH, results, ctrconv(*pull, "--no-unpack"), env)
        remove(root)
        cpu.timed(CTRCONV_UNPACK, results, ctrconv("import", "--root", str(root), "-i", str(archive), "-q"), env)
        remove(root)


if __name__ == "__main__":
    sys.exit(main())
