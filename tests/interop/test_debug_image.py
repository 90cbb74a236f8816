"""The debug-container image (``scripts/build-debug-image``, :mod:`ctrconv.debugimage`).

Built by ctrconv's own writers from the standalone executable; a private containerd imports
it and runs ``ctrconv verify`` in a container against a bind-mounted copy of a fixture root,
with the same result as the installed package; the image written straight into a root by
the import writer runs too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from support.standalone import REPO, build_standalone, ldd_paths

SMALL_ROOT = REPO / "fixtures" / "small-root.tar.xz"
HOST_ROOT = "/host/var/lib/containerd"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the standalone executable is built for Linux")


@pytest.fixture(scope="module")
def standalone() -> dict:
    missing = [t for t in ("readelf", "objdump", "ldd") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (binutils, libc-bin)")
    return build_standalone()


@pytest.fixture(scope="module")
def image_tar(standalone: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The documented command, with the session's executable: an OCI tar and its facts."""
    out = tmp_path_factory.mktemp("debug-image") / "ctrconv-debug.tar"
    run = subprocess.run([str(REPO / "scripts" / "build-debug-image"), "--binary", standalone["cached"], "-o", str(out),
                          "--name", "registry.example/ops/ctrconv:test", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return out, json.loads(run.stdout)


def _package(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ctrconv", *args], capture_output=True, text=True, env=env, timeout=300)


def test_image_is_the_binary_and_its_libraries_on_an_empty_base(image_tar, standalone: dict, tmp_path: Path):
    tar_path, facts = image_tar
    assert _package("verify", "-i", str(tar_path)).returncode == 0
    with tarfile.open(tar_path) as outer:
        index = json.load(outer.extractfile("index.json"))
        entry = index["manifests"][0]
        assert entry["annotations"]["io.containerd.image.name"] == "registry.example/ops/ctrconv:test"
        blob = lambda digest: outer.extractfile("blobs/sha256/" + digest.split(":")[1])  # noqa: E731
        manifest = json.load(blob(entry["digest"]))
        config = json.load(blob(manifest["config"]["digest"]))
        assert len(manifest["layers"]) == 1
        with tarfile.open(fileobj=blob(manifest["layers"][0]["digest"]), mode="r:gz") as layer:
            members = {m.name: m for m in layer.getmembers()}
    files = sorted("/" + name for name, m in members.items() if m.isfile())
    assert files == sorted({"/usr/local/bin/ctrconv", *ldd_paths(Path(standalone["cached"]))})
    assert facts["files"] == files
    assert members["tmp"].isdir() and members["tmp"].mode & 0o7777 == 0o1777
    assert members["usr/local/bin/ctrconv"].size == Path(standalone["cached"]).stat().st_size
    labels = config["config"]["Labels"]
    from ctrconv import __version__

    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == "ctrconv"
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == revision
    assert manifest["annotations"] == labels
    assert config["config"]["Cmd"] == ["ctrconv", "--help"] and "Entrypoint" not in config["config"]
    assert config["rootfs"]["diff_ids"] == [facts["diff_id"]]


def test_same_inputs_give_the_same_digest(image_tar, standalone: dict, tmp_path: Path):
    from datetime import datetime, timezone

    from ctrconv.debugimage import build_debug_image

    _, facts = image_tar
    again = build_debug_image(standalone["cached"], tmp_path / "again.tar", name="registry.example/ops/ctrconv:test",
                              labels={k: v for k, v in facts["labels"].items() if k != "org.opencontainers.image.created"},
                              created=datetime.strptime(facts["labels"]["org.opencontainers.image.created"],
                                                        "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc))
    assert (again.digest, again.layer_digest) == (facts["digest"], facts["layer_digest"])


def _root_copy(dest: Path) -> Path:
    with tarfile.open(SMALL_ROOT) as tar:
        tar.extractall(dest, filter="fully_trusted")
    return dest / "small-root"


def _run(daemon, image: str, mount: Path, *command: str, namespace: str = "default") -> subprocess.CompletedProcess[str]:
    return daemon.ctr("run", "--rm", "--runc-root", str(daemon.runc_root),
                      "--mount", f"type=bind,src={mount},dst={HOST_ROOT},options=rbind:ro",
                      image, f"ctrconv-debug-{uuid.uuid4().hex[:8]}", *command,
                      namespace=namespace, check=False, timeout=300)


def test_containerd_imports_it_and_verify_runs_in_it(image_tar, private_containerd, tmp_path: Path):
    tar_path, facts = image_tar
    daemon = private_containerd()
    daemon.ctr("images", "import", str(tar_path))
    assert "registry.example/ops/ctrconv:test" in daemon.image_names()
    rows = daemon.images_check()
    assert all(r.complete for r in rows), rows
    image = "registry.example/ops/ctrconv:test"

    clean = _root_copy(tmp_path / "clean")
    inside = _run(daemon, image, clean, "ctrconv", "verify", "--root", HOST_ROOT, "-A")
    outside = _package("verify", "--root", str(clean), "-A")
    assert inside.returncode == 0, inside.stderr + inside.stdout
    assert inside.stdout == outside.stdout and inside.stdout.startswith("clean: no problems")
    listed = _run(daemon, image, clean, "ctrconv", "ls", "--root", HOST_ROOT, "-A", "--json")
    assert json.loads(listed.stdout) == json.loads(_package("ls", "--root", str(clean), "-A", "--json").stdout)

    # a damaged copy: a blob overwritten; the container finds what the package finds (exit 1)
    damaged = _root_copy(tmp_path / "damaged")
    blob = sorted((damaged / "io.containerd.content.v1.content" / "blobs" / "sha256").iterdir())[-1]
    blob.write_bytes(b"damaged")
    inside = _run(daemon, image, damaged, "ctrconv", "verify", "--root", HOST_ROOT, "-A", "--json")
    outside = _package("verify", "--root", str(damaged), "-A", "--json")
    assert inside.returncode == outside.returncode == 1, inside.stderr
    mine, theirs = json.loads(inside.stdout), json.loads(outside.stdout)
    normalise = lambda doc: json.loads(json.dumps(doc).replace(str(damaged), HOST_ROOT))  # noqa: E731
    assert normalise(theirs) == mine and mine["problems"]

    # read-only for real: the container cannot write the node's root
    refused = _run(daemon, image, clean, "ctrconv", "rebuild", "--root", HOST_ROOT)
    assert refused.returncode != 0 and "ctrconv: error:" in refused.stderr + refused.stdout


def test_written_into_a_root_it_runs_there(standalone: dict, private_containerd, tmp_path: Path):
    """``--format containerd-root``: the import writer puts the image (unpacked) into a root
    that containerd then starts on, and the container runs."""
    root = tmp_path / "node-root"
    run = subprocess.run([str(REPO / "scripts" / "build-debug-image"), "--binary", standalone["cached"],
                          "--format", "containerd-root", "-o", str(root), "-n", "k8s.io", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    facts = json.loads(run.stdout)
    assert facts["imported"]["images"][0]["unpacked"] == facts["diff_id"]
    daemon = private_containerd(root=root)
    rows = daemon.images_check("k8s.io")
    # in k8s.io the names a CRI pull records: repo:tag, repo@digest, sha256:<image id>
    assert sorted(r.ref for r in rows) == sorted(facts["imported"]["images"][0]["names"])
    assert facts["name"] in [r.ref for r in rows] and all(r.complete and r.unpacked for r in rows), rows
    fixture = _root_copy(tmp_path / "fixture")
    version = _run(daemon, facts["name"], fixture, "ctrconv", "--version", namespace="k8s.io")
    from ctrconv import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"ctrconv {__version__}", version.stderr
    verify = _run(daemon, facts["name"], fixture, "ctrconv", "verify", "--root", HOST_ROOT, "-A", namespace="k8s.io")
    assert verify.returncode == 0 and verify.stdout.startswith("clean: no problems"), verify.stderr
