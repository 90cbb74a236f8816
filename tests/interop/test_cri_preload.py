"""Preloaded ``k8s.io`` images look exactly like pulled ones to the kubelet, on every line.

Each image of the real-node corpus was pulled through CRI into ``k8s.io`` by a private daemon of
that line. Here the same images (``ctr images export`` archives) are imported offline into a
fresh root; its records must equal the CRI pull's, apart from timestamps (``createdat`` /
``updatedat``: the moment of writing). Then that line's containerd, CRI plugin on and its
registry mirror pointing at an address where nothing listens (a stopped registry), must find
every image by tag, by ``repo@digest``, by full and short ID, run it, and keep every name over
GC and a restart.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ctrconv.containerd.root import ContainerdRoot
from support.realnode_set import LINES

pytestmark = pytest.mark.interop


def _bin_dir(line: str) -> str | None:
    if line == "1.6":
        return None
    from support.versions import bin_dir_for

    return str(bin_dir_for(line))


def _records(root: Path, digests: set[str] | None = None) -> tuple[dict, dict]:
    """k8s.io image records (target, labels, annotations) and content records (size, labels)."""
    with ContainerdRoot(root).open_metadata() as meta:
        images = {i.name: (i.target, i.labels, i.annotations) for i in meta.images("k8s.io")}
        blobs = {b.digest: (b.size, b.labels) for b in meta.blobs("k8s.io")
                 if digests is None or b.digest in digests}
    return images, blobs


def _dead_port() -> int:
    """A loopback port with nothing listening (the registry of the mirror entry is stopped)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _preload(corpus, line: str, root: Path, cli) -> list[dict]:
    """Import every exportable image of the corpus into ``root``'s k8s.io, in pull order."""
    imported = []
    for image in corpus.images():
        archive = corpus.export(image["key"])
        if archive is None:
            continue
        result = cli("import", "--root", str(root), "-n", "k8s.io", "-i", str(archive), "-q",
                     "--containerd-version", line)
        assert result.code == 0, result.stderr
        imported.append(image)
    assert len(imported) >= 5
    return imported


@pytest.mark.parametrize("line", LINES)
def test_offline_import_records_equal_a_cri_pull(line, realnode_set_for, cli, tmp_path):
    corpus = realnode_set_for(line)
    root = tmp_path / "root"
    imported = _preload(corpus, line, root, cli)
    mine_images, mine_blobs = _records(root)
    pulled_images, pulled_blobs = _records(corpus.node_root, set(mine_blobs))
    targets = {i["target"]["digest"] for i in imported}
    pulled_images = {n: r for n, r in pulled_images.items() if r[0].digest in targets}
    assert sorted(mine_images) == sorted(pulled_images)
    assert mine_images == pulled_images
    assert mine_blobs == pulled_blobs


@pytest.mark.parametrize("line", LINES)
def test_preloaded_node_serves_the_kubelet_without_a_registry(line, realnode_set_for, cli, tmp_path):
    from support.cri import ImageServiceClient
    from support.daemon import PrivateContainerd

    corpus = realnode_set_for(line)
    root = tmp_path / "root"
    imported = _preload(corpus, line, root, cli)
    daemon = PrivateContainerd(_bin_dir(line), root=root, cri=True)
    dead = f"127.0.0.1:{_dead_port()}"
    daemon.add_plain_http_registry(dead)
    daemon.add_plain_http_registry(corpus.info["registry_host"])  # its registry is gone too
    try:
        daemon.start()
        expected = sorted(corpus.names("k8s.io"))
        with ImageServiceClient(daemon.address) as client:
            client.wait_ready()
            for image in imported:
                image_id = image["cri_image_id"]
                by = {
                    "tag": image["ref"],
                    "digest": f"{image['repository']}@{image['target']['digest']}",
                    "id": image_id,
                    "bare id": image_id.split(":", 1)[1],
                    "short id": image_id.split(":", 1)[1][:12],
                }
                pulled = image["cri"]["tag"]  # what CRI said of the image it had pulled itself
                for how, ref in by.items():
                    status = client.image_status(ref)
                    assert status is not None, (line, image["key"], how, ref)
                    assert status["id"] == image_id, (how, status)
                    assert {k: v for k, v in status.items() if k != "pinned"} == \
                        {k: v for k, v in pulled.items() if k != "pinned"}, (how, status, pulled)
            listed = sorted(daemon.image_names("k8s.io"))
            assert set(listed) <= set(expected) and len(listed) == 3 * len(imported)
        run = daemon.ctr("run", "--rm", imported[0]["ref"], "ctrconv-preload", "/bin/busybox", "true",
                         namespace="k8s.io", check=False, timeout=120)
        assert run.returncode == 0, run.stderr
        daemon.force_gc("k8s.io")
        daemon.stop()
        daemon.start()
        assert sorted(daemon.image_names("k8s.io")) == listed
        rows = daemon.images_check("k8s.io")
        assert all(r.complete for r in rows), rows
    finally:
        daemon.close()


