"""One progress protocol for every long operation: named stages whose totals are known up front.

An operation measures its work before it starts (verify and rebuild sum the sizes of the blobs
they will hash, export and push the bytes they will write, import the bytes to copy and to
unpack and the records to write), then runs one :class:`Stage` at a time and closes it before
the next, so a display never shows a bar standing still while other work runs, and never one
bar per blob. The library draws nothing: the CLI passes a :class:`Progress` that draws on a
terminal; every other caller gets :data:`SILENT`.

    with stage(progress, "content", total_bytes) as step:
        for blob in blobs:
            copy(blob, on_bytes=step.advance)

Stdlib only, and imported by the bottom layers (hashing, copying, unpacking), so it must stay
light.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal, Protocol

#: what a stage counts; ``bytes`` are shown scaled (KiB, MiB, ...), ``records`` as a plain count
Unit = Literal["bytes", "records"]


class Stage(Protocol):
    """One stage of an operation, with the total it was opened with."""

    def advance(self, amount: int, files: int = 0) -> None:
        """``amount`` more units done; ``files``: that many more files written (shown beside
        the bytes of an unpack, whose file count is not known up front). Thread-safe."""

    def close(self) -> None:
        """The stage is over (whatever it reached); the display removes it."""


class Progress(Protocol):
    """Where an operation reports its stages."""

    def stage(self, name: str, total: int, unit: Unit = "bytes") -> Stage:
        """Start stage ``name`` of ``total`` units; any stage still open is over."""


class _SilentStage:
    def advance(self, amount: int, files: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


class _Silent:
    def stage(self, name: str, total: int, unit: Unit = "bytes") -> Stage:
        return SILENT_STAGE


#: the stage of nobody watching (the default of every helper that takes a stage)
SILENT_STAGE: Stage = _SilentStage()
#: the progress of nobody watching (the default of every operation)
SILENT: Progress = _Silent()


@contextmanager
def stage(progress: Progress | None, name: str, total: int, unit: Unit = "bytes") -> Iterator[Stage]:
    """Open stage ``name`` on ``progress`` (None: :data:`SILENT`) and close it on the way out,
    also when the work fails."""
    current = (progress or SILENT).stage(name, total, unit)
    try:
        yield current
    finally:
        current.close()
