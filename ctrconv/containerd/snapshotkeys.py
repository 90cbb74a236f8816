"""What a snapshotter's key says of the meta.db that made it.

containerd's metadata layer names each snapshot in the snapshotter's own database
``<namespace>/<seq>/<key>``, ``seq`` taken with ``NextSequence`` from meta.db's
``v1/<namespace>/snapshots/<snapshotter>`` bucket in the same transaction (``createSnapshot``,
``Commit``). Bolt sequences only grow, so every key a meta.db issued carries a number at or
below that bucket's sequence; garbage collection removes snapshots, never numbers. A key above
it was issued by a newer meta.db than the one on disk: one put back from an older copy (or a
crash between the snapshotter's commit and meta.db's, which leaves the one snapshot it was
preparing). Its records (a container's writable layer, an image unpacked since) are unknown
to this meta.db, and containerd's next garbage collection deletes them with their files.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, TypeVar

from ctrconv.containerd.records import BackendSnapshot, backend_name_seq
from ctrconv.containerd.root import holds_entries

S = TypeVar("S", bound=BackendSnapshot)


def issued_as(backend_key: str) -> tuple[str, int] | None:
    """(namespace, meta.db sequence) of a backend key ``ns/<seq>/<key>``; None for another shape."""
    number = backend_name_seq(backend_key)
    return None if number is None else (backend_key.split("/", 1)[0], number)


def issued_after(snapshots: Iterable[S], meta_sequence: Callable[[str], int], known: set[str]) -> Iterator[S]:
    """The backend snapshots no meta.db record names (``known``: the backend keys meta.db's records
    name) whose number is above what meta.db issued in their namespace (``meta_sequence(ns)``:
    that bucket's sequence, 0 when meta.db has no such bucket)."""
    sequences: dict[str, int] = {}
    for snapshot in snapshots:
        if snapshot.key in known:
            continue
        issued = issued_as(snapshot.key)
        if issued is None:
            continue
        namespace, number = issued
        if namespace not in sequences:
            sequences[namespace] = meta_sequence(namespace)
        if number > sequences[namespace]:
            yield snapshot


def holds_work(kind: str, fs: "os.PathLike[str] | None") -> bool:
    """Whether a snapshot meta.db never issued holds what was made since: files (a container's
    writable layer), or a committed tree with its directory (a layer unpacked since). One without
    files is what a write stopped between the snapshotter's commit and meta.db's leaves (a
    snapshot being prepared; ctrconv's own import killed between its renames): GC's."""
    return holds_entries(fs) or (kind == "committed" and fs is not None and os.path.isdir(fs))
