"""Build-once cache of the real-node corpus made by ``fixtures/build_realnode.py``.

One corpus per containerd line ("1.6" = the system's, "1.7", "2.x" fetched by
``tests/support/versions.py``), keyed by a hash of the fixture scripts, the harness modules it
uses (daemon, registry, CRI client, this file), the containerd version and binary dir, the
busybox binary and the registry/skopeo versions. Built under a file lock into a staging dir
that is renamed into place, like :mod:`support.fixture_set`, so concurrent sessions share it.

The cached roots are shared by every test and session: **never modify them**; use
:meth:`RealnodeSet.copy_root` (``cp -a``) for anything that writes, starts a daemon or takes a
lock for longer than a probe.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from support.daemon import containerd_version
from support.fixture_set import BUSYBOX, FIXTURES_DIR, REPO, build_once

LINES: tuple[str, ...] = ("1.6", "1.7", "2.x")
#: The roots every healthy-root test iterates over (same images in every namespace).
ROOTS: tuple[str, ...] = ("node", "crashed")
#: The root made with CRI's ``discard_unpacked_layers = true``: ``k8s.io`` only, layer blobs
#: deleted by GC. Not in :data:`ROOTS`: its exports and ``ctr images check`` differ by design.
DISCARDED = "discarded"
SUPPORT_DIR = Path(__file__).resolve().parent
HARNESS = ("daemon.py", "registry.py", "cri.py", "realnode_set.py")


@dataclass(frozen=True)
class RealnodeSet:
    """A built corpus: ``path/realnode.json``, ``path/node``, ``path/crashed``,
    ``path/discarded``, ``path/refs``."""

    path: Path
    line: str

    @cached_property
    def info(self) -> dict[str, Any]:
        """Parsed ``realnode.json`` (schema in fixtures/README.md)."""
        return json.loads((self.path / "realnode.json").read_text())

    def root(self, name: str = "node") -> Path:
        """The cached root ``node``, ``crashed`` or ``discarded`` (read-only for tests)."""
        if name not in ROOTS and name != DISCARDED:
            raise KeyError(name)
        return self.path / name

    @property
    def node_root(self) -> Path:
        return self.root("node")

    @property
    def crashed_root(self) -> Path:
        return self.root("crashed")

    @property
    def discarded_root(self) -> Path:
        return self.root(DISCARDED)

    @property
    def refs(self) -> Path:
        return self.path / "refs"

    def file(self, rel: str) -> Path:
        """Absolute path of a path recorded in realnode.json."""
        return self.path / rel

    def images(self) -> list[dict[str, Any]]:
        return list(self.info["images"])

    def image(self, key: str) -> dict[str, Any]:
        """One image record by key (``oci``, ``docker``, ``index``, ``list``, ``nested``,
        ``empty``, ``shared-a``, ``shared-b``)."""
        for rec in self.info["images"]:
            if rec["key"] == key:
                return rec
        raise KeyError(key)

    def names(self, namespace: str, root: str = "node") -> list[str]:
        """``ctr -n NS images ls -q`` of a root (empty if the namespace does not exist)."""
        ns = self.info["roots"][root]["namespaces"].get(namespace)
        return list(ns["images"]) if ns else []

    def export(self, key: str) -> Path | None:
        """``ctr images export`` (default namespace, host platform) of an image, if ctr could."""
        rel = self.image(key)["export"]
        return self.path / rel if rel else None

    def copy_root(self, name: str, dest: Path | str) -> Path:
        """``cp -a`` of a cached root to ``dest`` (must not exist); returns ``dest``."""
        dest = Path(dest)
        subprocess.run(["cp", "-a", str(self.root(name)), str(dest)], check=True)
        return dest


def load_builder() -> ModuleType:
    """Import ``fixtures/build_realnode.py`` (``fixtures/`` is a script dir, not a package)."""
    if str(FIXTURES_DIR) not in sys.path:
        sys.path.insert(0, str(FIXTURES_DIR))
    return importlib.import_module("build_realnode")


def _tool_version(*cmd: str) -> bytes:
    try:
        return subprocess.run(list(cmd), capture_output=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return b"missing"


def cache_key(binary_dir: str | None) -> str:
    """Hash of everything that determines a corpus's content."""
    h = hashlib.sha256()
    sources = sorted(FIXTURES_DIR.glob("*.py")) + [SUPPORT_DIR / name for name in HARNESS]
    for path in sources:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(containerd_version(binary_dir).encode() + b"\0")
    h.update(str(binary_dir).encode() + b"\0")
    h.update(_tool_version("docker-registry", "--version") + b"\0")
    h.update(_tool_version("skopeo", "--version") + b"\0")
    if BUSYBOX.exists():
        h.update(hashlib.sha256(BUSYBOX.read_bytes()).digest())
    return h.hexdigest()[:16]


