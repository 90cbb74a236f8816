"""A :class:`ctrconv.progress.Progress` that records what an operation reported, for assertions."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class RecordedStage:
    name: str
    total: int
    unit: str
    done: int = 0
    files: int = 0
    closed: bool = False
    #: ``done`` went past ``total`` at some point (a total that was not the real work)
    overran: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def advance(self, amount: int, files: int = 0) -> None:
        assert not self.closed, f"stage {self.name} advanced after it was closed"
        with self._lock:
            self.done += amount
            self.files += files
            self.overran = self.overran or self.done > self.total

    def close(self) -> None:
        self.closed = True


class RecordingProgress:
    """Every stage opened, in order; ``on_stage(name)`` runs as a stage opens (a hook for a test
    that must act at a given moment of an operation). Asserts one open stage at a time."""

    def __init__(self, on_stage: Callable[[str], None] | None = None) -> None:
        self.stages: list[RecordedStage] = []
        self.on_stage = on_stage

    def stage(self, name: str, total: int, unit: str = "bytes") -> RecordedStage:
        assert all(s.closed for s in self.stages), f"stage {name} opened while {self.stages[-1].name} is open"
        if self.on_stage is not None:
            self.on_stage(name)
        self.stages.append(RecordedStage(name, total, unit))
        return self.stages[-1]

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def get(self, name: str) -> RecordedStage:
        (found,) = [s for s in self.stages if s.name == name]
        return found
