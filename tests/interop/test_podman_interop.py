"""Podman judges ctrconv's exports: every format loads into podman and runs there.

One private podman storage serves the module (``support/podman.py``: vfs, temp root, no network).
Each export is loaded the way podman users do it: an oci-tar by ``podman load`` and by ``podman
pull oci-archive:``, a docker-archive by ``podman load``, an oci-dir by ``podman pull oci:``.
Before each load the storage is emptied, so the image podman then holds came from that export
alone. Three kinds of image: (a) a fixture image whose layers carry whiteouts and an opaque
directory, (b) an image of the real-node corpus' ``discarded`` root (CRI
``discard_unpacked_layers``: its layers are regenerated from snapshots), (c) a ``ctrconv commit``
of a container that wrote a file and deleted one of its image's. Podman's image ID (the config
digest) must be the one ctrconv reports, and the original one where ctrconv says it is unchanged:
(b') is a discarded-layers image whose regenerated layers reproduce every diff ID, so it keeps
its ID.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from support.podman import PrivatePodman, podman  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.interop

#: (export format, how podman takes it in)
LOADS = [("oci-tar", "load"), ("oci-tar", "oci-archive"), ("docker-archive", "load"), ("oci-dir", "oci")]
LOAD_IDS = [f"{fmt}-{how}" for fmt, how in LOADS]
#: the fixture image's three layers: a file whited out, a directory whited out, an opaque
#: directory, a file modified by a later layer (``fixtures/fx_layers.py``)
RICH_CHECK = ('test -x /bin/busybox && test ! -e /data/remove-me && test ! -e /data/gone-dir && '
              'test "$(ls -A /data/opq)" = new && cat /data/modify.txt')
RICH_OUTPUT = "version 2, modified by layer 2"


def _ref_name(index: dict[str, Any]) -> str:
    """The ``org.opencontainers.image.ref.name`` of the layout's first image (podman's
    oci/oci-archive transports pick an image by it when the index holds several entries)."""
    return index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]


def _load(podman: PrivatePodman, out: Path, fmt: str, how: str) -> set[str]:
    """Empty the storage, take ``out`` in, return the IDs of the images podman then holds."""
    podman.podman("rmi", "--all", "--force")
    assert podman.podman("images", "-q").stdout.strip() == ""
    if how == "load":
        podman.podman("load", "-i", str(out))
    elif how == "oci-archive":
        with tarfile.open(out) as tar:
            index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        podman.podman("pull", f"oci-archive:{out}:{_ref_name(index)}")
    else:
        assert fmt == "oci-dir"
        index = json.loads((out / "index.json").read_text())
        podman.podman("pull", f"oci:{out}:{_ref_name(index)}")
    listed = podman.podman("images", "-q", "--no-trunc").stdout.split()
    return {"sha256:" + i.removeprefix("sha256:") for i in listed}


def _output(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / ("out.tar" if fmt != "oci-dir" else "out")


@pytest.mark.parametrize("fmt,how", LOADS, ids=LOAD_IDS)
def test_fixture_image_loads_with_its_id_and_runs_with_its_whiteouts(fmt, how, fixture_set, podman, cli, tmp_path):
    """(a) The fixture image keeps its image ID (nothing is regenerated) and podman's container
    sees the layers applied as containerd applies them: whiteouts, opaque directory, changes."""
    name = "docker.io/library/bbx:oci"
    original = fixture_set.image("default", name)["manifests"][0]["config"]["digest"]
    out = _output(tmp_path, fmt)
    result = cli("export", "--root", str(fixture_set.root), "--image", name, "-o", str(out), "--format", fmt,
                 "--json", "-q")
    assert result.code == 0, result.stderr
    assert result.json["image_ids_changed"] == [] and result.json["images"][0]["image_id"] == original
    assert _load(podman, out, fmt, how) == {original}
    run = podman.run(original, "/bin/busybox", "sh", "-c", RICH_CHECK, check=False)
    assert run.returncode == 0 and run.stdout.strip() == RICH_OUTPUT, (run.stdout, run.stderr)


@pytest.mark.parametrize("fmt,how", LOADS, ids=LOAD_IDS)
def test_discarded_layers_image_loads_with_the_reported_id_and_runs(fmt, how, realnode_set_for, podman, cli,
                                                                    tmp_path):
    """(b) An image of a ``discard_unpacked_layers`` node, its layers regenerated from
    snapshots: podman holds it under the image ID ctrconv reports (the original one where
    ctrconv says it is unchanged) and runs the command the node ran."""
    from support.realnode_set import DISCARDED

    corpus = realnode_set_for("1.6")
    ran = corpus.info["roots"][DISCARDED]["container"]
    out = _output(tmp_path, fmt)
    result = cli("export", "--root", str(corpus.root(DISCARDED)), "-n", "k8s.io", "--image", ran["image"],
                 "-o", str(out), "--format", fmt, "--json")
    assert result.code == 0, result.stderr
    assert "regenerated from snapshots" in result.stderr, result.stderr
    report = result.json["images"][0]
    assert report["regenerated_layers"] > 0, report
    changed = {c["from"]: c["to"] for c in result.json["image_ids_changed"]}
    if report["original_image_id"] in changed:
        assert changed[report["original_image_id"]] == report["image_id"] != report["original_image_id"]
    else:
        assert report["image_id"] == report["original_image_id"]
    assert _load(podman, out, fmt, how) == {report["image_id"]}
    run = podman.run(report["image_id"], *ran["command"], check=False)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def stable_discard(fixture_set: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A ``discard_unpacked_layers`` root (CRI pull, forced GC) of an image whose layers are
    ctrconv's own deterministic tars, so regeneration reproduces them (``support/stable_discard.py``)."""
    import os
    import shutil

    if os.geteuid() != 0 or shutil.which("docker-registry") is None:
        pytest.skip("a CRI pull from a private registry needs root and docker-registry")
    from support import stable_discard as builder

    return builder.build(fixture_set, tmp_path_factory.mktemp("stable-discard"))


