"""The terminal's view of the library's progress protocol (``ctrconv.progress``): one bar at a time.

Each stage an operation opens is one tqdm bar on stderr, with the stage's total, removed when
the stage closes (and closed when the next stage opens, so no bar stands frozen while another
stage runs). Nothing is drawn when stderr is not a terminal or with ``--quiet``; tqdm itself
is imported only when a bar is drawn.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

    from ctrconv.api import Stage, Unit


def progress_enabled(quiet: bool) -> bool:
    """Bars only for a person watching: stderr is a terminal and ``--quiet`` was not given."""
    return not quiet and sys.stderr.isatty()


class _NoBar:
    def advance(self, amount: int, files: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    """One stage's bar; ``advance`` may come from hashing threads at once."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar
        self._lock = threading.Lock()
        self._files = 0
        self.closed = False

    def advance(self, amount: int, files: int = 0) -> None:
        with self._lock:
            if self.closed:
                return
            if files:
                self._files += files
                self._bar.set_postfix_str(f"{self._files} files", refresh=False)
            self._bar.update(amount)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._bar.close()


class Bars:
    """A ``ctrconv.progress.Progress`` drawing each stage as a bar on stderr (when ``enabled``).

    Used as a context manager by a command, so a stage the library left open (an error
    unwinding it) is removed from the screen before the error line is written.
    """

    def __init__(self, enabled: bool, prefix: str = "") -> None:
        self.enabled = enabled
        self.prefix = prefix
        self._current: _Bar | None = None

    def stage(self, name: str, total: int, unit: Unit = "bytes") -> Stage:
        self.close()
        if not self.enabled:
            return _NoBar()
        from tqdm import tqdm

        scaled = unit == "bytes"
        bar = tqdm(total=total, desc=f"{self.prefix}{name}", unit="B" if scaled else f" {unit}", unit_scale=scaled,
                   unit_divisor=1024, file=sys.stderr, leave=False, dynamic_ncols=True)
        self._current = _Bar(bar)
        return self._current

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def __enter__(self) -> "Bars":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bars(quiet: bool, prefix: str = "") -> Bars:
    """The progress a command passes to the library: bars on a terminal, nothing otherwise."""
    return Bars(progress_enabled(quiet), prefix)
