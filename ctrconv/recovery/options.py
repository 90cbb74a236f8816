"""What ``rebuild`` may do: ``RebuildOptions``, its fields named like ``ctrconv rebuild``'s options."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RebuildOptions:
    """How a damaged root is rebuilt (defaults are the CLI's)."""

    #: ``--name DIGEST=REF``: names for images re-derived from content, by target digest
    name: dict[str, str] = field(default_factory=dict)
    #: ``--no-unpack`` negated: unpack again the snapshots of images that were unpacked
    unpack: bool = True
    #: reuse snapshots without comparing their trees with their layers
    trust_snapshots: bool = False
    #: into ``-o``: hard-link blobs instead of copying (reflinking) them
    link: bool = False
    #: layer blobs lost to damage whose snapshots survive are written again from the snapshots
    regenerate_layers: bool = False
