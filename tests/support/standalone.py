"""The standalone executable for tests: built once per session (cached by input hash by
``scripts/build-standalone`` itself), and minimal chroots to run it in.

A chroot made here holds the executable, the shared libraries ``ldd`` names for it (at the
paths ``ldd`` resolves them to, dynamic loader included), and an empty ``/tmp`` (mode 1777)
where PyInstaller's bootloader unpacks the bundle: no shell, no Python, nothing else.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-standalone"
#: where the executable sits inside a chroot and a debug image
BINARY_IN_CHROOT = "/usr/local/bin/ctrconv"


@functools.lru_cache(maxsize=None)
def _build() -> str:
    out = subprocess.run([str(BUILD_SCRIPT), "--json"], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/build-standalone failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return out.stdout


def build_standalone() -> dict:
    """``scripts/build-standalone --json``: build or reuse (once per session); the build's
    facts (``cached`` is the file in the build cache: ``dist/`` may be replaced by another
    build)."""
    return json.loads(_build())


def ldd_paths(binary: Path) -> list[str]:
    """The absolute paths of every library ``ldd`` names for ``binary`` (loader included)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in out.splitlines():
        if "not found" in line:
            raise AssertionError(f"ldd {binary}: {line.strip()}")
        match = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+) \(", line)
        if match:
            paths.append(match.group(1))
    return paths


def make_chroot(dest: Path, binary: Path) -> Path:
    """A minimal root at ``dest``: the binary at :data:`BINARY_IN_CHROOT`, its ldd libraries,
    ``/tmp``; returns ``dest``."""
    target = dest / BINARY_IN_CHROOT.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copy2(binary, target)
    os.chmod(target, 0o755)
    for lib in ldd_paths(binary):
        copy = dest / lib.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), copy)
    (dest / "tmp").mkdir()
    os.chmod(dest / "tmp", 0o1777)
    return dest


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def run_in_chroot(chroot: Path, *args: str, cwd: str = "/", timeout: float = 300) -> Run:
    """Run the chroot's ctrconv with ``args`` inside it (working directory ``cwd`` there)."""

    def enter() -> None:
        os.chroot(chroot)
        os.chdir(cwd)

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    out = subprocess.run([BINARY_IN_CHROOT, *args], capture_output=True, text=True, preexec_fn=enter,
                         env=env, timeout=timeout)
    return Run(out.returncode, out.stdout, out.stderr)
