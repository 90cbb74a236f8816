"""Apply one layer tar stream to a snapshot directory the way containerd does.

This mirrors containerd's ``archive.Apply`` (``applyNaive`` + ``createTarFile``), with
``OverlayConvertWhiteout`` and ``WithParents`` in overlay mode (docs/containerd-store.md §5):

* ``mode="overlay"``: the directory is an overlayfs upper dir. Whiteouts become char 0/0
  devices owned by the entry's uid/gid, opaque markers set ``trusted.overlay.opaque=y``, missing
  parent directories copy mode, owner, times and non-``trusted.*`` xattrs from the nearest lower
  directory (``lowers`` = parent snapshots' ``fs`` dirs, nearest first), and hardlinks can only
  point at files of this layer.
* ``mode="naive"``: the directory holds the whole root filesystem (native snapshotter, and the
  first overlay layer, which containerd applies through a bind mount): ``.wh.x`` deletes ``x``,
  ``.wh..wh..opq`` deletes everything under its directory not unpacked from this layer.
  :func:`effective_mode` turns ``"overlay"`` without lowers into ``"naive"``, as containerd does.

The stream is read once, strictly in order, by :class:`~ctrconv.layers.tarread.TarReader`
(not ``tarfile``: its header parsing and buffer copies were most of the unpack's Python CPU),
and file data is written straight from the inflated chunks. Entries the kernel already creates
owned as asked get no ``chown`` (see ``_Applier._owned``). Every byte is hashed, including bytes after the tar end (they are drained), so the result's ``diff_id`` can be
compared with the image config.

Each file of 1 MiB or more gets its writeback started once its data is written
(:class:`~ctrconv.writeback.FileWriteback`: ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` on a helper
thread), so the disk writes the big files while the rest of the layer is created: the final
``syncfs`` of an import waited 0.38-0.48 s for this layer's data before, 0.005-0.10 s after
(``bench_registry``'s 570 MB layer). Durability is unchanged: the call only starts writes and
waits for nothing; what makes the tree durable is still the ``syncfs`` of its filesystem that
the caller runs before any record points at it (:mod:`ctrconv.durability`), which writes every
dirty page and inode, started early or not. The target should be a fresh directory the caller discards on
error: a failed apply leaves it half written, like containerd's.

Deliberate differences from containerd, all refusing hostile input it would silently confine:
names or hardlink targets whose ``..`` climbs above the root raise :class:`UnsafePathError`
(containerd maps them onto the root). ``trusted.*`` xattrs from the archive are skipped, as
containerd does; ``user.*`` xattrs refused on special files and unsupported xattrs are skipped
(containerd 2.x behaviour). Hardlink entries get their mode applied (2.x; 1.6 only did so when the
link name happened to exist relative to the daemon's working directory - the header normally
carries the same mode anyway).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, Sequence

from ctrconv.errors import CtrconvError, DigestMismatchError, FormatError, NoSpaceError, UnsafePathError, UsageError
from ctrconv.layers.chain import HashingReader
from ctrconv.layers.compression import open_layer
from ctrconv.layers.paths import Parts, clean_name, hardlink_target, host_path, resolve
from ctrconv.layers.tarheader import device_number, entry_times
from ctrconv.writeback import FileWriteback
from ctrconv.layers.tarread import (AREGTYPE, owner_id, BLKTYPE, CHRTYPE, DIRTYPE, FIFOTYPE, LNKTYPE, REGTYPE,
                                     SYMTYPE, TarEntry, TarReader)

Mode = Literal["overlay", "naive"]

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
PAX_XATTR = "SCHILY.xattr."
#: a directory's default ACL, not the umask, decides the mode of files created in it
_DEFAULT_ACL = PAX_XATTR + "system.posix_acl_default"

_REGULAR = (REGTYPE, AREGTYPE)
_DEVICES = {CHRTYPE: stat.S_IFCHR, BLKTYPE: stat.S_IFBLK, FIFOTYPE: stat.S_IFIFO}
_KNOWN = frozenset((*_REGULAR, DIRTYPE, SYMTYPE, LNKTYPE, *_DEVICES))
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class ApplyResult:
    """What one apply produced: the diff ID to check against the config, and some counts."""

    diff_id: str
    #: uncompressed bytes read, trailing bytes included
    bytes: int
    #: tar entries processed (including ignored root entries and whiteouts)
    entries: int
    #: the mode actually used (see :func:`effective_mode`)
    mode: Mode
    #: with ``defer_parents``: parent directories this layer created whose attributes are still
    #: to be copied from the lowers (:func:`finish_deferred_parents`), parents first
    deferred_parents: tuple["DeferredParent", ...] = ()


class DeferredParent(NamedTuple):
    """A parent directory a deferred apply created, still owed its lower's attributes."""

    parts: Parts
    #: False when the layer unpacked the directory itself later: its entry set owner, mode and
    #: times, and only the lower's xattrs remain to copy up (never overwriting the entry's)
    attributes: bool


