"""The committed small root (``fixtures/small-root.tar.xz``: one busybox image, unpacked), extracted."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

SMALL_ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "small-root.tar.xz"


def extract_small_root(base: Path) -> Path:
    """A fresh copy of the small root under ``base``; returns the root directory."""
    with tarfile.open(SMALL_ROOT) as tar:
        tar.extractall(base, filter="fully_trusted")
    return base / "small-root"


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy per test module that imports this fixture (tests there must not change it)."""
    return extract_small_root(tmp_path_factory.mktemp("small-root"))
