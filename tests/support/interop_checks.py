"""What every interop test asks of a root a real containerd has seen: Go bbolt finds every bolt
file clean, ``ctr images check`` agrees, and nothing disappears across a forced GC and a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctrconv.containerd import schema as K

from support.go_bbolt import go_check

META = Path(K.METADATA_PLUGIN_DIR) / K.META_DB


def bolt_files(root: Path) -> list[Path]:
    return [root / META, *sorted(root.glob("io.containerd.snapshotter.v1.*/metadata.db"))]


def assert_go_clean(root: Path) -> None:
    for path in bolt_files(root):
        assert go_check(path) == [], path


def check_all(daemon: Any, namespace: str, names: list[str], *, unpacked: bool) -> None:
    rows = {r.ref: r for r in daemon.images_check(namespace)}
    assert sorted(rows) == sorted(names)
    for name in names:
        assert rows[name].complete, rows[name]
        assert rows[name].unpacked is unpacked, rows[name]


def gc_and_restart(private_containerd: Any, root: Path, namespace: str, names: list[str], *, unpacked: bool) -> None:
    """Check, force a GC, check, restart, check: nothing may disappear (pitfall 26)."""
    daemon = private_containerd(root=root)
    check_all(daemon, namespace, names, unpacked=unpacked)
    blobs = daemon.ctr("content", "ls", "-q", namespace=namespace).stdout.split()
    snaps = daemon.ctr("snapshots", "ls", namespace=namespace).stdout
    daemon.force_gc(namespace)
    check_all(daemon, namespace, names, unpacked=unpacked)
    daemon.stop()
    daemon = private_containerd(root=root)
    check_all(daemon, namespace, names, unpacked=unpacked)
    assert daemon.ctr("content", "ls", "-q", namespace=namespace).stdout.split() == blobs
    assert daemon.ctr("snapshots", "ls", namespace=namespace).stdout == snaps
    daemon.stop()


def expected_file(fixture_set: Any, image: str, path: str) -> str:
    """sha256 hex of ``path`` in the top-most layer of the image (containerd's own listings)."""
    chains = fixture_set.image("default", image)["manifests"][0]["chain_ids"]
    for chain in reversed(chains):
        listing = fixture_set.snapshot_listing("default", chain)
        for entry in listing["entries"]:
            if entry["path"] == path:
                return entry["sha256"].split(":", 1)[1]
    raise KeyError(path)