def effective_mode(mode: Mode, lowers: Sequence[object]) -> Mode:
    """containerd's rule: an overlay layer without parents is applied naively (bind mount)."""
    if mode not in ("overlay", "naive"):
        raise UsageError(f"unknown apply mode {mode!r} (overlay or naive)")
    return "naive" if mode == "overlay" and not lowers else mode


def apply_layer(
    stream: Readable,
    target_dir: str | os.PathLike[str],
    *,
    mode: Mode,
    lowers: Sequence[str | os.PathLike[str]] = (),
    expected_diff_id: str | None = None,
    defer_parents: bool = False,
) -> ApplyResult:
    """Apply an *uncompressed* layer tar stream to ``target_dir`` (an existing directory).

    Args:
        stream: the tar bytes (see :func:`unpack_layer` for compressed blobs).
        target_dir: overlay ``fs`` upper dir, or the native snapshot dir.
        mode: ``"overlay"`` or ``"naive"``; overlay without ``lowers`` runs naive.
        lowers: parent snapshots' ``fs`` dirs, nearest first (overlay mkparent copy-up).
        expected_diff_id: when given, a different stream digest raises after applying.
        defer_parents: overlay mode without reading ``lowers`` (they may still be unpacking, in
            parallel): missing parent directories are created and listed in the result, and
            :func:`finish_deferred_parents` copies their attributes once the lowers are complete.

    Raises:
        FormatError: corrupt or unsupported tar input; UnsafePathError for escaping names.
        DigestMismatchError: the stream does not hash to ``expected_diff_id``.
        CtrconvError: a filesystem operation failed.
    """
    root = os.path.abspath(os.fspath(target_dir))
    if root == "/" or not os.path.isdir(root) or os.path.islink(root):
        raise UsageError(f"layer target {root!r} must be an existing directory other than /")
    used = effective_mode(mode, lowers)
    reader = HashingReader(stream)
    applier = _Applier(root, used, [os.path.abspath(os.fspath(p)) for p in lowers], defer_parents)
    try:
        entries = applier.run(reader)
    except BaseException:
        applier.writeback.close()
        raise
    applier.writeback.close(finish=True)
    reader.drain()
    result = ApplyResult(reader.digest, reader.bytes_read, entries, used, applier.pending_parents())
    if expected_diff_id is not None and result.diff_id != expected_diff_id:
        raise DigestMismatchError(
            f"wrong diff id calculated on extraction: {result.diff_id}, expected {expected_diff_id}"
        )
    return result


def unpack_layer(
    blob: Readable,
    target_dir: str | os.PathLike[str],
    *,
    mode: Mode,
    media_type: str | None = None,
    lowers: Sequence[str | os.PathLike[str]] = (),
    expected_diff_id: str | None = None,
    strict: bool = False,
    external: bool | None = False,
    max_bytes: int | None = None,
    defer_parents: bool = False,
) -> ApplyResult:
    """Decompress a layer blob (see :func:`~ctrconv.layers.compression.open_layer`) and apply it."""
    with open_layer(blob, media_type, strict=strict, external=external, max_bytes=max_bytes) as tar:
        return apply_layer(tar, target_dir, mode=mode, lowers=lowers,
                           expected_diff_id=expected_diff_id, defer_parents=defer_parents)


