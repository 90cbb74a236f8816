"""Making a file output visible: its temp file or directory renamed onto the target at once.

Every file sink writes beside its target (a temp name in the same directory, so the rename
cannot cross filesystems), syncs what it wrote, and only then renames: a reader sees the old
target or the complete new one, never a part, and a failed export leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ctrconv import tempfiles
from ctrconv.commitpoint import committing
from ctrconv.errors import UsageError
from ctrconv.streams import fsync_dir


def publish(tmp: Path, final: Path) -> None:
    """Rename the complete, synced ``tmp`` onto ``final`` with signals deferred (the commit
    point: from here on a signal no longer undoes the export), then sync the parent directory
    so the rename itself survives a power cut."""
    with committing():
        os.replace(tmp, final)
        tempfiles.forget(tmp)
    fsync_dir(final.parent)


def publish_dir(tmp: Path, final: Path) -> None:
    """A directory output: mode 0755 (``mkdtemp`` made it 0700), its entries synced, then
    :func:`publish` (an existing empty directory at ``final`` is replaced). A directory that
    another process filled meanwhile (two exports into one new directory) is refused as when
    it was there at the start (exit 2); the error named this export's own temp directory."""
    os.chmod(tmp, 0o755)
    fsync_dir(tmp)
    try:
        publish(tmp, final)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        kind = "is not empty" if final.is_dir() and not final.is_symlink() else "is not a directory"
        raise UsageError(f"{final} exists and {kind} (made by another process while this export ran)",
                         hint="choose a new directory") from None


def discard_dir(tmp: Path) -> None:
    """A failed or interrupted directory output: the temp directory removed."""
    shutil.rmtree(tmp, ignore_errors=True)
    tempfiles.forget(tmp)


def temp_pattern(out: Path) -> tuple[str, str]:
    """(prefix, suffix) of the temp directory a directory sink writes ``out`` in."""
    return f".{out.name}.", ".ctrconv-tmp"


class StagedDirectory:
    """Base of the directory sinks: written into ``_tmp`` beside the target ``_final``,
    published by :meth:`_publish` at commit, removed by :meth:`abort` otherwise."""

    _final: Path
    _tmp: Path | None = None

    def _stage(self, out: Path) -> None:
        """Create the temp directory: call last in ``__init__``, so that once it exists the
        caller holds a sink whose :meth:`abort` removes it."""
        self._final = out
        self._tmp = tempfiles.temp_dir(out.parent, *temp_pattern(out), sweep=True)

    def _publish(self) -> None:
        assert self._tmp is not None
        publish_dir(self._tmp, self._final)
        self._tmp = None

    def abort(self) -> None:
        if self._tmp is not None:
            discard_dir(self._tmp)
            self._tmp = None


__all__: list[str] = ["StagedDirectory", "discard_dir", "publish", "publish_dir"]
