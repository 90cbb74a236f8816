#!/usr/bin/env python3
"""Long fuzz runs outside CI: ``python tests/fuzz/run_long.py [TARGET...] --seconds N``.

Drives every target (or the ones named) with the same seeds and mutators as the CI tests, for
``--seconds`` each, from ``--seed``. Every distinct finding (kind + exception + where it was
raised) is written once to ``tests/regressions/<target>/<sha256-prefix>.bin`` with a ``.txt``
beside it saying what happened; ``tests/unit/robustness/test_fuzz_short.py`` replays that corpus on every run.

``--atheris`` uses libFuzzer's coverage-guided engine instead (if the ``atheris`` package is
installed): its input bytes seed the mutator's RNG, so coverage feedback steers the choice of
mutations. Findings are saved the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1])]

from fuzz.bounds import Finding, signature  # noqa: E402
from fuzz.targets import TARGETS, Target, check  # noqa: E402

REGRESSIONS = HERE.parent / "regressions"


def save(target: Target, data: bytes, finding: Finding, directory: Path = REGRESSIONS) -> Path:
    """Store one failing input (and what it did) in the regression corpus."""
    folder = directory / target.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(data).hexdigest()[:16] + ".bin")
    path.write_bytes(data)
    detail = "".join(traceback.format_exception(finding.cause)) if finding.cause else str(finding)
    path.with_suffix(".txt").write_text(f"{signature(finding)}\n{finding}\n\n{detail}")
    return path


def run_random(target: Target, seconds: float, seed: int, seen: set[str]) -> tuple[int, int]:
    """Mutational fuzzing from ``seed`` for ``seconds``; returns (cases, new findings)."""
    rng = random.Random(seed)
    base = target.seed()
    cases = new = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = target.mutate(base, rng)
        cases += 1
        try:
            check(target, data)
        except Finding as finding:
            sig = signature(finding)
            if sig not in seen:
                seen.add(sig)
                new += 1
                print(f"  {target.name}: {sig} -> {save(target, data, finding)}", flush=True)
    return cases, new


def run_atheris(target: Target, seconds: float) -> None:
    import atheris  # optional dependency, only for long runs

    base = target.seed()
    seen: set[str] = set()

    def one(data: bytes) -> None:
        rng = random.Random(data)
        case = target.mutate(base, rng)
        try:
            check(target, case)
        except Finding as finding:
            sig = signature(finding)
            if sig not in seen:
                seen.add(sig)
                print(f"  {target.name}: {sig} -> {save(target, case, finding)}", flush=True)

    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", "-rss_limit_mb=2048"], one)
    atheris.instrument_all()
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--atheris", action="store_true", help="coverage-guided (one target)")
    args = parser.parse_args(argv)
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}")
    if args.atheris:
        if len(names) != 1:
            parser.error("--atheris runs exactly one target")
        run_atheris(TARGETS[names[0]], args.seconds)
        return 0
    print(f"seed {args.seed}, {args.seconds:g} s per target", flush=True)
    total_new = 0
    for name in names:
        cases, new = run_random(TARGETS[name], args.seconds, args.seed, set())
        total_new += new
        print(f"{name}: {cases} cases, {new} new finding(s)", flush=True)
    return 1 if total_new else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
