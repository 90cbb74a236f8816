"""A CRI node with ``discard_unpacked_layers`` labels no layers of the images it pulled. An
image preloaded later (``ctrconv import``, as ``ctr images import``) that shares a base layer
brings that blob back under its own manifest's label: the node is healthy (the real daemon keeps
the blob through GC and restarts), but verify called every discarded image's missing label a
problem, "GC would delete it", and exited 1 (found by a red-team run on 1.6, 1.7 and 2.x)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ctrconv.bolt import BucketTree
from ctrconv.bolt.reader import BoltFile, read_tree
from ctrconv.bolt.writer import write_bolt

pytestmark = pytest.mark.interop

META = Path("io.containerd.metadata.v1.bolt", "meta.db")


def _verify(cli, root: Path) -> tuple[int, list[dict], list[dict]]:
    result = cli("verify", "--root", str(root), "-A", "-q", "--json")
    return result.code, result.json["problems"], result.json["info"]


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_a_preload_onto_a_discard_node_leaves_it_verified_clean(line, realnode_set_for, cli, tmp_path) -> None:
    corpus = realnode_set_for(line)
    root = corpus.copy_root("discarded", tmp_path / "node")
    code, problems, _ = _verify(cli, root)
    assert code == 0 and not problems, problems
    imported = cli("import", "--root", str(root), "-n", "k8s.io", "-q", "-i", str(corpus.refs / "export" / "oci.tar"))
    assert imported.code == 0, imported.stderr
    code, problems, info = _verify(cli, root)
    assert code == 0 and not problems, problems
    kept = [i for i in info if i["kind"] == "missing-gc-label" and "GC keeps it while that record lives" in i["message"]]
    assert kept, info

    # the labels that keep it gone too: nothing keeps the shared blobs any more, a problem again
    shared = {re.search(r"label for (sha256:[0-9a-f]{64})", i["message"]).group(1) for i in kept}  # type: ignore[union-attr]
    tree = read_tree(root / META)
    blobs = tree.bucket(b"v1", b"k8s.io", b"content", b"blob")
    assert blobs is not None
    for record in blobs.entries.values():
        labels = record.bucket(b"labels") if isinstance(record, BucketTree) else None
        if labels is not None:
            for key in [k for k, v in labels.entries.items() if isinstance(v, bytes) and v.decode() in shared]:
                del labels.entries[key]
    with BoltFile(root / META) as db:
        page_size = db.page_size
    write_bolt(root / META, tree, page_size=page_size)
    code, problems, _ = _verify(cli, root)
    assert code == 1 and any(p["kind"] == "missing-gc-label" and "GC would delete it" in p["message"]
                             for p in problems), problems


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_a_discard_node_that_lost_its_meta_db_keeps_running_its_images(line, realnode_set_for, cli, tmp_path,
                                                                       private_containerd) -> None:
    """The meta.db of a ``discard_unpacked_layers`` node lost: its images were re-derived from
    the documents on disk, then all dropped for their "missing" layer blobs (let go after
    unpacking), and containerd's next GC took the snapshots they ran from (a red-team run on
    1.6, 1.7 and 2.x). They are kept, with records labelled as CRI labels them there, and run."""
    corpus = realnode_set_for(line)
    root = corpus.copy_root("discarded", tmp_path / "node")
    before = {i["digest"] for i in cli("ls", "--root", str(root), "-n", "k8s.io", "--json").json["images"]}
    (root / META).unlink()
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json")
    assert result.code == 0, result.stderr
    dropped = [d for d in result.json["dropped"] if d["kind"] == "image" and d["object"].startswith("image k8s.io/")]
    assert not dropped, dropped
    after = {i["name"]: i["digest"] for i in cli("ls", "--root", str(out), "-n", "k8s.io", "--json").json["images"]}
    # (an image without layers leaves no snapshot to say which namespace it was in: it goes to
    # default, as any document no namespace can be told from)
    assert set(after.values()) == before - {corpus.image("empty")["target"]["digest"]}, sorted(set(after.values()) ^ before)
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0
    daemon = private_containerd(root=out)
    snapshots = daemon.ctr("snapshots", "ls", namespace="k8s.io").stdout
    daemon.force_gc("k8s.io")
    assert daemon.ctr("snapshots", "ls", namespace="k8s.io").stdout == snapshots
    ids = sorted(n for n in after if n.startswith("sha256:"))
    assert ids
    for name in ids:
        run = daemon.ctr("run", "--rm", name, "t1", "/bin/busybox", "true", namespace="k8s.io", check=False)
        assert run.returncode == 0, (name, run.stderr)


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_a_discard_node_s_manifest_record_lost_with_its_page_keeps_its_image_running(line, realnode_set_for, cli,
                                                                                     tmp_path, private_containerd):
    """One page of a discard node's meta.db zeroed: the k8s.io record of an image's manifest
    came back with its size only, no GC labels and no times; containerd's first GC then took
    the config and the snapshot the lost labels held, and the image could not run again (its
    layers were let go: a red-team run on 1.7 and 2.x). The record gets its labels back."""
    corpus = realnode_set_for(line)
    root = corpus.copy_root("discarded", tmp_path / "node")
    image = corpus.image("oci")
    with BoltFile(root / META) as db:
        page, page_size = db.bucket(b"v1", b"k8s.io", b"content", b"blob", image["manifest_digest"].encode()).root, \
            db.page_size
    assert page, "the manifest's record has a page of its own"
    with open(root / META, "r+b") as f:
        f.seek(page * page_size)
        f.write(bytes(page_size))
    out = tmp_path / "new"
    result = cli("rebuild", "--root", str(root), "-o", str(out), "-q")
    assert result.code == 0, result.stderr
    assert cli("verify", "--root", str(out), "-A", "-q").code == 0
    daemon = private_containerd(root=out)
    daemon.force_gc("k8s.io")
    daemon.stop()
    daemon = private_containerd(root=out)
    run = daemon.ctr("run", "--rm", image["config_digest"], "t1", "/bin/busybox", "true", namespace="k8s.io",
                     check=False)
    assert run.returncode == 0, run.stderr


def test_verify_of_a_namespace_the_root_does_not_have_says_so(realnode_set_for, cli, tmp_path) -> None:
    """``verify`` without ``-n`` on a CRI node (only ``k8s.io``): "clean, 0 content records"
    with nothing checked (a red-team run). It says which namespaces the root has."""
    root = realnode_set_for("1.6").copy_root("discarded", tmp_path / "node")
    code, problems, info = _verify_default(cli, root)
    assert code == 0 and not problems
    assert [i["message"] for i in info if i["kind"] == "absent-namespace"] == [
        "this root has no namespace default; it has k8s.io: check them with -n NAME or -A"], info


def _verify_default(cli, root: Path) -> tuple[int, list[dict], list[dict]]:
    result = cli("verify", "--root", str(root), "-q", "--json")
    return result.code, result.json["problems"], result.json["info"]
