"""A containerd root directory: where its stores live, and opening them safely.

Reading takes a shared flock; a root held by a running containerd is refused unless
``ignore_lock`` is given, in which case a consistent private copy of each bolt file is read.
"""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from ctrconv.bolt.reader import BoltFile
from ctrconv.containerd import schema as K
from ctrconv.containerd.content import ContentStore
from ctrconv.containerd.locking import is_locked, private_copy, shared_lock
from ctrconv.containerd.metadata import MetadataDB, SnapshotterDB
from ctrconv.errors import NotFoundError, UsageError

SNAPSHOTTER_PREFIX = "io.containerd.snapshotter.v1."

#: Where a snapshot's files are, below its ``snapshots/<id>`` directory, for the snapshotters
#: that keep them as a plain directory tree: overlayfs in ``fs`` (``overlay.go`` ``upperPath``;
#: ``work`` beside it), native in the directory itself (``native.go`` ``getSnapshotDir``).
#: No other snapshotter has one ctrconv can read, compare or copy: btrfs keeps subvolumes in
#: ``active/``, ``view/`` or ``snapshots/`` by kind, erofs a ``layer.erofs`` image beside an
#: empty ``fs``, blockfile an image file, devmapper and zfs devices and datasets.
_TREE_BELOW_SNAPSHOT_DIR = {"overlayfs": "fs", "native": ""}


def holds_entries(path: "str | os.PathLike[str] | None") -> bool:
    """A directory with something in it (a snapshot tree holding a container's files); False
    when it is empty, absent or unreadable."""
    if path is None:
        return False
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def real_dir(path: Path) -> bool:
    """A directory itself, not a symlink to one nor anything else (overlayfs needs its own
    ``work`` directory)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def has_own_directory(snapshotter: str, kind: str, parent: str | None) -> bool:
    """Whether a snapshot of this kind has a directory of its own: the native snapshotter
    makes none for a view with a parent (it bind-mounts the parent's directory read-only;
    ``native.go`` creates a directory only for an active snapshot or one without a parent)."""
    return not (snapshotter == "native" and kind == "view" and parent)


def snapshot_tree(snapshotter: str, snapshot_dir: Path) -> Path | None:
    """The directory holding the files of the snapshot whose directory is ``snapshot_dir``
    (its ``snapshots/<id>``, or a temp dir that will be renamed there); ``None`` when
    ``snapshotter`` keeps no plain tree (see ``_TREE_BELOW_SNAPSHOT_DIR``)."""
    below = _TREE_BELOW_SNAPSHOT_DIR.get(snapshotter)
    if below is None:
        return None
    return snapshot_dir / below if below else snapshot_dir


#: what an in-place ``ctrconv rebuild`` found lost, kept in the root until it has finished
#: (:mod:`ctrconv.recovery.journal`): its presence means a rebuild was interrupted
REBUILD_JOURNAL = "ctrconv-rebuild.json"


class ContainerdRoot:
    """Paths of one root (``/var/lib/containerd`` or a copy of it)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def meta_db(self) -> Path:
        return self.path / K.METADATA_PLUGIN_DIR / K.META_DB

    @property
    def content_dir(self) -> Path:
        return self.path / K.CONTENT_PLUGIN_DIR

    @property
    def content(self) -> ContentStore:
        return ContentStore(self.content_dir)

    def snapshotter_dir(self, name: str) -> Path:
        return self.path / K.snapshotter_dir(name)

    def snapshotter_db(self, name: str) -> Path:
        return self.snapshotter_dir(name) / "metadata.db"

    def snapshots_dir(self, snapshotter: str) -> Path:
        """``snapshots/`` of a snapshotter: one directory per snapshot id."""
        return self.snapshotter_dir(snapshotter) / "snapshots"

    def snapshot_dir(self, snapshotter: str, snapshot_id: int) -> Path:
        """``snapshots/<id>``: everything the snapshotter keeps for one snapshot."""
        return self.snapshots_dir(snapshotter) / str(snapshot_id)

    def snapshot_fs(self, snapshotter: str, snapshot_id: int) -> Path | None:
        """The one rule for where a snapshot's files are (``snapshots/<id>/fs`` for overlayfs,
        ``snapshots/<id>`` for native); ``None`` for a snapshotter without a plain tree."""
        return snapshot_tree(snapshotter, self.snapshot_dir(snapshotter, snapshot_id))

    def snapshotters_on_disk(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(
            p.name[len(SNAPSHOTTER_PREFIX):]
            for p in self.path.iterdir()
            if p.name.startswith(SNAPSHOTTER_PREFIX) and p.is_dir()
        )

    def is_locked(self) -> bool:
        return is_locked(self.meta_db)

    def require_meta_db(self) -> None:
        if not self.path.is_dir():
            if self.path.exists():
                raise NotFoundError(f"containerd root {self.path} is not a directory")
            raise NotFoundError(f"containerd root {self.path} does not exist")
        if not self.meta_db.is_file():
            raise NotFoundError(f"{self.path} is not a containerd root: no {K.METADATA_PLUGIN_DIR}/{K.META_DB}")

    @contextmanager
    def open_bolt(self, path: Path, *, ignore_lock: bool = False) -> Iterator[BoltFile]:
        """Open one of this root's bolt files read-only, honouring the daemon's lock."""
        with ExitStack() as stack:
            if ignore_lock and is_locked(path):
                workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ctrconv-"))
                copy = private_copy(path, workdir)
                db = stack.enter_context(BoltFile(copy))
            else:
                stack.enter_context(shared_lock(path))
                db = stack.enter_context(BoltFile(path))
            yield db

    @contextmanager
    def open_metadata(self, *, ignore_lock: bool = False) -> Iterator[MetadataDB]:
        self.require_meta_db()
        with self.open_bolt(self.meta_db, ignore_lock=ignore_lock) as db:
            yield MetadataDB(db)

    @contextmanager
    def open_snapshotter(self, name: str, *, ignore_lock: bool = False) -> Iterator[SnapshotterDB | None]:
        path = self.snapshotter_db(name)
        if not path.is_file():
            yield None
            return
        with self.open_bolt(path, ignore_lock=ignore_lock) as db:
            yield SnapshotterDB(db)


def is_namespace(name: str) -> bool:
    """containerd's identifier rule for namespaces (``identifiers.Validate``)."""
    import re

    return len(name) <= 76 and re.fullmatch(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", name) is not None


def check_namespace(name: str) -> str:
    """``name`` when :func:`is_namespace`, else a usage error."""
    if not is_namespace(name):
        raise UsageError(f"invalid namespace {name!r}")
    return name


