"""What an in-place rebuild learnt of the damage, kept in the root until it has finished.

An in-place rebuild is not one commit: it writes the salvaged meta.db and snapshotter dbs, then
re-imports what must be unpacked again and links containers' snapshots back. Killed in between,
it leaves bolt files that read whole, and a re-run could no longer tell that records had been
lost: it called the root healthy or repaired less (an image re-derived but not unpacked, blobs
of a lost namespace left without records for the GC to take: a red-team kill -9 run).

So before its first write the rebuild records, in ``<root>/ctrconv-rebuild.json``, the meta.db
bucket paths the damage made unreadable (or that the whole tree was, when no meta page gave
it). A rebuild that finds the file takes the root as damaged there whatever its files now read
like, and the file goes once a rebuild has finished and synced. containerd ignores a file it
does not know in its root.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ctrconv.containerd.root import REBUILD_JOURNAL
from ctrconv.streams import fsync_dir

JOURNAL = REBUILD_JOURNAL

#: a lost path: meta.db bucket names from the root down (``()``: the whole tree)
LostPath = tuple[bytes, ...]


def read(root: Path) -> set[LostPath] | None:
    """The lost paths an interrupted rebuild of ``root`` recorded; None when none was."""
    try:
        doc = json.loads((root / JOURNAL).read_text())
        return {tuple(bytes.fromhex(part) for part in path) for path in doc["lost"]}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return {()}  # a journal that does not read: assume the worst, everything may be lost


def write(root: Path, lost: set[LostPath], stamp: str) -> None:
    """Record ``lost`` durably before the rebuild's first write (temp file, fsync, rename)."""
    doc = {"stamp": stamp, "lost": sorted([part.hex() for part in path] for path in lost)}
    tmp = root / f".{JOURNAL}.tmp"
    with open(tmp, "w") as out:
        json.dump(doc, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, root / JOURNAL)
    fsync_dir(root)


def clear(root: Path) -> None:
    """The rebuild has finished and its writes are synced: nothing is left to take up."""
    try:
        os.unlink(root / JOURNAL)
    except FileNotFoundError:
        return
    fsync_dir(root)


__all__: list[str] = ["JOURNAL", "clear", "read", "write"]
