"""Unpack the fixture images' layers and compare with the snapshots containerd itself made.

The fixture set records a listing of every committed overlayfs snapshot (fixtures/README.md).
Applying the same blobs with ctrconv must give identical trees, field for field, except the
apply-time mtimes that :func:`compare_listings` ignores. Marked interop (``fixture_set``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctrconv.layers import chain_ids, compare_listings, copy_tree, tree_listing, unpack_layer

REPO = "docker.io/library/bbx"
BLOBS = "io.containerd.content.v1.content/blobs"


def host_manifest(fixture_set, namespace: str, name: str) -> dict:
    rec = fixture_set.image(namespace, name)
    return next(m for m in rec["manifests"] if m["digest"] == rec["host_manifest"])


def blob(fixture_set, digest: str) -> Path:
    alg, hexpart = digest.split(":")
    return fixture_set.root / BLOBS / alg / hexpart


@pytest.mark.parametrize("namespace", ["default", "k8s.io"])
@pytest.mark.parametrize("tag", ["oci", "zstd", "docker", "uncompressed", "multi"])
def test_overlay_snapshots_match_containerd(fixture_set, tmp_path: Path, namespace: str,
                                            tag: str) -> None:
    manifest = host_manifest(fixture_set, namespace, f"{REPO}:{tag}")
    assert chain_ids(manifest["diff_ids"]) == manifest["chain_ids"]
    lowers: list[Path] = []
    for i, (layer, diff_id, chain) in enumerate(
            zip(manifest["layers"], manifest["diff_ids"], manifest["chain_ids"])):
        fs = tmp_path / str(i) / "fs"
        fs.mkdir(parents=True)
        os.chmod(fs, 0o755)
        with open(blob(fixture_set, layer["digest"]), "rb") as fh:
            result = unpack_layer(fh, fs, mode="overlay", media_type=layer["mediaType"],
                                  lowers=lowers[::-1], expected_diff_id=diff_id)
        assert result.mode == ("naive" if i == 0 else "overlay")
        expected = fixture_set.snapshot_listing(namespace, chain)["entries"]
        assert compare_listings(expected, tree_listing(fs)) == []
        lowers.append(fs)


def test_native_chain_merges_layers(fixture_set, tmp_path: Path) -> None:
    manifest = host_manifest(fixture_set, "default", f"{REPO}:oci")
    previous: Path | None = None
    for i, layer in enumerate(manifest["layers"]):
        snap = tmp_path / str(i)
        if previous is None:
            snap.mkdir()
            os.chmod(snap, 0o755)
        else:
            copy_tree(previous, snap)
        with open(blob(fixture_set, layer["digest"]), "rb") as fh:
            unpack_layer(fh, snap, mode="naive", media_type=layer["mediaType"],
                         expected_diff_id=manifest["diff_ids"][i])
        previous = snap
    assert previous is not None
    merged = tree_listing(previous)
    assert "/data/remove-me" not in merged and "/data/gone-dir" not in merged
    assert not any(e["type"] == "char" and e.get("rdev") == [0, 0] for e in merged.values())
    assert not any("trusted.overlay.opaque" in e["xattrs"] for e in merged.values())
    assert merged["/data/setuid"]["mode"] == "4755"
    assert merged["/bin/sh"]["link"] == "busybox"
    assert "/etc/hostname" in merged
