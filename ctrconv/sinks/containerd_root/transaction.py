"""One write to a containerd root: locks, the bolt trees, and the commit order.

Order of a commit (so a crash at any point leaves a root containerd starts on and cleans):

1. blobs are already in ``blobs/`` (the importer writes them first; unreferenced blob files are
   invisible and removed by containerd's next content GC);
2. each changed snapshotter ``metadata.db`` is replaced (records for snapshots whose directories
   are not in place yet are unreferenced by meta.db, so GC would drop them; overlay ``Remove``
   does not need the directory);
3. the finished snapshot directories are renamed from the snapshotter's ``.ctrconv-tmp-*``
   area to ``snapshots/<id>`` (their ids are in metadata.db now, so overlay ``Cleanup`` keeps
   them);
4. ``meta.db`` is replaced last: only now do images, blob records and snapshot records appear.

Before step 2 the blobs and snapshot trees are made durable (one ``syncfs`` per filesystem),
so a power cut after any later step never leaves a record pointing at an empty file.

Every bolt file is written as a complete new file beside the old one, fsynced and renamed over
it; the old file is kept as ``<name>.bak-<UTC time>`` (a hard link made before the rename)
unless ``backup=False``. Files whose tree did not change are not touched at all.

Which containerd the file is for (docs/containerd-versions.md, "Writing roots for each
version"): an existing meta.db is rewritten the way the containerd that last wrote it does
(its newest meta page's freelist style, its page size, its ``v1/version`` unchanged), so that
containerd's own start-up migration and GC see nothing foreign. ``containerd_version`` only
shapes a new meta.db: 1.6 persists the freelist, 1.7 and 2.x do not; 2.x gets schema version 4.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import struct
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ctrconv.bolt.reader import BoltFile
from ctrconv.bolt.tree import BucketTree
from ctrconv.bolt.writer import PreparedBolt, prepare_bolt
from ctrconv.containerd import schema as K
from ctrconv.containerd.records import write_schema_version
from ctrconv.containerd.metadata import MetadataDB
from ctrconv.commitpoint import committing
from ctrconv.interrupts import SIGNALS
from ctrconv.containerd.locking import exclusive_lock, new_inode_hook
from ctrconv.containerd.rootlock import write_lock
from ctrconv.sinks.containerd_root.content_writer import remove_stale_temp
from ctrconv.errors import UsageError
from ctrconv.durability import fsync_path, sync_filesystems
from ctrconv.streams import fsync_dir

ROOT_MODE = 0o711
BOLT_DIR_MODE = 0o711
META_DB_MODE = 0o644
CONTENT_DIR_MODE = 0o755
SNAPSHOTTER_DIR_MODE = 0o700
SNAPSHOTTER_DB_MODE = 0o600
SNAPSHOTTER_DB = "metadata.db"

CONTAINERD_VERSIONS = ("1.6", "1.7", "2.x")


def detect_containerd_version(meta_db: str | os.PathLike[str]) -> str | None:
    """The oldest containerd line that writes a meta.db like this one; None if there is none.

    See :attr:`ctrconv.containerd.metadata.MetadataDB.writer_line`.
    """
    path = Path(meta_db)
    if not path.is_file():
        return None
    with BoltFile(path) as db:
        return MetadataDB(db).writer_line


def fingerprint(tree: BucketTree) -> bytes:
    """SHA-256 of the tree's content (sequences, keys in order, values, which entries are
    buckets; every field length-prefixed): equal exactly when the trees are equal, as far as
    SHA-256 tells. A transaction keeps this of the file as read instead of a second tree (a
    10,000-image meta.db is ~65 MiB of Python objects per tree)."""
    h = hashlib.sha256()
    pack = struct.Struct(">Q").pack

    def walk(bucket: BucketTree) -> None:
        h.update(pack(bucket.sequence) + pack(len(bucket.entries)))
        for key in sorted(bucket.entries):
            value = bucket.entries[key]
            h.update(pack(len(key)) + key)
            if isinstance(value, BucketTree):
                h.update(b"B")
                walk(value)
            else:
                h.update(b"V" + pack(len(value)) + value)

    walk(tree)
    return h.digest()


@dataclass
class _BoltState:
    """A bolt file as it will be written (``tree``) and the :func:`fingerprint` of it as read."""

    path: Path
    mode: int
    original: bytes
    tree: BucketTree
    page_size: int | None
    freelist: bool
    txid: int
    existed: bool

    @property
    def changed(self) -> bool:
        return fingerprint(self.tree) != self.original


def _load(path: Path, mode: int, *, new_freelist: bool, new: bool = False) -> _BoltState:
    """The bolt file at ``path`` as a tree, or an empty one when there is none (``new``: the
    file is this writer's placeholder, see :meth:`RootTransaction._hold`)."""
    if not new and path.is_file():
        with BoltFile(path) as db:
            tree = BucketTree.load(db.root)
            return _BoltState(path, mode, fingerprint(tree), tree, db.page_size, db.meta.freelist_synced,
                              db.meta.txid + 1, True)
    return _BoltState(path, mode, fingerprint(BucketTree()), BucketTree(), None, new_freelist, 2, False)


@dataclass
class RootTransaction:
    """Exclusive write access to one root; use as a context manager, then :meth:`commit`.

    ``containerd_version`` shapes a new meta.db (None = 1.6); an existing one keeps the form
    its containerd wrote (:attr:`detected_version`), whatever is passed.
    """

    root: Path
    snapshotters: tuple[str, ...] = ()
    containerd_version: str | None = "1.6"
    backup: bool = True
    #: line the existing meta.db was written by (:func:`detect_containerd_version`), set on open
    detected_version: str | None = field(default=None, init=False)
    _stack: ExitStack = field(default_factory=ExitStack, init=False, repr=False)
    _meta: _BoltState | None = field(default=None, init=False, repr=False)
    _backends: dict[str, _BoltState] = field(default_factory=dict, init=False, repr=False)
    backups: list[Path] = field(default_factory=list, init=False)
    #: set once meta.db replacement started: from then on new blobs may be referenced
    meta_attempted: bool = field(default=False, init=False)
    _created_root: bool = field(default=False, init=False, repr=False)
    _was_empty: bool = field(default=False, init=False, repr=False)
    #: fds holding LOCK_EX on the bolt files as they were (the inodes each commit replaces)
    _locked: dict[Path, int] = field(default_factory=dict, init=False, repr=False)
    #: bolt files that did not exist: an empty placeholder holds each name and lock until the
    #: commit replaces it (:meth:`_hold`)
    _placeholders: set[Path] = field(default_factory=set, init=False, repr=False)
    #: directories this writer made in a root that existed, in the order made
    _made_dirs: list[Path] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.containerd_version is not None and self.containerd_version not in CONTAINERD_VERSIONS:
            raise UsageError(
                f"unknown containerd version {self.containerd_version!r} (use {', '.join(CONTAINERD_VERSIONS)})"
            )
        self.root = Path(self.root)

    # -- paths -------------------------------------------------------------------------------

    @property
    def meta_db_path(self) -> Path:
        return self.root / K.METADATA_PLUGIN_DIR / K.META_DB

    @property
    def content_dir(self) -> Path:
        return self.root / K.CONTENT_PLUGIN_DIR

    def snapshotter_dir(self, name: str) -> Path:
        return self.root / K.snapshotter_dir(name)

    # -- open --------------------------------------------------------------------------------

    def __enter__(self) -> "RootTransaction":
        try:
            self._open()
        except BaseException:
            try:
                if self._locked:  # (the root lock is held: what this writer made may go)
                    self._remove_own_skeleton()
                self._remove_placeholders()
                self._remove_made_dirs()
            finally:
                self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is not None and not self.meta_attempted:
                self._remove_own_skeleton()
            self._remove_placeholders()
            if exc_type is not None and not self.meta_attempted:
                self._remove_made_dirs()
        finally:
            self._stack.close()  # the lock goes last: nobody sees a half-removed root

    def _remove_placeholders(self) -> None:
        """A placeholder no commit replaced (the write failed, or it had nothing to write to
        that file) goes: left, it was a 0-byte bolt file in the root. Each is retired first, so
        a containerd waiting on it fails to open it rather than making an empty database."""
        for path in self._placeholders:
            fd = self._locked.get(path)
            try:
                if fd is not None and os.fstat(fd).st_size == 0 and os.path.samestat(os.fstat(fd), os.stat(path)):
                    os.unlink(path)
                    _retire(fd, None)
            except OSError:
                pass

    def _remove_made_dirs(self) -> None:
        """The plugin directories a failed write made in a root that held other things go
        again where nothing was put in them (a snapshotter the root never had stays absent, as
        before the run: left, it read as a snapshotter with no database)."""
        for path in reversed(self._made_dirs):
            try:
                path.rmdir()
            except OSError:
                pass  # (not empty, or gone with the skeleton: either way nothing of ours to take)

    def _mkdir(self, path: Path, mode: int) -> None:
        """``mkdir`` that remembers a directory it made (:meth:`_remove_made_dirs`)."""
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            return
        self._made_dirs.append(path)

    def _remove_own_skeleton(self) -> None:
        """A failed write into a root that was empty when this writer locked it leaves nothing:
        the root itself if this writer made it, else (a directory given empty, perhaps a mount
        point) what it put inside. A root that held anything else is never touched here."""
        if self._created_root:
            shutil.rmtree(self.root, ignore_errors=True)
        elif self._was_empty and self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _open(self) -> None:
        # The writers' lock first, before a byte is written (a new root is made by this call).
        lock = self._stack.enter_context(write_lock(self.root))
        self._created_root = lock.created
        self._was_empty = lock.was_empty
        self._mkdir(self.root / K.METADATA_PLUGIN_DIR, BOLT_DIR_MODE)
        # Lock everything before reading anything: containerd holds these for its lifetime.
        self._hold(self.meta_db_path, META_DB_MODE)
        for name in self.snapshotters:
            sdir = self.snapshotter_dir(name)
            self._mkdir(sdir, SNAPSHOTTER_DIR_MODE)
            self._mkdir(sdir / "snapshots", SNAPSHOTTER_DIR_MODE)
            self._hold(sdir / SNAPSHOTTER_DB, SNAPSHOTTER_DB_MODE)
        remove_stale_temp(self.content_dir)
        for name in self.snapshotters:
            remove_stale_temp(self.snapshotter_dir(name))
        remove_stale_bolt_temps(self.meta_db_path)
        for name in self.snapshotters:
            remove_stale_bolt_temps(self.snapshotter_dir(name) / SNAPSHOTTER_DB)
        self.detected_version = (None if self.meta_db_path in self._placeholders
                                 else detect_containerd_version(self.meta_db_path))
        target = self.containerd_version or "1.6"
        # An existing file keeps its freelist style and version key: 2.x migrates a version-3
        # file itself (moving 1.7's root-level sandboxes first), 1.x opens version 4 as is.
        self._meta = _load(self.meta_db_path, META_DB_MODE, new_freelist=target == "1.6",
                           new=self.meta_db_path in self._placeholders)
        if not self._meta.existed:
            version = K.DB_VERSION_2X if target == "2.x" else K.DB_VERSION_1X
            v1 = self._meta.tree.bucket(K.V1, create=True)
            assert v1 is not None
            write_schema_version(v1, version)
        for name in self.snapshotters:
            # snapshotters open their db with bbolt defaults: freelist synced in every version
            path = self.snapshotter_dir(name) / SNAPSHOTTER_DB
            self._backends[name] = _load(path, SNAPSHOTTER_DB_MODE, new_freelist=True, new=path in self._placeholders)

    def _hold(self, path: Path, mode: int) -> None:
        """Take ``LOCK_EX`` on the bolt file ``path``; one that does not exist yet gets an empty
        placeholder, locked, in its name. A containerd started on a new root while it is written
        opens that placeholder and waits for its lock; the commit then replaces it and retires
        it (:func:`_retire`), so that containerd fails to open it instead of running on an
        empty database whose GC deleted every blob and snapshot this write added (found by a
        red-team run: the import exited 0 and its images were gone)."""
        if not path.is_file():
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, mode)
            except FileExistsError:  # (someone made it since: lock it as it is)
                pass
            else:
                os.close(fd)
                self._placeholders.add(path)
        self._locked[path] = self._stack.enter_context(exclusive_lock(path))
        if os.fstat(self._locked[path]).st_size == 0:
            # empty and now ours: a placeholder of a writer killed before its commit (or a file
            # bbolt never initialised): no database in it, so it is written as a new one
            self._placeholders.add(path)

    @property
    def version_mismatch(self) -> str | None:
        """Why ``containerd_version`` is not what the existing meta.db shows, or None.

        Only provable differences count: a 2.x file for a 1.x target, or an unsynced file for
        1.6 (a synced file may well be 1.7's). The file is written as detected regardless.
        """
        wanted, found = self.containerd_version, self.detected_version
        if wanted is None or found is None or wanted == found:
            return None
        if found == "2.x" or (found == "1.7" and wanted == "1.6"):
            return (
                f"{self.meta_db_path} was last written by containerd {found}"
                f"{'' if found == '2.x' else '+'}; it is kept in that form (requested: {wanted})"
            )
        return None

    # -- trees -------------------------------------------------------------------------------

    @property
    def meta(self) -> BucketTree:
        """The meta.db tree to edit."""
        assert self._meta is not None, "transaction not open"
        return self._meta.tree

    def backend(self, snapshotter: str) -> BucketTree:
        """The snapshotter metadata.db tree to edit."""
        return self._backends[snapshotter].tree

    @property
    def changed(self) -> bool:
        assert self._meta is not None
        return self._meta.changed or any(s.changed for s in self._backends.values())

    # -- commit ------------------------------------------------------------------------------

    def commit(self, install_snapshots: Callable[[], None] | None = None) -> bool:
        """Write what changed, in crash-safe order; False when nothing had to be written.

        ``install_snapshots`` moves finished snapshot directories into place; it runs after
        the snapshotter databases and before meta.db.
        """
        assert self._meta is not None, "transaction not open"
        if not self.changed:
            return False
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        # Durable before anything points at it: blob files (each fsynced as written) and the
        # snapshot trees built under .ctrconv-tmp-*, with every directory entry made so far.
        sync_filesystems([self.content_dir, *(self.snapshotter_dir(n) for n in self.snapshotters),
                          self.meta_db_path.parent])
        backends = [state for state in self._backends.values() if state.changed]
        meta = [self._meta] if self._meta.changed or not self._meta.existed else []
        # Every new bolt file (and backup) is written before any is renamed into place: a full
        # disk fails here, with nothing replaced, so the import takes back its blobs and
        # snapshot trees. (Renaming each as it was written left a pull that ran out of room at
        # meta.db with its snapshotter db replaced, its snapshot installed and its blobs kept:
        # twice the image's size that nothing freed: a red-team run.)
        prepared = self._prepare([*backends, *meta], stamp)
        try:
            # the renames run with SIGINT/SIGTERM deferred: a signal between the snapshotter
            # db's and meta.db's left the first replaced, naming snapshots the failed import
            # then removed (a red-team run); what is left is renames, done in moments
            with committing():
                for state in backends:
                    self._publish(state, prepared.pop(state.path))
                if install_snapshots is not None:
                    install_snapshots()
                for state in meta:
                    self.meta_attempted = True
                    self._publish(state, prepared.pop(state.path))
        finally:
            for left in prepared.values():
                left.discard()
        return True

    def _prepare(self, states: list[_BoltState], stamp: str) -> dict[Path, PreparedBolt]:
        """Backups and new files of ``states``, all written and synced; none renamed. On an
        error every one made is removed again (the backups copy files left as they were)."""
        made: dict[Path, PreparedBolt] = {}
        backups: list[Path] = []
        try:
            for state in states:
                if state.existed and self.backup:
                    backups.append(backup_copy(state.path, stamp))
                made[state.path] = prepare_bolt(
                    state.path, state.tree, page_size=state.page_size, txid=state.txid, freelist=state.freelist,
                    mode=state.mode, before_rename=new_inode_hook(),
                )
        except BaseException:
            for new in made.values():
                new.discard()
            for backup in backups:
                backup.unlink(missing_ok=True)
            raise
        self.backups.extend(backups)
        return made

    def _publish(self, state: _BoltState, new: PreparedBolt) -> None:
        replace_bolt_file(state.path, self._locked.get(state.path), state.page_size, lambda _hook: new.publish())


