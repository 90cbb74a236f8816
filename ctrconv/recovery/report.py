"""What a rebuild found and did: the one record every stage appends to, and the CLI prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RebuildReport:
    root: str
    output: str
    salvage: dict[str, dict[str, Any]] = field(default_factory=dict)
    corrupt_blobs: list[dict[str, str]] = field(default_factory=list)
    dropped: list[dict[str, str]] = field(default_factory=list)
    images: list[dict[str, str]] = field(default_factory=list)
    snapshots_reused: int = 0
    snapshots_unpacked: int = 0
    #: of those, snapshots that had been removed (no record, none listing it as a child: ``ctr
    #: snapshots rm``, a pruning tool) and that containerd unpacks again on the image's first
    #: use: done, not damage
    snapshots_unpacked_removed: int = 0
    backups: list[str] = field(default_factory=list)
    #: what containerd itself would remove (unreferenced records, orphan directories): done, not damage
    cleaned: list[dict[str, str]] = field(default_factory=list)
    #: in place, the root verified clean first: nothing was written
    healthy: bool = False
    #: ``--regenerate-layers``: images whose lost layer blobs were written again from snapshots
    regenerated: list[dict[str, Any]] = field(default_factory=list)
    #: records a damaged meta.db lost, written again from what the root still holds
    restored: list[dict[str, str]] = field(default_factory=list)
    #: ``-o``: top-level entries the rebuild does not write, copied as they are (:mod:`~ctrconv.recovery.carry`)
    carried: list[str] = field(default_factory=list)
    #: in place, problems verify reports that no rebuild mends (a malformed image): the root
    #: was left as it is, with them
    not_repairable: list[str] = field(default_factory=list)

    def drop(self, kind: str, obj: str, reason: str) -> None:
        self.dropped.append({"kind": kind, "object": obj, "reason": reason})

    def clean(self, kind: str, obj: str, reason: str) -> None:
        self.cleaned.append({"kind": kind, "object": obj, "reason": reason})

    def restore(self, kind: str, obj: str, reason: str) -> None:
        self.restored.append({"kind": kind, "object": obj, "reason": reason})

    @property
    def damage_found(self) -> bool:
        """Anything repaired: salvage damage, corrupt blobs, dropped records, re-derived
        images or snapshots unpacked again (other than removed ones)."""
        return bool(
            any(info.get("damage") for info in self.salvage.values())
            or self.corrupt_blobs or self.dropped or self.snapshots_unpacked > self.snapshots_unpacked_removed
            or self.restored
            or any(i["origin"] != "kept" for i in self.images)
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["damage_found"] = self.damage_found
        return out
