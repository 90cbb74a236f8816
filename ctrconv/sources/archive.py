"""One pass over a seekable tar file: a member index by cleaned name, read later by offset.

This is the archive namespace ``ctr images import`` sees (``images/archive/importer.go``
``ImportIndex``), with its hostile corners closed:

* names are cleaned like Go's ``path.Clean``; a regular file or symlink whose cleaned name is
  absolute or climbs out (``../x``) makes the whole archive a :class:`UnsafePathError`
  (ctr would store it under that odd name, where nothing can refer to it);
* symlinks point at ``path.Join(path.Dir(name), linkname)`` exactly as in ctr (so an absolute
  ``linkname`` stays inside the archive); a target that climbs out, or a chain that loops or is
  longer than :data:`MAX_LINK_HOPS`, is refused when the archive is opened; a dangling symlink is
  only an error when something is looked up through it;
* directories, hard links, devices and FIFOs are ignored, as ctr ignores them;
* a name that occurs more than once: the **last** entry wins (ctr overwrites its map the same
  way, and so does ``tar -x``), whether it is a file or a symlink;
* GNU sparse members are refused (their data is not one contiguous range);
* truncation (a member whose data runs past the end of the file, a partial header) and garbage
  where a header should be are :class:`FormatError`. A file that is not a tar at all is a
  :class:`UsageError` "unrecognized image format".

Member data is never read during the scan: ``tarfile`` seeks over it and records
``offset_data``; blobs are later streamed with ``pread`` through :class:`RangeReader`.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from ctrconv.errors import FormatError, UnsafePathError, UsageError
from ctrconv.sources.base import Locator, RangeReader

#: Longest symlink chain followed (Linux's own limit for path resolution).
MAX_LINK_HOPS = 40
#: Largest PAX / GNU long-name record read (Go's archive/tar limit); ``tarfile`` would otherwise
#: allocate whatever size such a header claims (8 GiB from a 10 KiB file).
MAX_SPECIAL = 1 << 20
_BLOCK = 512
_SPECIAL_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                  tarfile.GNUTYPE_LONGLINK, tarfile.SOLARIS_XHDTYPE)
#: what ``tarfile`` raises on hostile headers besides TarError (bad PAX numbers, huge sizes)
_TAR_ERRORS = (tarfile.TarError, EOFError, UnicodeError, ValueError, OverflowError)


def go_clean(name: str) -> str:
    """Go ``path.Clean``: drop ``.``/empty components, fold ``..``; ``""`` becomes ``"."``."""
    rooted = name.startswith("/")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(comp)
    body = "/".join(parts)
    if rooted:
        return "/" + body
    return body or "."


def escapes(clean_name: str) -> bool:
    """True for a cleaned name outside the archive root (absolute, ``..`` or ``../...``)."""
    return clean_name.startswith("/") or clean_name == ".." or clean_name.startswith("../")


def go_join_dir(name: str, linkname: str) -> str:
    """ctr's symlink target: ``path.Join(path.Dir(name), linkname)``."""
    parent = go_clean(name).rpartition("/")[0] or "."
    return go_clean(f"{parent}/{linkname}") if linkname else go_clean(parent)