def backup_copy(path: Path, stamp: str) -> Path:
    """``<file>.bak-<stamp>`` (``.2``, ``.3`` when taken), a synced copy of the bolt file about
    to be replaced. A copy, not a link: the replaced inode must end up nameless (:func:`_retire`)."""
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}.{n}")
    try:
        shutil.copy2(path, backup)
        fsync_path(backup)
    except BaseException:
        # a copy cut short (a full disk, a signal) is no backup: left, it read as one of a
        # truncated file, and restoring it broke the root (a red-team run)
        backup.unlink(missing_ok=True)
        raise
    fsync_dir(backup.parent)  # (its name too, before the file it copies is replaced)
    return backup


def replace_bolt_file(path: Path, held: int | None, page_size: int | None,
                      write: Callable[[Callable[[int], None] | None], object]) -> None:
    """Write a new bolt file over ``path`` with ``write`` (a :func:`write_bolt` call taking the
    ``before_rename`` hook), then retire the inode it replaced, whose lock ``held`` is, before
    that lock can go (:func:`_retire`, guarded against a kill by :class:`_RetireGuard`): a
    containerd waiting on the old inode then fails to open it instead of running on it. While
    :func:`~ctrconv.containerd.locking.keeping_bolt_locks` runs, the new file is locked before
    its rename and stays locked."""
    guard = _RetireGuard(held, page_size) if held is not None else None
    try:
        write(new_inode_hook())
        fsync_dir(path.parent)
        if held is not None:
            _retire(held, page_size)
    finally:
        if guard is not None:
            guard.release()


