"""Config-only (zero-layer) images and ``--image`` by ID against a real containerd 1.6.

containerd 1.6's ``ctr images import`` "unpacks" a config-only image: ``image.Unpack`` applies
nothing, then labels the config with ``gc.ref.snapshot.overlayfs`` = the chain ID of no layers,
``""``; ``writeMap`` skips the empty value but leaves an empty labels bucket. No snapshot, no
snapshot bucket, and ``ctr images check`` says ``UNPACKED false``. ``ctrconv import`` and
``export --format containerd-root`` must leave exactly those records.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ctrconv.bolt.reader import read_tree
from ctrconv.bolt.tree import BucketTree
from ctrconv.containerd import schema as K
from ctrconv.oci import mediatypes as mt
from ctrconv.oci.platform import host_platform
from support.image_ids import COLLIDING, SHARED_PREFIX
from support.layouts import LayoutBuilder
from support.interop_checks import assert_go_clean, gc_and_restart

pytestmark = pytest.mark.interop

META = Path(K.METADATA_PLUGIN_DIR) / K.META_DB
TIMES = {b"createdat", b"updatedat"}


def _config(label: str) -> bytes:
    p = host_platform()
    doc = {"architecture": p.architecture, "os": p.os, "config": {"Labels": {"x": label}},
           "rootfs": {"type": "layers", "diff_ids": []}}
    return json.dumps(doc).encode()


def _manifest(b: LayoutBuilder, config: bytes) -> dict[str, Any]:
    cdesc = b.blob(config, mt.OCI_CONFIG)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cdesc, "layers": []}
    return b.blob(json.dumps(doc).encode(), mt.OCI_MANIFEST)


def _named(desc: dict[str, Any], name: str) -> dict[str, Any]:
    return {**desc, "annotations": {"io.containerd.image.name": name,
                                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}


def zero_layer_archive(tmp: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """An OCI tar of config-only images: a manifest, an index of one (host platform), and
    the two whose config digests share 12 hex digits. Returns (tar, name -> info)."""
    b = LayoutBuilder(tmp / "layout")
    info: dict[str, dict[str, Any]] = {}
    entries = []
    zero = _manifest(b, _config("zero"))
    entries.append(_named(zero, "docker.io/library/zero:1"))
    info["docker.io/library/zero:1"] = {"target": zero["digest"], "id": "sha256:" + hashlib.sha256(_config("zero")).hexdigest()}
    child = _manifest(b, _config("zeroidx"))
    p = host_platform()
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [{**child, "platform": {"os": p.os, "architecture": p.architecture}}]}
    idesc = b.blob(json.dumps(index).encode(), mt.OCI_INDEX)
    entries.append(_named(idesc, "docker.io/library/zeroidx:1"))
    info["docker.io/library/zeroidx:1"] = {"target": idesc["digest"], "id": "sha256:" + hashlib.sha256(_config("zeroidx")).hexdigest()}
    for tag, config in zip("ab", COLLIDING):
        m = _manifest(b, config)
        entries.append(_named(m, f"docker.io/library/coll:{tag}"))
        info[f"docker.io/library/coll:{tag}"] = {"target": m["digest"], "id": "sha256:" + hashlib.sha256(config).hexdigest()}
    (b.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    out = tmp / "zero.tar"
    with tarfile.open(out, "w") as tf:
        for path in sorted(b.path.rglob("*")):
            tf.add(path, arcname=str(path.relative_to(b.path)), recursive=False)
    return out, info


def _plain(tree: BucketTree) -> dict[str, Any]:
    """A bucket as nested dicts, without createdat/updatedat (the only nondeterministic values)."""
    out: dict[str, Any] = {"#sequence": tree.sequence}
    for key, value in tree.entries.items():
        if key in TIMES:
            continue
        out[key.decode()] = _plain(value) if isinstance(value, BucketTree) else value
    return out


def records(root: Path, namespace: str = "default") -> dict[str, Any]:
    """The content and image records of a namespace, and whether it has a snapshots bucket."""
    ns = read_tree(root / META).bucket(K.V1, namespace.encode())
    assert ns is not None
    blobs = ns.bucket(K.CONTENT, K.BLOB)
    images = ns.bucket(b"images")
    assert blobs is not None and images is not None
    return {"blobs": _plain(blobs), "images": _plain(images), "snapshots": ns.bucket(K.SNAPSHOTS) is not None}


def _rows(daemon: Any) -> list[tuple[str, str, str, str, bool]]:
    return sorted((r.ref, r.digest, r.status, r.size, r.unpacked) for r in daemon.images_check())


def _bin_dir(line: str) -> str | None:
    if line == "1.6":
        return None  # the system containerd (Debian 12: 1.6.20)
    from support.versions import bin_dir_for

    return str(bin_dir_for(line))


@pytest.fixture
def ctr_imported(private_containerd, tmp_path):
    """A root into which a real 1.6 ``ctr images import`` loaded the archive, daemon stopped."""
    return _ctr_import(private_containerd, tmp_path, "1.6")


def _ctr_import(private_containerd, tmp_path: Path, line: str):
    archive, info = zero_layer_archive(tmp_path)
    daemon = private_containerd(binary_dir=_bin_dir(line))
    daemon.ctr("images", "import", str(archive))
    rows = _rows(daemon)
    # ctr leaves the archive's index.json blob under its import lease; the GC that follows
    # the lease's deletion runs in the background, so settle it before reading the records
    daemon.force_gc()
    daemon.stop()
    return daemon.root, archive, info, rows


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_ctr_unpack_of_a_config_only_image_is_what_we_match(private_containerd, tmp_path, line):
    """What each line's ``ctr images import`` records (the facts the writer reproduces)."""
    root, _, info, rows = _ctr_import(private_containerd, tmp_path, line)
    assert [(r[0], r[2], r[4]) for r in rows] == [(n, "complete (1/1)", False) for n in sorted(info)]
    recs = records(root)
    assert recs["snapshots"] is False
    for name, i in info.items():
        config = recs["blobs"][i["id"]]
        if line == "2.x":
            assert "labels" not in config  # the transfer service's unpacker skips it
        else:
            assert config["labels"] == {"#sequence": 0}  # image.Unpack: an empty labels bucket


