"""``ctrconv`` run as a separate process on a root, the way the crash and disk-full tests kill
and starve it: the command, the images a root lists, and the import they interrupt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_ctrconv(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "ctrconv", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    if check:
        assert result.returncode == 0, f"ctrconv {' '.join(args)}: exit {result.returncode}: {result.stderr}"
    return result


def listed_images(root: Path) -> set[tuple[str, str]]:
    out = run_ctrconv("ls", "--root", str(root), "-A", "--json").stdout
    return {(i["name"], i["digest"]) for i in json.loads(out)["images"]}


def import_args(root: Path, source: Path) -> list[str]:
    return ["import", "--root", str(root), "-i", str(source), "--snapshotter", "native", "-q", "--no-backup"]
