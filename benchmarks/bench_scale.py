#!/usr/bin/env python3
"""Benchmark ctrconv on a large root: 10,000 images, ~30,000 blobs, 5,000 snapshots (issue 17).

The root is written straight from ctrconv's own record writers by ``tests/support/scale_root.py``
(three blobs per image over 50 shared base layers, every 20th image a two-platform index, the
first half of the images unpacked into committed overlayfs snapshots), deterministically, and
cached under ``.cache/bench-scale/`` (built once, under a file lock). ``--images N`` (default
10,000) gives ~3N blobs and ~N/2 snapshots; ``--scale K`` multiplies N.

Then, for ``--rounds`` rounds (warm page cache), times under ``/usr/bin/time`` (peak RSS):
``ls -A``, ``verify -A -q`` (hashing every blob) and ``verify -A -q --no-hash``, ``export --all``
to oci-tar and to docker-archive, ``rebuild -o`` (``--link``, and copying), plus the floors
measured in the same run: ``ctrconv --help`` (start-up), ``sha256sum`` of every blob, ``tar cf``
of the blob directory and ``cp -a`` of the root. With ``--compare-scale K`` it also builds the
K-times root and prints, per command, the ratio of the two (at most 2.0 for a doubling is the
target: linear cost).

Usage: ``python3 benchmarks/bench_scale.py [--images 10000] [--scale 1] [--compare-scale 2]
[--rounds 1] [--only ls,verify-nohash] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from _common import REPO, Results, ctrconv, ctrconv_env, machine_facts, scratch, shell, timed

from support.fixture_set import build_once  # noqa: E402
from support.scale_root import build_root  # noqa: E402

from ctrconv.containerd import schema as K

BUILD_VERSION = "1"  # bump when the generated root changes
CACHE = REPO / ".cache" / "bench-scale"


def cached_root(count: int) -> tuple[Path, dict[str, int]]:
    """The root for ``count`` images under ``.cache/bench-scale/`` (built once)."""
    def build(staging: Path) -> None:
        staging.mkdir(parents=True)
        facts = build_root(staging / "root", count)
        (staging / "root.json").write_text(json.dumps(facts))

    final = build_once(CACHE, f"images-{count}-v{BUILD_VERSION}", "root.json", build)
    return final / "root", json.loads((final / "root.json").read_text())


def cases(root: Path, out: Path, only: set[str] | None) -> dict[str, tuple[list[str], tuple[int, ...]]]:
    """name -> (command, accepted exit codes); outputs go under ``out`` (removed between runs)."""
    blobs = root / K.CONTENT_PLUGIN_DIR / "blobs" / "sha256"
    r = str(root)
    all_cases = {
        "start-up": (ctrconv("--help"), (0,)),
        "ls": (ctrconv("ls", "--root", r, "-A"), (0,)),
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


def measure(root: Path, facts: dict[str, int], rounds: int, only: set[str] | None, workdir: Path | None,
            label: str) -> Results:
    results = Results()
    env = ctrconv_env()
    out = scratch("bench-scale-", workdir)
    try:
        for _ in range(rounds):
            for case, (cmd, ok) in cases(root, out, only).items():
                results.add(f"{case} [{label}]", timed(cmd, env, ok_codes=ok))
                for entry in list(out.iterdir()):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                print(f"  {case} [{label}]: {results.runs[f'{case} [{label}]'][-1].wall:.2f} s", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--scale", type=int, default=1, help="multiply --images (2: the doubled root)")
    parser.add_argument("--compare-scale", type=int, default=0, help="also measure the root K times larger")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated case names (e.g. ls,verify-nohash,floors)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch dir (default: /var/tmp)")
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None

    sizes = [args.images * args.scale] + ([args.images * args.scale * args.compare_scale] if args.compare_scale else [])
    merged = Results()
    described = []
    for count in sizes:
        t0 = time.perf_counter()
        root, facts = cached_root(count)
        described.append(f"{facts['images']} images, {facts['blobs']} blobs, {facts['snapshots']} snapshots, "
                         f"meta.db {facts['meta_db_bytes'] / 2**20:.1f} MiB (ready in {time.perf_counter() - t0:.1f} s)")
        print(described[-1], flush=True)
        res = measure(root, facts, args.rounds, only, args.workdir, f"{count}")
        merged.runs.update(res.runs)
    print(f"\n{machine_facts(args.workdir or Path('/var/tmp'))}")
    for line in described:
        print(line)
    print(f"{args.rounds} round(s), warm page cache; ratio: against the same command on the first root\n")
    first = f"{sizes[0]}"
    ref = {case: case.replace(case[case.rindex("[") + 1:-1], first) for case in merged.runs}
    print(merged.table(ref=ref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