def finish_deferred_parents(
    target_dir: str | os.PathLike[str],
    deferred: Sequence[DeferredParent],
    lowers: Sequence[str | os.PathLike[str]],
) -> bool:
    """Give parent directories created by a deferred apply what an in-order apply gives them.

    ``lowers`` must now be complete. Owner, mode and non-``trusted.*`` xattrs come from the
    nearest lower that has the path, and the access time. The modification time is the
    lower's unless the apply created entries in the directory (in an in-order apply creating
    them after the copy moves it; an opaque marker is an xattr and moves nothing). A directory
    no lower has takes its parent's group when that parent is setgid, as the kernel gives it
    in an in-order apply. A directory the layer replaced later is skipped; one it unpacked
    itself gets the xattrs only.

    Returns False when the result cannot equal an in-order apply: a lower's default ACL was
    copied onto a directory the apply had already filled, whose entries the kernel would have
    given inherited ACLs. The caller then applies the layer again, in order.
    """
    root = os.path.abspath(os.fspath(target_dir))
    lower_roots = [os.path.abspath(os.fspath(p)) for p in lowers]
    faithful = True
    for parts, attributes in deferred:
        path = host_path(root, parts)
        try:
            own = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(own.st_mode):
            continue
        try:
            filled = _has_entries(path)
            lower = _nearest_lower(lower_roots, parts)
            if lower is None:
                if attributes:
                    _inherit_setgid_group(path, own)
                continue
            lower_path, lst = lower
            if attributes:
                _copy_dir_info(lst, path, mtime_ns=own.st_mtime_ns if filled else None)
            if filled and _DEFAULT_ACL[len(PAX_XATTR):] in _copy_up_xattrs(path, lower_path):
                faithful = False
        except OSError as exc:
            raise CtrconvError(f"cannot copy attributes of {'/'.join(parts)!r} from a lower layer: {exc}") from exc
    return faithful


def _has_entries(path: str) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is not None


def _inherit_setgid_group(path: str, own: os.stat_result) -> None:
    """The group ``mkdir`` gives a directory under a setgid parent (its mode is then set
    explicitly, which drops the inherited setgid bit, as containerd's ``mkdir`` does)."""
    parent = os.lstat(os.path.dirname(path))
    if parent.st_mode & stat.S_ISGID and own.st_gid != parent.st_gid:
        os.chown(path, -1, parent.st_gid, follow_symlinks=False)


def _nearest_lower(lowers: Sequence[str], parts: Parts) -> tuple[str, os.stat_result] | None:
    """containerd ``mkparent``: the first lower holding the path decides; None unless a directory."""
    for lower in lowers:
        lower_path = host_path(lower, resolve(lower, parts))
        try:
            lst = os.lstat(lower_path)
        except FileNotFoundError:
            continue
        return (lower_path, lst) if stat.S_ISDIR(lst.st_mode) else None
    return None


#: files larger than this are checked against the free space first (sparse bombs, lying sizes)
_CHECK_SPACE_ABOVE = 64 << 20


