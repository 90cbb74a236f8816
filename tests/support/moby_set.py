"""A containerd root written by a real Docker on the containerd image store, built once and cached.

Recipe (per Docker line, :data:`support.moby.LINES`), from the fixture set of the matching
containerd line, with no network but a private ``docker-registry``:

1. ctrconv pushes ``bbx:uncompressed``, ``bbx:oci``, ``bbx:zstd``, ``bbx:docker`` to the registry;
2. Docker pulls ``bbx:uncompressed`` first, then ``bbx:oci`` and ``bbx:zstd``: their layers have
   the same diff IDs, so Docker finds the snapshots and never fetches those layer blobs (the
   state of issue 15: images that run but ``ctr images export`` cannot export);
3. ``docker load`` of a multi-platform OCI archive (``bbx:multi``, every platform present);
4. Docker pulls ``bbx:docker`` and then re-tags that name onto ``bbx:oci``: the old image becomes
   ``moby-dangling@sha256:...``, an unnamed image;
5. both daemons stop; ``moby.json`` records ``docker images`` (IDs Docker shows) and
   ``docker image inspect`` of each image.

The cache key hashes this file, :mod:`support.moby`, the fixture set path and the Docker
version, so editing the recipe rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from support.fixture_set import REPO, FixtureSet, build_once
from support.moby import MobyDocker
from support.registry import PrivateRegistry

#: Docker line -> containerd line of the same Debian suite.
CONTAINERD_LINE = {"26": "1.7", "28": "2.x"}
PULLED = ("uncompressed", "oci", "zstd", "docker")


@dataclass(frozen=True)
class MobySet:
    """A built moby root: ``root`` (stopped containerd root) and ``info`` (``moby.json``)."""

    path: Path

    @property
    def root(self) -> Path:
        return self.path / "root"

    @cached_property
    def info(self) -> dict[str, Any]:
        return json.loads((self.path / "moby.json").read_text())

    def image_ids(self) -> dict[str, str]:
        """Docker's image ID (``sha256:`` target digest) per name, dangling ones included."""
        return {row["name"]: row["id"] for row in self.info["images"]}


def _ctrconv(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "ctrconv", *args], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"ctrconv {' '.join(args)}: {result.stderr.strip()}")


def _record(docker: MobyDocker) -> dict[str, Any]:
    lines = docker.docker("images", "-a", "--no-trunc", "--format", "{{json .}}").stdout.splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    images = []
    for row in rows:
        named = row["Repository"] != "<none>"
        name = f"{row['Repository']}:{row['Tag']}" if named else row["ID"]
        images.append({"name": name, "id": row["ID"], "named": named})
    inspect = json.loads(docker.docker("image", "inspect", *sorted({r["id"] for r in images})).stdout)
    return {"images": images, "inspect": inspect}


def _build(staging: Path, label: str, fixtures: FixtureSet) -> None:
    staging.mkdir(parents=True)
    work = staging / "work"
    work.mkdir()
    multi = staging / "multi.tar"
    _ctrconv("export", "--root", str(fixtures.root), "--image", "docker.io/library/bbx:multi",
             "--all-platforms", "--format", "oci-tar", "-o", str(multi), "-q")
    with PrivateRegistry(workdir=work) as registry:
        for tag in PULLED:
            _ctrconv("export", "--root", str(fixtures.root), "--image", f"docker.io/library/bbx:{tag}",
                     "--to", f"{registry.host}/bbx:{tag}", "--plain-http", "-q")
        docker = MobyDocker(label, work, root=staging / "root")
        try:
            docker.start()
            for tag in PULLED:
                docker.docker("pull", "-q", f"{registry.host}/bbx:{tag}")
            docker.docker("load", "-i", str(multi))
            docker.docker("tag", f"{registry.host}/bbx:oci", f"{registry.host}/bbx:docker")
            info = {"docker": label, "version": docker.build.version, "registry": registry.host,
                    "containerd": docker.build.containerd.version, **_record(docker)}
            docker.stop()
        finally:
            docker.close()
    (staging / "moby.json").write_text(json.dumps(info, indent=1) + "\n")
    subprocess.run(["rm", "-rf", str(work)], check=True)


def cache_key(label: str, fixtures: FixtureSet, version: str) -> str:
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(__file__).with_name("moby.py")):
        digest.update(path.read_bytes())
    digest.update(f"{label}\0{fixtures.path}\0{version}".encode())
    return digest.hexdigest()[:16]


def get_moby_set(label: str, fixtures: FixtureSet) -> MobySet:
    """The cached moby root of Docker ``label`` built from ``fixtures`` (built on first use)."""
    sys.path.insert(0, str(REPO / "fixtures"))
    import docker_versions

    version = docker_versions.fetch(label).version
    path = build_once(REPO / ".cache" / "moby", cache_key(label, fixtures, version), "moby.json",
                      lambda staging: _build(staging, label, fixtures))
    return MobySet(path)
