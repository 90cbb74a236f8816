"""Images that run from their snapshots on layer blobs their namespace never recorded, whose
files another namespace brought: healthy, as containerd judges them (``ctr images check``:
incomplete, unpacked; the image runs). ``verify`` must not call them damaged, and ``rebuild``
must not record those blobs for the namespace (found by a red-team run on healthy nodes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.daemon import PrivateContainerd
from support.registry import PrivateRegistry

pytestmark = pytest.mark.interop


def _bin_dir(line: str) -> str | None:
    if line == "1.6":
        return None
    from support.versions import bin_dir_for

    return str(bin_dir_for(line))


def _push(cli, fixtures, host: str, tags: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    for tag in tags:
        res = cli("export", "--root", str(fixtures.root), "--image", f"docker.io/library/bbx:{tag}",
                  "--to", f"{host}/bbx:{tag}", "--plain-http", "-q")
        assert res.code == 0, res.stderr


def _check(daemon, namespace: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """``ctr images check``: name -> status column (``complete (4/4)``, ``incomplete (1/4)``)."""
    out = daemon.ctr("images", "check", namespace=namespace).stdout.splitlines()[1:]
    return {line.split()[0]: " ".join(line.split()[3:5]) for line in out if line.strip()}


def _judge(cli, root: Path, tmp_path: Path, namespace: str, ref: str, private_containerd, line: str) -> None:  # type: ignore[no-untyped-def]
    """verify is clean and names the layers never stored; a rebuild keeps the image as it was."""
    res = cli("verify", "--root", str(root), "-A", "-q")
    assert res.code == 0, res.stdout
    assert "missing-record" not in res.stdout
    assert any(l.startswith("info") and "discarded-layers" in l and ref in l for l in res.stdout.splitlines()), res.stdout
    before = {(i["namespace"], i["name"]): i["complete"] for i in cli("ls", "--root", str(root), "-A", "--json").json["images"]}
    assert before[(namespace, ref)] is False

    out = tmp_path / "rebuilt"
    res = cli("rebuild", "--root", str(root), "-o", str(out), "-q")
    assert res.code == 0, res.stderr
    assert "nothing to repair" in res.stdout, res.stdout
    after = {(i["namespace"], i["name"]): i["complete"] for i in cli("ls", "--root", str(out), "-A", "--json").json["images"]}
    assert after == before
    daemon = private_containerd(root=out, binary_dir=_bin_dir(line))
    status = _check(daemon, namespace)
    daemon.stop()
    assert status[ref].startswith("incomplete"), status


def test_layers_2x_never_fetched_beside_another_namespaces_files(fixture_set, private_containerd, cli, tmp_path):
    """containerd 2.x pulls ``bbx:oci``, then ``bbx:docker`` (same diff IDs, other blobs): the
    transfer service fetches none of its layers, their snapshots exist. Another namespace then
    pulls ``bbx:docker`` whole, so the files are on disk. ``verify`` said ``missing-record``
    (exit 1) and ``rebuild`` recorded the files in ``default``, making the image complete."""
    fixtures = fixture_set
    root = tmp_path / "root"
    with PrivateRegistry(workdir=tmp_path) as registry:
        _push(cli, fixtures, registry.host, ("oci", "docker"))
        ref = f"{registry.host}/bbx:docker"
        daemon = private_containerd(root=root, binary_dir=_bin_dir("2.x"))
        daemon.ctr("images", "pull", "--plain-http", f"{registry.host}/bbx:oci")
        daemon.ctr("images", "pull", "--plain-http", ref)
        daemon.ctr("images", "pull", "--plain-http", "--local", ref, namespace="other")
        status = _check(daemon, "default")
        daemon.stop()
    assert status[ref].startswith("incomplete"), status  # (what 2.x does: the premise)
    _judge(cli, root, tmp_path, "default", ref, private_containerd, "2.x")
    # the export copies the layers from the files another namespace holds, byte for byte: the
    # report said "new manifest" for the unchanged one (a red-team run)
    for fmt, out in (("containerd-root", tmp_path / "exported-root"), ("oci-tar", tmp_path / "exported.tar")):
        res = cli("export", "--root", str(root), "--image", ref, "-o", str(out), "--format", fmt)
        assert res.code == 0, res.stderr
        assert "manifest unchanged" in res.stderr and "new manifest" not in res.stderr, res.stderr


def test_layers_cri_discarded_beside_another_namespaces_files(fixture_set, private_containerd, cli, tmp_path):
    """CRI with ``discard_unpacked_layers`` pulls ``bbx:oci`` into ``k8s.io`` (its layer blobs
    let go), then an operator pulls it with ``ctr`` into ``default``: the files are back on
    disk, ``default``'s. ``rebuild`` recorded them in ``k8s.io`` too (1/4 became 4/4)."""
    from support.cri import ImageServiceClient

    fixtures = fixture_set
    root = tmp_path / "root"
    with PrivateRegistry(workdir=tmp_path) as registry:
        _push(cli, fixtures, registry.host, ("oci",))
        ref = f"{registry.host}/bbx:oci"
        with PrivateContainerd(_bin_dir("1.7"), root=root, workdir=tmp_path, cri=True,
                               discard_unpacked_layers=True) as daemon:
            daemon.add_plain_http_registry(registry.host)
            with ImageServiceClient(daemon.address) as client:
                client.wait_ready()
                client.pull_image(ref)
            daemon.force_gc(namespace="k8s.io")
            daemon.ctr("images", "pull", "--plain-http", ref, namespace="default")
            status = _check(daemon, "k8s.io")
    assert status[ref].startswith("incomplete"), status
    _judge(cli, root, tmp_path, "k8s.io", ref, private_containerd, "1.7")


