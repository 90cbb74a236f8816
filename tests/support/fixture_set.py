"""Build-once cache of the fixture set made by ``fixtures/build_fixtures.py``.

The set is keyed by a hash of the fixture scripts, the daemon harness, the busybox binary and the
containerd version, so editing any of them rebuilds it and unrelated sessions reuse it. Several
pytest sessions may run at once (other engineers share the checkout), so the build happens under
a file lock into a temp dir that is renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from support.daemon import containerd_version

REPO = Path(__file__).resolve().parents[2]
FIXTURES_DIR = REPO / "fixtures"
BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class FixtureSet:
    """A built fixture set: ``root`` (stopped containerd root), ``refs``, ``inputs``, ``info``."""

    path: Path

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def refs(self) -> Path:
        return self.path / "refs"

    @property
    def inputs(self) -> Path:
        return self.path / "inputs"

    @cached_property
    def info(self) -> dict[str, Any]:
        """Parsed ``fixtures.json`` (schema in fixtures/README.md)."""
        return json.loads((self.path / "fixtures.json").read_text())

    def images(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Image records, optionally of one namespace."""
        return [i for i in self.info["images"] if namespace in (None, i["namespace"])]

    def image(self, namespace: str, name: str) -> dict[str, Any]:
        """One image record; KeyError if the fixture set has no such image."""
        for rec in self.images(namespace):
            if rec["name"] == name:
                return rec
        raise KeyError(f"{namespace}/{name}")

    def input(self, key: str) -> dict[str, Any]:
        """One input record (``path`` is relative to the set; see :meth:`file`)."""
        for rec in self.info["inputs"]:
            if rec["key"] == key:
                return rec
        raise KeyError(key)

    def file(self, rel: str) -> Path:
        """Absolute path of a path recorded in fixtures.json."""
        return self.path / rel

    def snapshot_listing(self, namespace: str, key: str) -> dict[str, Any]:
        """The recorded listing of a committed snapshot (chain ID key)."""
        for rec in self.info["snapshots"][namespace]:
            if rec["key"] == key and rec["listing"]:
                return json.loads((self.path / rec["listing"]).read_text())
        raise KeyError(f"{namespace}/{key}")


def load_builder() -> ModuleType:
    """Import ``fixtures/build_fixtures.py`` (``fixtures/`` is a script dir, not a package)."""
    if str(FIXTURES_DIR) not in sys.path:
        sys.path.insert(0, str(FIXTURES_DIR))
    return importlib.import_module("build_fixtures")


def cache_key(binary_dir: str | None) -> str:
    """Hash of everything that determines the fixture set's content."""
    h = hashlib.sha256()
    sources = sorted(FIXTURES_DIR.glob("*.py")) + [Path(__file__).with_name("daemon.py")]
    for path in sources:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(containerd_version(binary_dir).encode() + b"\0")
    h.update(str(binary_dir).encode() + b"\0")
    if BUSYBOX.exists():
        h.update(hashlib.sha256(BUSYBOX.read_bytes()).digest())
    return h.hexdigest()[:16]


def cache_base() -> Path:
    env = os.environ.get("CTRCONV_FIXTURE_CACHE")
    return Path(env) if env else REPO / ".cache" / "fixtures"


def build_once(base: Path, key: str, marker: str, build: "Callable[[Path], object]") -> Path:
    """``base/key``, made by ``build(staging)`` unless it already holds ``marker``.

    Under a file lock (several pytest sessions may share the checkout), into a staging
    directory renamed into place, so a half-built set is never seen. Returns the final path.
    """
    base.mkdir(parents=True, exist_ok=True)
    final = base / key
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / marker).exists():
            shutil.rmtree(final, ignore_errors=True)
            staging = base / f"{key}.building-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                build(staging)
                os.rename(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return final


def get_fixture_set(binary_dir: str | None = None) -> FixtureSet:
    """Return the cached fixture set for this containerd, building it first if needed."""
    return FixtureSet(build_once(cache_base(), cache_key(binary_dir), "fixtures.json",
                                 lambda staging: load_builder().build(staging, binary_dir)))