def cache_base() -> Path:
    env = os.environ.get("CTRCONV_REALNODE_CACHE")
    return Path(env) if env else REPO / ".cache" / "realnode"


def get_realnode_set(line: str, binary_dir: str | None = None) -> RealnodeSet:
    """Return the cached corpus made by the containerd in ``binary_dir``, building it first
    if needed (``line`` only labels the result)."""
    base = cache_base()
    key = cache_key(binary_dir)

    def build(staging: Path) -> None:
        built.append(load_builder().build(staging, binary_dir)["containerd_bin"])

    built: list[str] = []
    final = build_once(base, key, "realnode.json", build)
    if built:  # a new corpus exists: older ones of this containerd go
        prune_stale(base, keep=key, containerd_bin=built[0])
    return RealnodeSet(final, line)


#: A superseded corpus is removed only when it is at least this old (seconds), so a session
#: still reading one that another session's code change just replaced is left alone.
STALE_AFTER = 3600.0


def prune_stale(base: Path, keep: str, containerd_bin: str) -> None:
    """Remove older corpora of the same containerd binary (~25 MB each; every edit of a
    fixture script makes a new one). Entries being built (locked) are never touched."""
    now = time.time()
    for entry in base.iterdir():
        if entry.name == keep or not entry.is_dir() or "." in entry.name:
            continue
        try:
            info = json.loads((entry / "realnode.json").read_text())
            old_enough = now - (entry / "realnode.json").stat().st_mtime > STALE_AFTER
        except (OSError, ValueError):
            continue
        if info.get("containerd_bin") != containerd_bin or not old_enough:
            continue
        lock_path = base / f"{entry.name}.lock"
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            lock_path.unlink(missing_ok=True)


def missing_requirement(line: str) -> str | None:
    """Why the corpus of ``line`` cannot be built here (None when it can), for pytest.skip."""
    if line not in LINES:
        return f"unknown containerd line {line!r} (known: {', '.join(LINES)})"
    if os.geteuid() != 0:
        return "the real-node corpus needs root (overlayfs mounts, runc tasks)"
    for tool, package in (("docker-registry", "docker-registry"), ("skopeo", "skopeo"),
                          ("umoci", "umoci"), ("runc", "runc")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt package {package}); needed for the corpus"
    if not BUSYBOX.is_file():
        return "/bin/busybox is missing (apt package busybox-static)"
    try:
        import grpc  # noqa: F401
    except ImportError:
        return "grpcio is not installed (pip install grpcio); needed for CRI pulls"
    if line == "1.6":
        for tool in ("containerd", "ctr"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (apt package containerd)"
    return None


@functools.lru_cache(maxsize=None)
def realnode_set_for(line: str) -> RealnodeSet:
    """The corpus built by containerd ``line`` ("1.6" | "1.7" | "2.x"); ``pytest.skip`` with
    the reason when that line's package cannot be fetched or a tool is missing."""
    import pytest

    reason = missing_requirement(line)
    if reason:
        pytest.skip(reason)
    if line == "1.6":
        binary_dir = None
        version = containerd_version(None)
        if not version.startswith("1.6"):
            pytest.skip(f"the system containerd is {version}, not 1.6")
    else:
        from support.versions import bin_dir_for

        binary_dir = str(bin_dir_for(line))
    return get_realnode_set(line, binary_dir)