def test_layers_1_7_transfer_service_never_fetched(fixture_set, private_containerd, cli, tmp_path, monkeypatch):
    """1.7's transfer service (``ctr images pull --local=false``) fetches no layer whose
    snapshot exists either: ``bbx:zstd`` then ``bbx:oci`` in namespace ``b`` (same diff IDs),
    ``bbx:oci`` whole in ``a``. The rule had covered 2.x meta.db files only: on this 1.7 root
    verify said missing-record and rebuild recorded a's files in b (a red-team run)."""
    fixtures = fixture_set
    root = tmp_path / "root"
    with PrivateRegistry(workdir=tmp_path, tls=True) as registry:
        for tag in ("oci", "zstd"):
            res = cli("export", "--root", str(fixtures.root), "--image", f"docker.io/library/bbx:{tag}",
                      "--to", f"{registry.host}/bbx:{tag}", "--cert-dir", str(registry.cert_dir), "-q")
            assert res.code == 0, res.stderr
        monkeypatch.setenv("SSL_CERT_FILE", str(registry.ca_cert))  # (1.7's transfer service ignores --plain-http)
        ref = f"{registry.host}/bbx:oci"
        with PrivateContainerd(_bin_dir("1.7"), root=root, workdir=tmp_path) as daemon:
            for namespace, tag in (("a", "oci"), ("b", "zstd"), ("b", "oci")):
                daemon.ctr("images", "pull", "--local=false", "--platform", "linux/amd64", f"{registry.host}/bbx:{tag}",
                           namespace=namespace)
            status = _check(daemon, "b")
    assert status[ref].startswith("incomplete"), status
    _judge(cli, root, tmp_path, "b", ref, private_containerd, "1.7")


def test_a_never_fetched_image_stays_when_damage_lost_the_snapshot_another_image_remakes(
        fixture_set, private_containerd, cli, tmp_path):
    """2.x pulls ``bbx:oci``, then ``bbx:zstd`` (its layers never fetched: the chain existed).
    meta.db then loses the record of the chain's top snapshot: rebuild unpacked the chain again
    from bbx:oci's layers, yet dropped bbx:zstd as missing its layers, and GC then deleted its
    manifest (a red-team run); containerd keeps it and runs it once the chain is back."""
    from support.damage import snapshot_record_deleted

    root = tmp_path / "root"
    with PrivateRegistry(workdir=tmp_path) as registry:
        _push(cli, fixture_set, registry.host, ("oci", "zstd"))
        ref = f"{registry.host}/bbx:zstd"
        with PrivateContainerd(_bin_dir("2.x"), root=root, workdir=tmp_path) as daemon:
            daemon.ctr("images", "pull", "--plain-http", f"{registry.host}/bbx:oci")
            daemon.ctr("images", "pull", "--plain-http", ref)
    snapshot_record_deleted(root, fixture_set)
    out = tmp_path / "rebuilt"
    report = cli("rebuild", "--root", str(root), "-o", str(out), "-q", "--json").json
    assert not [d for d in report["dropped"] if d["kind"] == "image"], report["dropped"]
    listed = {i["name"]: i for i in cli("ls", "--root", str(out), "--json").json["images"]}
    assert listed[ref]["status"] == "layers-discarded", listed[ref]
    daemon = private_containerd(root=out, binary_dir=_bin_dir("2.x"))
    daemon.force_gc("default")
    status = _check(daemon, "default")
    daemon.stop()
    assert ref in status, status