#: CRI reports ``io.cri-containerd.pinned=pinned`` as ``pinned`` from 1.7 on; 1.6 ignores it
PINNED_HONOURED = {"1.6": False, "1.7": True, "2.x": True}


@pytest.mark.parametrize("line", LINES)
def test_pin_is_reported_to_the_kubelet_where_the_line_knows_it(line, realnode_set_for, cli, tmp_path):
    from support.cri import ImageServiceClient
    from support.daemon import PrivateContainerd

    corpus = realnode_set_for(line)
    root = tmp_path / "root"
    pinned, plain = corpus.image("oci"), corpus.image("docker")
    for image, extra in ((pinned, ["--pin"]), (plain, [])):
        result = cli("import", "--root", str(root), "-n", "k8s.io", "-q", "-i", str(corpus.export(image["key"])),
                     "--containerd-version", line, *extra)
        assert result.code == 0, result.stderr
    with ContainerdRoot(root).open_metadata() as meta:
        labels = {i.name: i.labels for i in meta.images("k8s.io")}
    assert all(labels[n].get("io.cri-containerd.pinned") == "pinned" for n in labels if "realnode/oci" in n or n == pinned["cri_image_id"])
    daemon = PrivateContainerd(_bin_dir(line), root=root, cri=True)
    try:
        daemon.start()
        with ImageServiceClient(daemon.address) as client:
            client.wait_ready()
            assert client.image_status(pinned["ref"])["pinned"] is PINNED_HONOURED[line]
            assert client.image_status(plain["ref"])["pinned"] is False
    finally:
        daemon.close()


def _pure_docker_archive(cli, oci_archive: Path, out: Path, tags: list[str]) -> Path:
    """The image as ``docker save`` before Docker 25 writes it: ``manifest.json`` (these
    RepoTags) and the blobs, no ``index.json`` or ``oci-layout``."""
    import io
    import json
    import tarfile

    converted = out.with_suffix(".converted.tar")
    result = cli("convert", "-i", str(oci_archive), "-o", str(converted), "--format", "docker-archive", "-q")
    assert result.code == 0, result.stderr
    with tarfile.open(converted) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            if member.name in ("index.json", "oci-layout", "repositories"):
                continue
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "manifest.json":
                elements = json.loads(data)
                elements[0]["RepoTags"] = tags
                data = json.dumps(elements).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out


@pytest.mark.parametrize("line", ["1.6", "2.x"])
def test_a_preloaded_docker_archive_has_no_repo_digest_no_registry_serves(line, realnode_set_for, cli, tmp_path):
    """A docker archive's manifest is made on import (as ``ctr`` makes it): no registry serves
    it. CRI reports a ``repo@digest`` name as a repo digest, which the kubelet shows as the
    container's image ID and tools pin pods to; the preload recorded one (a red-team run), where
    ``ctr -n k8s.io images import`` of the same archive gives none. Tags, ID and size as ctr's."""
    from support.cri import ImageServiceClient
    from support.daemon import PrivateContainerd

    corpus = realnode_set_for(line)
    archive = _pure_docker_archive(cli, corpus.export("oci"), tmp_path / "docker.tar",
                                   ["busybox:latest", "example.com/multi:1"])
    mine, theirs = tmp_path / "ctrconv", tmp_path / "ctr"
    result = cli("import", "--root", str(mine), "-n", "k8s.io", "-i", str(archive), "-q", "--containerd-version", line)
    assert result.code == 0, result.stderr
    seen = {}
    for root in (mine, theirs):
        daemon = PrivateContainerd(_bin_dir(line), root=root, cri=True)
        try:
            daemon.start()
            if root == theirs:
                daemon.ctr("images", "import", str(archive), namespace="k8s.io")
            with ImageServiceClient(daemon.address) as client:
                client.wait_ready()
                seen[root] = sorted((i["id"], sorted(i["repo_tags"]), i["repo_digests"], i["size"])
                                    for i in client.list_images())
        finally:
            daemon.close()
    assert seen[mine] == seen[theirs]
    assert seen[mine] and not any(digests for _, _, digests, _ in seen[mine]), seen[mine]
    # nor does any blob claim a registry it never came from (ctr's import labels none either)
    with ContainerdRoot(mine).open_metadata() as meta:
        assert not [b.digest for b in meta.blobs("k8s.io")
                    if any(k.startswith("containerd.io/distribution.source.") for k in b.labels)]
    assert ["docker.io/library/busybox:latest", "example.com/multi:1"] in [tags for _, tags, _, _ in seen[mine]]