def remove_stale_bolt_temps(path: Path) -> None:
    """The ``.<name>.*.tmp`` a bolt write killed before its rename left (a whole copy of the
    file each: nothing else ever removed them). Called under the locks: no writer is writing."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(f".{path.name}.") and entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


class _RetireGuard:
    """A forked child holding the locked bolt file across its replacement: if this process is
    killed outright (SIGKILL, the OOM killer) between the rename and :func:`_retire`, the
    lock would pass to a containerd waiting on the old inode, which would then run on the
    metadata as it was and let its GC delete what the new file names. The child, still holding
    the lock, retires the old inode itself once it has no name, then lets it go. It runs in its
    own session, so a kill of the writer's process group (``timeout -s KILL``, a cancelled CI
    job) spares it; a kill of the whole cgroup does not: that window stays (docs/import.md)."""

    def __init__(self, fd: int, page_size: int | None) -> None:
        read_end, self._done = os.pipe()
        ready_read, ready_write = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:  # the child: nothing but system calls, then _exit
            try:
                os.setsid()  # (a kill of the writer's process group, as timeout -s KILL sends, spares it)
                for signum in SIGNALS:
                    try:
                        signal.signal(signum, signal.SIG_IGN)
                    except ValueError:  # (forked from a thread other than the main one: none to ignore)
                        break
                os.write(ready_write, b"r")
                os.close(self._done)
                _close_all_but(fd, read_end)
                finished = os.read(read_end, 1)
                if not finished:  # the writer died: retire what it replaced, if it did
                    _retire(fd, page_size)
            finally:
                os._exit(0)
        os.close(read_end)
        os.close(ready_write)
        try:
            # the guard guards once it is out of the writer's process group: a kill of that
            # group before its setsid took it too (seen once the rename followed at once)
            os.read(ready_read, 1)
        finally:
            os.close(ready_read)

    def release(self) -> None:
        """The writer finished (retired or not replaced): the child goes. (A child already gone
        cannot fail the write it guarded: its pipe is closed quietly.)"""
        try:
            os.write(self._done, b"1")
        except OSError:
            pass
        finally:
            os.close(self._done)
            try:
                os.waitpid(self._pid, 0)
            except ChildProcessError:  # (reaped elsewhere)
                pass


def _close_all_but(*keep: int) -> None:
    """Close every descriptor above 2 except ``keep`` (the guard holds no other lock)."""
    limit = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, min(limit, 1 << 16))


def _retire(fd: int, page_size: int | None) -> None:
    """Make the replaced bolt file unopenable before its lock is released.

    containerd opens meta.db by path and then waits for the flock without a time limit
    (``io.containerd.timeout.bolt.open`` is 0). A containerd started during this write holds
    the *old* inode open and would get its lock when this process exits, then run on the
    metadata as it was before: its GC would delete every blob and snapshot this write added.
    Zeroing both meta pages of the old inode (which no name points to any more) makes that
    bbolt ``Open`` fail with "invalid database" instead; a restart then opens the new file.
    """
    try:
        if os.fstat(fd).st_nlink != 0:
            return  # still named (not replaced): nothing to retire
        size = page_size or 4096
        os.pwrite(fd, bytes(size), 0)
        os.pwrite(fd, bytes(size), size)
        os.fsync(fd)
    except OSError:
        pass  # the new file is committed either way; this only guards a racing daemon
