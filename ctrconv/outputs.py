"""Where ``-o OUT`` goes, decided before a byte is written, so no node is ever replaced.

* ``-``, ``/dev/stdout``, ``/dev/fd/1``, ``/proc/self/fd/1``: standard output, as a stream.
* A character or block device or a FIFO (``/dev/null``, a tape, ``mkfifo`` pipe, a disk):
  written through, opened without ``O_CREAT``/``O_TRUNC`` and never renamed over; only the
  streaming formats (tar) can go there, others are refused. A terminal is refused (a tar is
  not for the screen). A failure midway leaves a stream without the tar end marker, which
  every reader reports; it cannot be "removed".
* A socket: refused (ctrconv does not connect to anything).
* A symlink: resolved; its target is written the usual way (temp beside the target, renamed
  over it), so the link stays a link and points at the new output. A link to a device or FIFO
  is written through like the node itself.
* Anything else: a path, written atomically by the sink.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ctrconv import stdstreams
from ctrconv.errors import UsageError

STDOUT_NAMES = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def refuse_output_inside(output: str | os.PathLike[str], root: str | os.PathLike[str], why: str) -> None:
    """A :class:`~ctrconv.errors.UsageError` when ``output`` is inside ``root`` (not the root
    itself): ctrconv never writes into a root it reads, and a new root inside the root's content
    store would be copied into itself."""
    try:
        output_path, root_path = Path(output).resolve(), Path(root).resolve()
    except (OSError, RuntimeError):  # (a symlink loop: the output's own checks word it)
        return
    if output_path != root_path and output_path.is_relative_to(root_path):
        raise UsageError(f"output {output} is inside the root {root} ({why}): choose a path outside it")


def is_stdout(out: str | os.PathLike[str]) -> bool:
    """``-o -`` and the names of standard output itself."""
    return os.fspath(out) in STDOUT_NAMES


def leads_to_stdout(out: str | os.PathLike[str]) -> bool:
    """``-o`` is standard output by its name, or by where it leads (a symlink to
    ``/dev/stdout``, the file or pipe standard output already is): ``--json`` there would put
    the report into the archive's stream."""
    if is_stdout(out):
        return True
    try:
        target, stdout = os.stat(out), os.fstat(1)
    except (OSError, ValueError):
        return False
    if stat.S_ISCHR(target.st_mode) and target.st_rdev == os.makedev(1, 3):
        return False  # (both into /dev/null: nothing mixes)
    return (target.st_dev, target.st_ino) == (stdout.st_dev, stdout.st_ino)


@dataclass
class Output:
    """A resolved output: a ``path`` for an atomic write, or a node or stream written through."""

    label: str
    path: Path | None = None
    node: Path | None = None  # device or FIFO, opened by :meth:`target` (a FIFO open waits for a reader)
    kind: str = ""
    stream: BinaryIO | None = None
    _owned: bool = False

    @property
    def is_stream(self) -> bool:
        return self.path is None

    def require_streaming(self, fmt: str) -> None:
        """Refuse a directory format (oci-dir, containerd-root) for a stream or node."""
        if not self.is_stream:
            return
        if self.node is None:
            raise UsageError(f"{self.label} is standard output: it takes a tar stream; use --format oci-tar or docker-archive")
        raise UsageError(f"{self.node} is a {self.kind}: {fmt} is a directory; only oci-tar and docker-archive can be written to it")

    def target(self) -> Path | BinaryIO:
        """What the sink writes to: the path, or the open stream (a node is opened now)."""
        if self.path is not None:
            return self.path
        if self.stream is None:
            assert self.node is not None
            fd = os.open(self.node, os.O_WRONLY | os.O_CLOEXEC)  # no O_CREAT/O_TRUNC: the node stays
            if os.isatty(fd):
                os.close(fd)
                raise UsageError(f"refusing to write a tar archive to the terminal {self.node}")
            self.stream = os.fdopen(fd, "wb")
            self._owned = True
        return self.stream

    def close(self) -> None:
        """Flush (and for a node we opened: fsync where it supports that) and close it."""
        if self.stream is None:
            return
        try:
            self.stream.flush()
            if self._owned:
                try:
                    os.fsync(self.stream.fileno())
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):
                        raise
        finally:
            if self._owned:
                self.stream.close()
                self.stream = None


def _kind(mode: int) -> str | None:
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return None


def resolve_output(out: str | os.PathLike[str]) -> Output:
    """Resolve ``out`` before anything is read or written (a socket is refused here; a
    directory format on a stream or node by :meth:`Output.require_streaming`)."""
    name = os.fspath(out)
    if not name:  # (a variable that expanded to nothing: never the current directory)
        raise UsageError("-o: an empty path names no output")
    if is_stdout(name):
        stdstreams.require("stdout", f"-o {name}")
        return Output("-", stream=sys.stdout.buffer)
    if os.path.basename(name.rstrip("/")) in ("", ".", ".."):
        name = os.path.abspath(name)  # ("." cannot be renamed over; its absolute path can)
    path = Path(name)
    try:
        st = os.stat(path)  # follows symlinks: what a write would reach
    except FileNotFoundError:
        st = None
    kind = _kind(st.st_mode) if st is not None else None
    if kind == "socket":
        raise UsageError(f"{path} is a socket: ctrconv writes files, devices and FIFOs, not sockets")
    if kind is not None:
        return Output(str(path), node=path, kind=kind)
    if path.is_symlink():
        # write where the link points; the sink replaces the target, never the link
        path = Path(os.path.realpath(path))
    return Output(name, path=path)