class _BoundedInfo(tarfile.TarInfo):
    """TarInfo refusing extended headers larger than :data:`MAX_SPECIAL` before they are read."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> "_BoundedInfo":
        obj = super().frombuf(buf, encoding, errors)
        if obj.type in _SPECIAL_TYPES and obj.size > MAX_SPECIAL:
            # a ValueError: turned into FormatError (with the archive's name) by ``_scan``
            raise ValueError(f"extended header of {obj.size} bytes is too large")
        return obj  # type: ignore[return-value]


@dataclass(frozen=True)
class TarMember:
    """A regular file of the archive: cleaned ``name``, data ``offset`` and ``size``."""

    name: str
    offset: int
    size: int


class NotATarError(UsageError):
    """The input is not a tar archive at all (exit 2, "unrecognized image format")."""


class TarArchive:
    """The member index of one seekable tar file. Owns ``file`` and closes it in :meth:`close`."""

    def __init__(self, file: BinaryIO, *, what: str = "archive") -> None:
        self.what = what
        self._file = file
        self._fd = file.fileno()
        self.members: dict[str, TarMember] = {}
        #: symlink name -> joined, cleaned target (ctr's ``symlinks`` map)
        self.symlinks: dict[str, str] = {}
        try:
            self._scan()
            self._check_links()
        except BaseException:
            file.close()
            raise

    # -- scanning ------------------------------------------------------------------------------

    def _scan(self) -> None:
        file_size = os.fstat(self._fd).st_size
        self._file.seek(0)
        try:
            tf = tarfile.open(fileobj=self._file, mode="r:", tarinfo=_BoundedInfo)
        except tarfile.ReadError as exc:
            raise NotATarError(
                f"{self.what}: unrecognized image format (not a tar archive: {exc})"
            ) from None
        except _TAR_ERRORS as exc:  # a tar whose first member's PAX records are invalid
            raise FormatError(f"{self.what}: corrupt tar: {exc}") from None
        try:
            while (info := tf.next()) is not None:
                self._add(info, file_size)
                tf.members.clear()  # tarfile would keep every TarInfo otherwise
        except _TAR_ERRORS as exc:
            raise FormatError(f"{self.what}: truncated or corrupt tar: {exc}") from None
        self._check_end(tf.offset, file_size)

    def _add(self, info: tarfile.TarInfo, file_size: int) -> None:
        # any member's data (a directory's, a device's too) is skipped by seeking past it: a size
        # that is negative (base-256 and PAX sizes can be) or runs past the end is damage, not a
        # seek for the next header to fail on (EINVAL beyond the file system's largest offset)
        if info.size < 0 or info.offset_data + info.size > file_size:
            raise FormatError(
                f"{self.what}: truncated or corrupt tar: entry {info.name[:200]!r} needs "
                f"{info.size} bytes at offset {info.offset_data}, file has {file_size}"
            )
        if not (info.isreg() or info.issym()):
            return  # directories, hard links, devices, FIFOs: ignored like ctr
        name = go_clean(info.name)
        if escapes(name) or name == ".":
            raise UnsafePathError(f"{self.what}: refusing tar entry {info.name[:200]!r}: unsafe path")
        if info.issym():
            target = go_join_dir(info.name, info.linkname)
            if escapes(target):
                raise UnsafePathError(
                    f"{self.what}: refusing symlink {info.name[:200]!r} -> "
                    f"{info.linkname[:200]!r}: it points outside the archive"
                )
            self.members.pop(name, None)
            self.symlinks[name] = target
            return
        if info.sparse is not None:
            raise FormatError(f"{self.what}: sparse tar entry {info.name[:200]!r} is not supported")
        self.symlinks.pop(name, None)
        self.members[name] = TarMember(name, info.offset_data, info.size)

    def _check_end(self, offset: int, file_size: int) -> None:
        """``tarfile`` stops silently at a damaged header; only zero blocks or EOF may follow."""
        block = os.pread(self._fd, _BLOCK, offset)
        if not block:
            return  # no end-of-archive blocks: Go's reader accepts that too
        if len(block) < _BLOCK:
            raise FormatError(f"{self.what}: truncated tar: partial header at offset {offset}")
        if block.count(0) != _BLOCK:
            raise FormatError(f"{self.what}: corrupt tar: invalid header at offset {offset}")

    def _check_links(self) -> None:
        for name in self.symlinks:
            self._follow(name)

    def _follow(self, name: str) -> str:
        """The final non-symlink name ``name`` leads to; loops and long chains are refused."""
        seen = []
        while name in self.symlinks:
            if name in seen or len(seen) >= MAX_LINK_HOPS:
                chain = " -> ".join([*seen, name])[:400]
                raise FormatError(f"{self.what}: symlink loop or chain too long: {chain}")
            seen.append(name)
            name = self.symlinks[name]
        return name

    # -- lookup and reading --------------------------------------------------------------------

    def resolve(self, name: str) -> TarMember | None:
        """The regular file at ``name`` (cleaned, symlinks followed), or None."""
        clean = go_clean(name)
        if escapes(clean):
            return None
        return self.members.get(self._follow(clean))

    def has(self, name: str) -> bool:
        return self.resolve(name) is not None

    def open_member(self, member: TarMember) -> RangeReader:
        """An independent stream over the member's data (unverified)."""
        return RangeReader(self._fd, member.offset, member.size)

    def read_member(self, member: TarMember, limit: int) -> bytes:
        """The whole member, for small documents only (``limit`` caps the size)."""
        if member.size > limit:
            raise FormatError(
                f"{self.what}: {member.name} is {member.size} bytes, more than the {limit} allowed"
            )
        with self.open_member(member) as stream:
            data = stream.read(member.size)
        if len(data) != member.size:
            raise FormatError(f"{self.what}: {member.name}: short read (file changed?)")
        return data

    # -- the file namespace interface shared with layout directories ----------------------

    def locate(self, name: str) -> Locator | None:
        member = self.resolve(name)
        if member is None:
            return None
        return Locator(member.size, lambda: self.open_member(member))

    def read_file(self, name: str, limit: int) -> bytes | None:
        member = self.resolve(name)
        return None if member is None else self.read_member(member, limit)

    def close(self) -> None:
        self._file.close()
