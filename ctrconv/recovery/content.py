"""Stage 2, check content: hash every blob once, quarantine (in place) or leave out (new root)
the corrupt ones; the good blobs' sizes are what the metadata stages keep records of."""

from __future__ import annotations

import fcntl
import os
from itertools import chain
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ctrconv.containerd.root import ContainerdRoot
from ctrconv.digest import Digest
from ctrconv.progress import Progress, Stage, stage
from ctrconv.recovery.report import RebuildReport
from ctrconv.streams import CHUNK
from ctrconv.verify.blobs import file_size, hashed_blobs

QUARANTINE = "ctrconv-quarantine"


@dataclass(frozen=True)
class KnownHash:
    """A blob hashed earlier in the same run (by ``verify``), valid while its file is unchanged."""

    actual: str | None
    size: int
    stat: tuple[int, int, int]


def stat_key(path: Path | str) -> tuple[int, int, int] | None:
    """(inode, size, mtime): a file with the same key was not rewritten in between."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


#: verify's problem kinds no rebuild mends: they do not make an in-place rebuild rewrite a root
NOT_REPAIRABLE = frozenset({"rootfs-mismatch"})


def verify_first(croot: ContainerdRoot, *, jobs: int | None, progress: Progress | None,
                 deep: bool) -> tuple[bool, dict[str, KnownHash], list[str]]:
    """(nothing to repair, the blob hashes verify took, the problems verify reports that no
    rebuild mends): ``verify`` (``deep`` compares snapshot trees too) finds no problem in any
    namespace but those (:data:`NOT_REPAIRABLE`). An image that lost its snapshots (to damage,
    or to a rebuild killed after writing meta.db) still names them in its config's GC label,
    which verify reports. Each hash is remembered with its file's identity, so the content
    check reads no blob twice."""
    from ctrconv.verify.root import verify_root

    if not croot.meta_db.is_file() or croot.is_locked():
        return False, {}, []
    before = {str(d): stat_key(p) for d, p in croot.content.walk()}
    hashes: dict[str, tuple[str | None, int]] = {}
    found = verify_root(croot.path, None, jobs=jobs, progress=progress, deep=deep, blob_hashes=hashes)
    # a malformed image (config and manifest disagree) is the image's, not damage a rewrite
    # mends: each in-place run wrote the root again, with a new backup, and verify still said so
    ok = all(p.kind in NOT_REPAIRABLE for p in found.errors)
    unmendable = [f"{p.kind}: {p.object}: {p.message}" for p in found.errors] if ok else []
    known = {d: KnownHash(actual, size, key) for d, (actual, size) in hashes.items() if (key := before.get(d)) is not None}
    return ok, known, unmendable


def check_content(
    croot: ContainerdRoot, target: ContainerdRoot, report: RebuildReport, *, in_place: bool, stamp: str,
    jobs: int | None = None, progress: Progress | None = None, link: bool = False,
    known: Mapping[str, KnownHash] | None = None,
) -> dict[str, int]:
    """Hash every blob once; quarantine (in place) or leave out (new root) corrupt ones.

    For a new root each blob is copied (a reflink where the filesystem offers one) with the
    hash computed while the bytes flow; with ``link`` it is hard-linked when the filesystems
    allow (then hashed in parallel). One read either way; in place, a blob ``known`` (hashed by
    the verify that found the damage, file unchanged since) is not read again. Returns the
    good blobs' sizes.

    The blobs are carried as digest texts (:meth:`~ctrconv.containerd.content.ContentStore.blob_digests`,
    :meth:`walk`'s blobs in its order), each one's ``Digest`` and paths made when it is
    hashed or copied: a ``(Digest, Path)`` pair held for each of 32,000 blobs was ~30 MiB of
    a rebuild's peak.
    """
    content = croot.content
    blobs = content.blob_digests()
    results: list[tuple[Digest, str | None, int]] = []
    copies: list[str] = []
    if in_place:
        known = known or {}
        to_hash = _reuse_known(croot, blobs, known)
        fresh = set(to_hash)
        results = [(Digest.parse(d), known[d].actual, known[d].size) for d in blobs if d not in fresh]
    else:
        to_hash, copies = _link_or_copy(croot, blobs, target, link)
    # the bar's total is known before the first byte: the bytes this stage will read
    total = sum(file_size(content.blob_file(d)) for d in chain(to_hash, copies))
    good: dict[str, int] = {}
    with stage(progress, "checking content", total) as step:
        results += hashed_blobs(((Digest.parse(d), content.blob_file(d)) for d in to_hash), jobs=jobs, stage=step)
        # each copy's verdict taken as it is made: 32,000 results kept until the last copy
        # (a digest's hex each) were ~6 MiB of a rebuild's peak
        copied = (_copy_hashing(digest, content.blob_file(digest), _blob_in(target, digest), step)
                  for digest in map(Digest.parse, copies))
        for digest, actual, size in chain(results, copied):
            if actual == digest.hex:
                good[str(digest)] = size
            else:
                _set_aside(croot, target, digest, actual, report, in_place=in_place, stamp=stamp)
    return good


def _blob_in(root: ContainerdRoot, digest: Digest) -> Path:
    """Where ``digest``'s blob file goes in ``root`` (made when it is copied: a ``Path`` each
    for 32,000 blobs held from the start was ~10 MiB of a rebuild's peak)."""
    return root.content_dir / "blobs" / digest.algorithm / digest.hex


def _reuse_known(croot: ContainerdRoot, blobs: list[str], known: Mapping[str, KnownHash]) -> list[str]:
    """The blobs still to hash: those not ``known``, or whose file changed since."""
    return [d for d in blobs if d not in known or known[d].stat != stat_key(croot.content.blob_file(d))]


def _link_or_copy(croot: ContainerdRoot, blobs: list[str], target: ContainerdRoot,
                  link: bool) -> tuple[list[str], list[str]]:
    """(blobs hard-linked into the new root, to hash; blobs to copy while hashing), and every
    algorithm's directory made in the new root."""
    for algorithm in sorted({d.partition(":")[0] for d in blobs}):
        (target.content_dir / "blobs" / algorithm).mkdir(parents=True, exist_ok=True)
    if not link:
        return [], list(blobs)
    to_hash: list[str] = []
    copies: list[str] = []
    for digest in blobs:
        try:
            os.link(croot.content.blob_file(digest), _blob_in(target, Digest.parse(digest)))
            to_hash.append(digest)
        except OSError:
            copies.append(digest)
    return to_hash, copies


def unused_path(dest: Path) -> Path:
    """``dest``, or ``dest.2``, ``dest.3``... when taken: what goes to the quarantine never
    replaces what an earlier run put there (a run re-run within the same second, after a kill,
    shares its stamp: moving a snapshot directory onto its namesake failed, "Directory not
    empty", after the commit point; a red-team run)."""
    candidate, n = dest, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = dest.with_name(f"{dest.name}.{n}")
    return candidate


def _set_aside(croot: ContainerdRoot, target: ContainerdRoot, digest: Digest, actual: str | None,
               report: RebuildReport, *, in_place: bool, stamp: str) -> None:
    """A corrupt blob: moved to the quarantine in place (a backup), left out of a new root."""
    reason = "unreadable" if actual is None else f"hashes to {digest.algorithm}:{actual}"
    report.corrupt_blobs.append({"digest": str(digest), "reason": reason})
    if in_place:
        dest = croot.path / QUARANTINE / stamp / digest.algorithm / digest.hex
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest = unused_path(dest)
        os.replace(croot.content.blob_path(digest), dest)
        report.backups.append(str(dest))
    else:
        (target.content_dir / "blobs" / digest.algorithm / digest.hex).unlink(missing_ok=True)


#: ioctl FICLONE (linux/fs.h): make ``dest`` share ``src``'s extents
_FICLONE = 0x40049409


def _reflink(src_fd: int, dest_fd: int) -> bool:
    """Clone the whole file where the filesystem can; False elsewhere (then it is copied)."""
    try:
        fcntl.ioctl(dest_fd, _FICLONE, src_fd)
    except OSError:
        return False
    return True


def _copy_hashing(digest: Digest, src: Path | str, dest: Path, step: Stage) -> tuple[Digest, str | None, int]:
    """Copy a blob into the new root (temp file, fsync, 0444, rename), hashing as it goes;
    a reflink (``FICLONE``: btrfs, XFS) shares the extents copy-on-write and only the hash
    reads the bytes."""
    h = digest.hasher()
    size = 0
    tmp = dest.with_name(f".{dest.name}.ctrconv-tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            cloned = _reflink(fin.fileno(), fout.fileno())
            while chunk := fin.read(CHUNK):
                h.update(chunk)
                if not cloned:
                    fout.write(chunk)
                size += len(chunk)
                step.advance(len(chunk))
            fout.flush()
            os.fsync(fout.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
    except OSError:
        tmp.unlink(missing_ok=True)
        return digest, None, size
    return digest, h.hexdigest(), size
