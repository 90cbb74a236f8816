"""A private Docker Engine on the containerd image store (namespace ``moby``), for interop tests.

:func:`fixtures/docker_versions.fetch` gives Docker 26.x (trixie) or 28.x (sid) and the
containerd line of the same suite (1.7 / 2.x). :class:`MobyDocker` runs that containerd
(:class:`support.daemon.PrivateContainerd`, its root kept where the caller says, so ctrconv can
read it offline after :meth:`MobyDocker.stop`) and a dockerd pointed at it with ``--containerd``
and ``"features": {"containerd-snapshotter": true}``: every image Docker pulls or loads is a
containerd image in namespace ``moby``. Data root, exec root, pid file and sockets are private;
no iptables, no bridge, no network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from support.daemon import DaemonError, PrivateContainerd, StartedService
from support.dockerd import PrivateDockerd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
import docker_versions  # noqa: E402
from containerd_versions import FetchError  # noqa: E402

NAMESPACE = "moby"
LINES = tuple(docker_versions.RELEASES)


def skip_reason(label: str) -> str | None:
    """Why Docker ``label`` on the containerd store cannot run here, or None (fetches it)."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    try:
        docker_versions.fetch(label)
    except FetchError as exc:
        return f"Docker {label} unavailable: {exc}"
    return None


class MobyDocker(StartedService):
    """Private containerd + dockerd on the containerd store; :attr:`root` is containerd's root.

    ``docker(...)`` runs the CLI of the same build. :meth:`stop` stops both (bolt files closed
    and unlocked) and keeps the root; :meth:`close` also removes everything.
    """

    def __init__(self, label: str, workdir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
                 *, start_timeout: float = 90.0) -> None:
        self.build = docker_versions.fetch(label)
        bin_dir = self.build.containerd.bin_dir
        self.containerd = PrivateContainerd(bin_dir, root, workdir=workdir)
        self.root = self.containerd.root
        self.dockerd = PrivateDockerd(
            workdir, start_timeout, dockerd=self.build.dockerd, client=self.build.docker,
            config={"features": {"containerd-snapshotter": True}},
            extra_args=("--containerd", self.containerd.address, "--containerd-namespace", NAMESPACE,
                        "--containerd-plugins-namespace", "plugins.moby", "--userland-proxy=false"),
            path_prefix=(bin_dir, self.build.dockerd.parent, self.build.docker.parent),
            storage_driver=None,
        )

    def start(self) -> "MobyDocker":
        self.containerd.start()
        try:
            self.dockerd.start()
        except DaemonError:
            self.containerd.stop()
            raise
        return self

    def docker(self, *args: str, check: bool = True, timeout: float = 300):  # type: ignore[no-untyped-def]
        """The docker CLI against this engine (a :class:`subprocess.CompletedProcess`)."""
        return self.dockerd.docker(*args, check=check, timeout=timeout)

    def stop(self) -> None:
        """Stop dockerd then containerd, so the root can be read offline."""
        self.dockerd.stop()
        self.containerd.stop()

    def close(self) -> None:
        self.dockerd.close()
        self.containerd.close()

