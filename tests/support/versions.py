"""Other containerd lines (1.7, 2.x) for interop tests: fetched once per session, then cached.

``fixtures/containerd_versions.py`` does the fetching (private apt state, ``dpkg -x``); this
module turns its failures into ``pytest.skip`` with the reason, and builds each line's own
fixture set with that daemon (``get_fixture_set`` caches per containerd version).
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from support.fixture_set import FIXTURES_DIR, FixtureSet, get_fixture_set

#: The lines tested besides the system containerd (Debian 12: 1.6).
VERSIONS: tuple[str, ...] = ("1.7", "2.x")

#: meta.db ``v1/version`` each line writes (1.6/1.7: dbVersion 3; 2.x: 4).
SCHEMA_VERSION: dict[str, int] = {"1.6": 3, "1.7": 3, "2.x": 4}


def load_versions_module() -> ModuleType:
    """Import ``fixtures/containerd_versions.py`` (``fixtures/`` is a script dir)."""
    if str(FIXTURES_DIR) not in sys.path:
        sys.path.insert(0, str(FIXTURES_DIR))
    return importlib.import_module("containerd_versions")


@functools.lru_cache(maxsize=None)
def _fetch(label: str) -> tuple[object | None, str | None]:
    """Fetch result or the failure text; cached so one session tries each line once."""
    mod = load_versions_module()
    try:
        return mod.fetch(label), None
    except mod.FetchError as exc:
        return None, str(exc)


def containerd_build(label: str):
    """The :class:`ContainerdBuild` of ``label``; ``pytest.skip`` if it cannot be fetched."""
    build, error = _fetch(label)
    if build is None:
        pytest.skip(f"containerd {label} unavailable: {error}")
    return build


def bin_dir_for(label: str) -> Path:
    """Directory with ``containerd``/``ctr`` of ``label`` (skips if unavailable)."""
    return containerd_build(label).bin_dir


@functools.lru_cache(maxsize=None)
def fixture_set_for(label: str) -> FixtureSet:
    """The fixture set built by containerd ``label`` (skips if the package is unavailable)."""
    return get_fixture_set(str(bin_dir_for(label)))