@pytest.mark.parametrize("fmt,how", LOADS, ids=LOAD_IDS)
def test_discarded_layers_regenerated_exactly_keep_the_image_id_in_podman(fmt, how, stable_discard, podman, cli,
                                                                          tmp_path):
    """(b') A discarded-layers image whose regenerated tars equal the originals (every diff ID
    reproduced): ctrconv says the image ID is unchanged, and podman holds it under that very
    ID, the pushed image's config digest, and runs it with its whiteouts and opaque directory."""
    out = _output(tmp_path, fmt)
    result = cli("export", "--root", str(stable_discard.root), "-n", "k8s.io", "--image", stable_discard.ref,
                 "-o", str(out), "--format", fmt, "--json")
    assert result.code == 0, result.stderr
    report = result.json["images"][0]
    assert report["regenerated_layers"] == len(stable_discard.layers) > 0, report
    assert report["image_id"] == report["original_image_id"] == stable_discard.image_id
    assert result.json["image_ids_changed"] == [] and f"image ID unchanged {stable_discard.image_id}" in result.stderr
    assert all(layer["matches_diff_id"] for c in result.json["rewritten"] for layer in c["layers"])
    # ctrconv's gzip is deterministic too: the very blobs, manifest and target come back
    assert report["original_digest"] is None and "manifest unchanged" in result.stderr, result.stderr
    assert _load(podman, out, fmt, how) == {stable_discard.image_id}
    run = podman.run(stable_discard.image_id, "/bin/busybox", "sh", "-c", RICH_CHECK, check=False)
    assert run.returncode == 0 and run.stdout.strip() == RICH_OUTPUT, (run.stdout, run.stderr)


@pytest.fixture(scope="module")
def committed_root(fixture_set: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped containerd root whose container ``writer`` (on ``bbx:oci``) wrote
    ``/data/written.txt`` and deleted ``/data/modify.txt`` (an overlayfs whiteout); built once."""
    from support.daemon import PrivateContainerd

    work = tmp_path_factory.mktemp("commit-source")
    root = work / "root"
    with PrivateContainerd(None, root, workdir=work) as source:
        source.ctr("images", "import", str(fixture_set.file(fixture_set.input("bbx-oci")["path"])), timeout=120)
        run = source.ctr("run", "docker.io/library/bbx:oci", "writer", "/bin/busybox", "sh", "-c",
                         "echo for-podman > /data/written.txt && rm /data/modify.txt", check=False, timeout=120)
        assert run.returncode == 0, run.stderr
    return root  # the daemon is stopped: the root is unlocked and kept


@pytest.mark.parametrize("fmt,how", LOADS, ids=LOAD_IDS)
def test_a_commit_loads_with_its_id_and_runs_with_the_containers_changes(fmt, how, committed_root, podman, cli,
                                                                          tmp_path):
    """(c) ``ctrconv commit`` of a stopped container: podman holds the new image under the ID
    ctrconv reports, and a container of it sees the written file, not the deleted one (the
    commit layer's whiteout), over the image's own layers."""
    out = _output(tmp_path, fmt)
    result = cli("commit", "--root", str(committed_root), "--container", "writer", "-o", str(out), "--format", fmt,
                 "--ref", "committed/bbx:podman", "--json")
    assert result.code == 0, result.stderr
    assert _load(podman, out, fmt, how) == {result.json["image_id"]}
    check = "test ! -e /data/modify.txt && test ! -e /data/remove-me && test -x /bin/busybox && cat /data/written.txt"
    run = podman.run(result.json["image_id"], "/bin/busybox", "sh", "-c", check, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "for-podman", (run.stdout, run.stderr)
