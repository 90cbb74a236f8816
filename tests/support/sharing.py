"""Making ``forked.map_balanced`` share its items for certain in a test, however fast they are."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def after_the_child_took_one(fn: Callable[[T], R], marker: Path) -> Callable[[T], R]:
    """``fn``, where the calling process's items wait until the forked one has been through an
    item of its own (``marker``, a file it touches): without it the parent may take every item
    of a small list before the child has started."""
    parent = os.getpid()

    def shared(item: T) -> R:
        if os.getpid() != parent:
            try:
                return fn(item)
            finally:
                marker.touch()
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        return fn(item)

    return shared