@pytest.mark.parametrize("line", ["1.6", "1.7", "2.x"])
def test_import_config_only_images_like_ctr(private_containerd, tmp_path, cli, line):
    ctr_root, archive, info, ctr_rows = _ctr_import(private_containerd, tmp_path, line)
    root = tmp_path / "ours"
    res = cli("import", "--root", str(root), "-i", str(archive), "--json", "-q", "--containerd-version", line)
    assert res.code == 0, res.stderr
    assert sorted(i["name"] for i in res.json["images"]) == sorted(info)
    assert all(i["unpacked"] is None and i["snapshots_created"] == 0 for i in res.json["images"])
    assert_go_clean(root)
    assert records(root) == records(ctr_root)
    assert cli("verify", "--root", str(root), "-q").code == 0
    # a second run finds everything in place
    again = cli("import", "--root", str(root), "-i", str(archive), "--json", "-q")
    assert again.code == 0 and again.json["written"] is False
    # that line's containerd lists and checks them alike, and its GC and a restart keep them
    daemon = private_containerd(root=root, binary_dir=_bin_dir(line))
    assert _rows(daemon) == ctr_rows
    daemon.force_gc()
    assert _rows(daemon) == ctr_rows
    daemon.stop()
    daemon = private_containerd(root=root, binary_dir=_bin_dir(line))
    assert _rows(daemon) == ctr_rows
    daemon.stop()
    assert records(root) == records(ctr_root)


def test_no_unpack_then_unpack_adds_the_empty_labels_bucket(ctr_imported, tmp_path, cli):
    """``--no-unpack`` leaves the config without labels (ctr import --no-unpack does too);
    a later unpacking import completes it as containerd's Update would."""
    ctr_root, archive, _, _ = ctr_imported
    root = tmp_path / "ours"
    assert cli("import", "--root", str(root), "-i", str(archive), "--no-unpack", "-q").code == 0
    assert records(root) != records(ctr_root)
    res = cli("import", "--root", str(root), "-i", str(archive), "--json", "-q")
    assert res.code == 0 and res.json["written"] is True
    assert records(root) == records(ctr_root)


def test_export_to_root_by_image_id_and_digest_reference(ctr_imported, private_containerd, tmp_path, cli):
    """``export --format containerd-root`` of config-only images picked by ID prefix, full ID,
    ``sha256:<id>`` and ``repo@sha256:``, from the root containerd wrote: the same records."""
    ctr_root, _, info, ctr_rows = ctr_imported
    target = tmp_path / "target"
    zeroidx = info["docker.io/library/zeroidx:1"]
    coll_a, coll_b = info["docker.io/library/coll:a"]["id"], info["docker.io/library/coll:b"]["id"]
    refs = [
        info["docker.io/library/zero:1"]["id"][7:19],  # 12 hex digits, as crictl shows
        f"zeroidx@{zeroidx['target']}",  # stored as zeroidx:1
        coll_a,
        coll_b[7:],
    ]
    for ref in refs:
        res = cli("export", "--root", str(ctr_root), "--image", ref, "-o", str(target),
                  "--format", "containerd-root", "--json", "-q")
        assert res.code == 0, (ref, res.stderr)
        assert len(res.json["images"]) == 1
    # the ambiguous prefix is refused and names both images
    res = cli("export", "--root", str(ctr_root), "--image", SHARED_PREFIX, "-o", str(tmp_path / "t2"),
              "--format", "containerd-root")
    assert res.code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "coll:a" in res.stderr and "coll:b" in res.stderr
    assert not (tmp_path / "t2").exists()
    # the index's ID is its host-platform child's config: same image as zeroidx:1
    res = cli("export", "--root", str(ctr_root), "--image", zeroidx["id"][7:20], "-o", str(tmp_path / "idx.tar"), "--json")
    assert res.code == 0 and [i["name"] for i in res.json["images"]] == ["docker.io/library/zeroidx:1"]
    assert_go_clean(target)
    assert records(target) == records(ctr_root)
    daemon = private_containerd(root=target)
    assert _rows(daemon) == ctr_rows
    daemon.stop()
    gc_and_restart(private_containerd, target, "default", sorted(info), unpacked=False)