def _remove_all(path: str) -> None:
    """``os.RemoveAll``: no error if missing, never follows a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _Applier:
    """State of one apply: unpacked paths (for opaque dirs) and directories whose times are due."""

    def __init__(self, root: str, mode: Mode, lowers: list[str], defer_parents: bool = False) -> None:
        self.root = root
        self.mode = mode
        self.lowers = lowers
        self.defer_parents = defer_parents and mode == "overlay"
        self.created_parents: list[Parts] = []
        self.unpacked: set[str] = set()
        self.opaque_done: set[str] = set()
        self.dirs: list[tuple[Parts, TarEntry]] = []
        self._parents: dict[Parts, Parts] = {}  # entry parent -> resolved existing directory
        # files are created with their final mode (no fchmod) while only the umask can change
        # it: the target started empty and no directory of it has a default ACL
        self._umask = _fresh_tree_umask(root)
        # Owner a new entry gets from the kernel: our uid, and our gid in a directory with our
        # gid and no setgid bit (also on ``grpid`` mounts, where it takes the directory's).
        # Entries wanting exactly that skip their chown (most layers are root-owned).
        self._ids = (os.geteuid(), os.getegid())
        #: resolved directories known to hand new children ``self._ids``' group
        self._plain: set[Parts] = set()
        self._root_plain = _hands_down_gid(root, self._ids[1])
        self._forget()
        self._owned = False  # the current entry is created owned as it asks (no chown)
        #: large files' writeback is started as soon as their data is in (see the docstring)
        self.writeback = FileWriteback()

    def _forget(self) -> None:
        """Drop what is known about the tree's directories: something was removed, which can
        re-route lookups or let a path come back with other attributes."""
        self._parents.clear()
        self._plain.clear()
        if self._root_plain:
            self._plain.add(())

    def run(self, reader: HashingReader) -> int:
        tar = TarReader(reader)
        count = 0
        try:
            while (member := tar.next()) is not None:
                count += 1
                self._entry(tar, member)
            tar.check_end()
        except (ValueError, OverflowError) as exc:
            # ids beyond 32 bits, NUL bytes in link targets
            raise FormatError(f"corrupt layer tar stream: {exc}") from None
        self._dir_times()
        return count

    def _entry(self, tar: TarReader, member: TarEntry) -> None:
        parts = clean_name(member.name)
        if not parts:
            return  # "./": containerd keeps the snapshot root as created
        try:
            parent = self._parent(parts[:-1])
            base = parts[-1]
            if base.startswith(WHITEOUT_PREFIX):
                self._forget()  # deletions may remove or reveal directories
                self._whiteout(member, parent, base)
                return
            if member.type not in _KNOWN:
                raise FormatError(
                    f"tar entry {member.name!r} has unsupported type {member.type!r}"
                )
            if member.old_gnu_sparse:
                # Go's archive/tar reads it but keeps its type, which containerd's unpacker
                # refuses ("unhandled tar header type 83"): a snapshot containerd cannot make
                raise FormatError(f"tar entry {member.name!r} is an old GNU sparse file (type 'S'), which containerd "
                                  "does not unpack (PAX sparse files it does)")
            path = host_path(self.root, (*parent, base))
            is_dir = member.type == DIRTYPE
            if _DEFAULT_ACL in member.pax_headers:
                self._umask = None
            if member.type == SYMTYPE:
                # a new symlink can redirect later lookups (resolved directories stay as they are)
                self._parents.clear()
            # the owner containerd's Lchown gives the kernel: 32 bits of Go's int (2^32 is root)
            member.uid, member.gid = owner_id(member.uid), owner_id(member.gid)
            self._owned = (member.uid, member.gid) == self._ids and parent in self._plain
            self._create(tar, member, path)
            if is_dir:
                self._note_dir((*parent, base), member)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpaceError(f"cannot apply layer entry {member.name!r}: {exc}") from exc
            raise CtrconvError(f"cannot apply layer entry {member.name!r}: {exc}") from exc
        if is_dir:
            self.dirs.append((parts, member))
        self.unpacked.add(path)

    def _note_dir(self, parts: Parts, member: TarEntry) -> None:
        """Remember whether a directory this entry just set up hands down our group."""
        if member.gid == self._ids[1] and not member.mode & stat.S_ISGID:
            self._plain.add(parts)
        else:
            self._plain.discard(parts)

    # -- parents ---------------------------------------------------------------------------

    def _parent(self, parts: Parts) -> Parts:
        """Resolved, existing parent directory of an entry (memoised; most entries share
        parents, and resolving costs one lstat per level). The memo is dropped whenever an
        entry removes a path or creates a symlink, the only changes that can re-route it."""
        parent = self._parents.get(parts)
        if parent is None:
            parent = self._extend(parts) if parts else None
            if parent is None:
                parent = resolve(self.root, parts)
                if parent:
                    self._mkparent(parent)
            self._parents[parts] = parent
        return parent

    def _extend(self, parts: Parts) -> Parts | None:
        """``parts`` resolved from its memoised parent: one ``lstat`` of the last component
        instead of one per level. ``None`` (resolve it all) unless that parent is memoised
        and the last component is an existing directory; a symlink, anything else or a
        missing name takes the full path, so every rule of :func:`resolve` still applies."""
        prefix = self._parents.get(parts[:-1])
        if prefix is None:
            return None
        candidate = (*prefix, parts[-1])
        try:
            st = os.lstat(host_path(self.root, candidate))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return candidate if stat.S_ISDIR(st.st_mode) else None

    def _mkparent(self, parts: Parts) -> None:
        """Create missing parent dirs; in overlay mode copy attributes from the nearest lower."""
        path = host_path(self.root, parts)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode):
                return
            raise FormatError(f"layer needs {'/'.join(parts)!r} to be a directory")
        if len(parts) > 1:
            self._mkparent(parts[:-1])
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)
        if self.defer_parents:
            self.created_parents.append(parts)
            return
        lower = _nearest_lower(self.lowers, parts)
        if lower is not None:
            _copy_dir_info(lower[1], path)
            if _DEFAULT_ACL[len(PAX_XATTR):] in _copy_up_xattrs(path, lower[0]):
                self._umask = None

    def pending_parents(self) -> tuple[DeferredParent, ...]:
        """The deferred parents, each marked by whether a later tar entry of its own set it."""
        return tuple(DeferredParent(p, host_path(self.root, p) not in self.unpacked)
                     for p in self.created_parents)

    # -- whiteouts -------------------------------------------------------------------------

    def _whiteout(self, member: TarEntry, parent: Parts, base: str) -> None:
        directory = host_path(self.root, parent)
        if base == WHITEOUT_OPAQUE:
            if self.mode == "overlay":
                os.setxattr(directory, OPAQUE_XATTR, b"y")
            else:
                self._opaque(directory)
            return
        original = base[len(WHITEOUT_PREFIX):]
        if original in ("", ".", ".."):
            raise UnsafePathError(f"invalid whiteout name {member.name!r}")
        target = directory + "/" + original
        if self.mode == "naive":
            _remove_all(target)
            return
        try:
            os.mknod(target, stat.S_IFCHR, 0)
        except FileExistsError:
            raise FormatError(
                f"whiteout {member.name!r} names a path this layer already created"
            ) from None
        os.chown(target, member.uid, member.gid, follow_symlinks=False)

    def _opaque(self, directory: str) -> None:
        """Naive opaque dir: delete everything below that this layer did not unpack."""
        if directory in self.opaque_done:
            return
        self.opaque_done.add(directory)
        os.lstat(directory)
        stack = [directory]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as it:
                    children = list(it)
            except FileNotFoundError:
                continue
            for child in children:
                path = current + "/" + child.name
                if path not in self.unpacked:
                    _remove_all(path)
                elif child.is_dir(follow_symlinks=False):
                    stack.append(path)

    # -- entries ---------------------------------------------------------------------------

    def _create(self, tar: TarReader, member: TarEntry, path: str) -> None:
        """Create the entry at ``path``, replacing what is there (a directory entry merges into
        an existing directory). Creation is tried first and the path looked at only when it
        exists: one ``lstat`` less per entry of a fresh layer."""
        try:
            self._make(tar, member, path, merge=False)
        except FileExistsError:
            if member.type == DIRTYPE and stat.S_ISDIR(os.lstat(path).st_mode):
                self._make(tar, member, path, merge=True)
                return
            self._forget()  # a directory or symlink on the way may be going
            _remove_all(path)
            self._make(tar, member, path, merge=False)

    def _make(self, tar: TarReader, member: TarEntry, path: str, merge: bool) -> None:
        """Create one entry (raises FileExistsError before touching anything if ``path`` exists,
        unless ``merge``) and give it owner, xattrs, mode and times."""
        kind = member.type
        if kind in _REGULAR:
            self._write_file(tar, member, path)
            return
        symlink = False
        if kind == DIRTYPE:
            if not merge:
                os.mkdir(path, 0o700)  # chmod below: a setgid parent would add S_ISGID
        elif kind == SYMTYPE:
            os.symlink(member.linkname, path)
            symlink = True
        elif kind == LNKTYPE:
            target = hardlink_target(self.root, member.linkname)
            try:
                os.link(target, path, follow_symlinks=False)
            except FileNotFoundError:
                where = "this layer" if self.mode == "overlay" else "the snapshot"
                raise FormatError(
                    f"hardlink {member.name!r} -> {member.linkname!r}: target is not in {where}"
                ) from None
            except (PermissionError, IsADirectoryError):
                raise FormatError(
                    f"hardlink {member.name!r} -> {member.linkname!r}: target is a directory"
                ) from None
            symlink = stat.S_ISLNK(os.lstat(path).st_mode)
        else:
            os.mknod(path, (member.mode & 0o7777) | _DEVICES[kind], device_number(member))
        if merge or kind == LNKTYPE or not self._owned:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        self._xattrs(member, path, stat.S_IFDIR if kind == DIRTYPE else 0)
        if not symlink:
            os.chmod(path, member.mode & 0o7777)
        os.utime(path, ns=entry_times(member), follow_symlinks=False)

    def _write_file(self, tar: TarReader, member: TarEntry, path: str) -> None:
        """A regular file: created exclusively (never through a symlink or over anything),
        with its final permissions when the umask keeps them (no ``fchmod`` then)."""
        if member.size > _CHECK_SPACE_ABOVE:
            free = os.statvfs(os.path.dirname(path))
            available = free.f_bavail * free.f_frsize
            if member.size > available:
                raise NoSpaceError(
                    f"layer entry {member.name!r} needs {member.size} bytes but only {available} are free"
                )
        mode = member.mode & 0o7777
        # chown clears set-id bits, and the umask may clear others: those get an fchmod
        final = self._umask is not None and not mode & (0o7000 | self._umask)
        fd = os.open(path, _WRITE_FLAGS, mode if final else 0o600)
        try:
            if member.sparse is not None:
                tar.write_sparse(fd, member)
            else:
                tar.write_data(fd)
            self.writeback.written(fd, member.size)
            if not self._owned:
                os.chown(fd, member.uid, member.gid)
            # an access ACL set among the xattrs sets the group bits from its mask: containerd's
            # chmod after the xattrs (createTarFile) sets the mask back from the mode, and so
            # does this one (skipped, a 0640 file with "mask::rw-" came out 0660: a red-team run)
            if self._xattrs(member, fd, stat.S_IFREG) or not final:
                os.chmod(fd, mode)
            os.utime(fd, ns=entry_times(member))
        finally:
            os.close(fd)

    @staticmethod
    def _xattrs(member: TarEntry, target: str | int, kind: int) -> bool:
        """Set the entry's extended attributes; whether any was set."""
        applied = False
        for key, value in member.pax_headers.items():
            if not key.startswith(PAX_XATTR):
                continue
            name = key[len(PAX_XATTR):]
            if name.startswith("trusted."):
                continue  # containerd refuses admin attributes from archives
            data = value.encode("utf-8", "surrogateescape")
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, data)
                else:
                    os.setxattr(target, name, data, follow_symlinks=False)
            except OSError as exc:
                if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    continue
                if exc.errno == errno.EPERM and name.startswith("user.") and not kind:
                    continue
                raise
            applied = True
        return applied

    def _dir_times(self) -> None:
        """Directory times last, so creating children does not disturb them."""
        for parts, member in self.dirs:
            # the memo holds a directory's resolved path while nothing re-routed it
            resolved = self._parents.get(parts)
            path = host_path(self.root, resolve(self.root, parts) if resolved is None else resolved)
            try:
                os.utime(path, ns=entry_times(member), follow_symlinks=False)
            except FileNotFoundError:
                raise FormatError(
                    f"directory {member.name!r} was removed later in the same layer"
                ) from None


