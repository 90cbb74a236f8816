"""Making ``forked.map_balanced`` share its items for certain in a test, however fast they are."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def both_take_part(fn: Callable[[T], R], marker: Path) -> Callable[[T], R]:
    """``fn``, where each process's first item waits until the other process has taken an
    item too (each says so with a file beside ``marker``): both then hold one, so both take
    part, whichever is scheduled first. Without it either may take every item of a short
    list before the other runs (the child raced through 300 of them once, under load). Give
    it at least two items."""
    parent = os.getpid()
    mine = {True: marker.with_name(marker.name + ".parent"), False: marker.with_name(marker.name + ".child")}

    def shared(item: T) -> R:
        here = os.getpid() == parent
        if not mine[here].exists():
            mine[here].touch()  # this process holds an item
            deadline = time.monotonic() + 30
            while not mine[not here].exists() and time.monotonic() < deadline:
                time.sleep(0.001)
        return fn(item)

    return shared
