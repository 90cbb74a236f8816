"""An image whose config lists fewer diff IDs than its manifest has layers. containerd 1.6 and
1.7 record it (``ctr images import``, a pull) and then fail every unpack with "mismatched image
rootfs and manifest layers" (2.x refuses it before recording anything); where another image
unpacked the config's shorter chain, ``ctr run`` runs that chain without the other layers.
verify called the first root clean (an image "unpacked on first use") and the second one
missing a GC label, and rebuild "restored" that label onto the other image's chain (a
red-team run). ctrconv's own import refuses such an image."""

from __future__ import annotations

import pytest

from support.archives import busybox_oci_archive, layer_tar
from support.versions import bin_dir_for

pytestmark = pytest.mark.interop

BAD = "docker.io/test/mismatch:v1"


def _problems(cli, root) -> set[tuple[str, str]]:
    result = cli("verify", "--root", str(root), "-q", "--json")
    assert result.code == 1, result.stdout + result.stderr
    return {(p["kind"], p["object"]) for p in result.json["problems"]}


@pytest.mark.parametrize("other", [None, "own config", "same config"])
@pytest.mark.parametrize("line", ["1.6", "1.7"])
def test_an_image_whose_config_lists_fewer_layers_than_its_manifest_is_a_problem(line, other, cli, tmp_path,
                                                                                 private_containerd):
    """``other``: an image of the same busybox layer imported first, so the config's one-layer
    chain is unpacked; with the same config, that config is labelled with the snapshot too (a
    rebuild then failed whole, unpacking the malformed image again)."""
    bad = busybox_oci_archive(tmp_path, BAD, unlisted_layer=layer_tar(b"never unpacked\n"))
    root = tmp_path / "root"
    daemon = private_containerd(root=root, binary_dir=None if line == "1.6" else str(bin_dir_for(line)))
    if other is not None:
        cmd = "echo ok" if other == "same config" else "echo other"
        daemon.ctr("images", "import", str(busybox_oci_archive(tmp_path, "docker.io/test/base:v1", cmd=cmd)))
    imported = daemon.ctr("images", "import", str(bad), check=False)
    # the oracle: the record is written, the unpack fails
    assert imported.returncode != 0 and "mismatched image rootfs and manifest layers" in imported.stderr
    assert BAD in daemon.ctr("images", "ls", "-q").stdout.split()
    daemon.stop()

    expected = {("rootfs-mismatch", f"image default/{BAD}")}
    assert _problems(cli, root) == expected
    out = tmp_path / "new"
    rebuilt = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert rebuilt.code == 0, rebuilt.stderr
    assert not [r for r in rebuilt.json["restored"] if "gc.ref.snapshot" in r["object"]], rebuilt.json["restored"]
    assert _problems(cli, out) == expected  # nothing a rebuild can mend: the image is malformed
    # in place: left as it is (each run wrote the root again, with a new backup, before)
    in_place = cli("rebuild", "--root", str(root), "-q", "--json")
    assert in_place.code == 0 and in_place.json["healthy"] and not in_place.json["damage_found"], in_place.stdout
    assert [p.split(":", 1)[0] for p in in_place.json["not_repairable"]] == ["rootfs-mismatch"]
    assert not list(root.glob("io.containerd.metadata.v1.bolt/*.bak-*"))


def test_a_config_listing_no_diff_ids_for_a_manifest_with_layers_is_a_problem(cli, tmp_path, private_containerd):
    """The same with no diff IDs at all: verify returned before comparing (a red-team run)."""
    bad = busybox_oci_archive(tmp_path, BAD, no_diff_ids=True)
    root = tmp_path / "root"
    daemon = private_containerd(root=root)
    imported = daemon.ctr("images", "import", str(bad), check=False)
    assert imported.returncode != 0 and "mismatched image rootfs and manifest layers" in imported.stderr
    daemon.stop()
    assert _problems(cli, root) == {("rootfs-mismatch", f"image default/{BAD}")}