def _hands_down_gid(path: str, gid: int) -> bool:
    """Whether a directory gives new children the group ``gid``: it has that group and no
    setgid bit."""
    st = os.lstat(path)
    return st.st_gid == gid and not st.st_mode & stat.S_ISGID


def _fresh_tree_umask(root: str) -> int | None:
    """The umask if it alone decides the mode of files created under ``root``: ``root`` is
    empty and has no default ACL (inherited ones included). ``None`` otherwise, or when the
    umask cannot be read without changing it (``/proc/self/status``; other threads may create
    files meanwhile)."""
    with os.scandir(root) as it:
        if next(it, None) is not None:
            return None
    try:
        if _DEFAULT_ACL[len(PAX_XATTR):] in os.listxattr(root):
            return None
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _copy_dir_info(st: os.stat_result, path: str, *, mtime_ns: int | None = None) -> None:
    """containerd ``copyDirInfo``: owner, mode (incl. setuid/sticky) and times of a lower dir
    (``mtime_ns`` replaces the lower's modification time)."""
    try:
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    except PermissionError:
        own = os.lstat(path)
        if (own.st_uid, own.st_gid) != (st.st_uid, st.st_gid):
            raise
    os.chmod(path, stat.S_IMODE(st.st_mode))
    mtime = st.st_mtime_ns if mtime_ns is None else mtime_ns
    os.utime(path, ns=(st.st_atime_ns, mtime), follow_symlinks=False)


def _copy_up_xattrs(dst: str, src: str) -> list[str]:
    """containerd ``copyUpXAttrs``: every xattr except ``trusted.*``, never overwriting.
    Returns the names ``src`` has."""
    skip = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA)
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in skip:
            return []
        raise
    for name in names:
        if name.startswith("trusted."):
            continue
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, os.XATTR_CREATE, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (*skip, errno.EEXIST):
                continue
            raise
    return names


