"""A throwaway containerd daemon for interop tests and fixture builds.

Every instance gets its own config, state dir and socket under a fresh temp dir, so it never
touches the system daemon (``/var/lib/containerd``, ``/run/containerd``). The root is either a
temp dir too or a caller-supplied directory (for example one that ctrconv just wrote), which is
how tests check that a real containerd accepts what ctrconv produced.

Stopping is SIGTERM + wait: containerd then closes both bolt files, so their flocks are released
and the root can be read offline or copied.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

#: Plugins that need host setup we do not want (CRI wants CNI/runc config and creates the
#: ``sha256:`` image aliases in k8s.io; the others probe special filesystems or write to /opt).
DISABLED_PLUGINS: tuple[str, ...] = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.nri.v1.nri",
)

#: The CRI plugins (1.6/1.7: one; 2.x: images + runtime + the grpc service). ``cri=True``
#: enables them; the rest of :data:`DISABLED_PLUGINS` stays disabled.
CRI_PLUGINS: tuple[str, ...] = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
)

#: META_DB and the snapshotter database, relative to a containerd root.
META_DB = Path("io.containerd.metadata.v1.bolt/meta.db")
OVERLAY_DB = Path("io.containerd.snapshotter.v1.overlayfs/metadata.db")


class DaemonError(RuntimeError):
    """containerd failed to start, or a ``ctr`` command failed (message carries stderr)."""


@dataclass(frozen=True)
class CheckRow:
    """One row of ``ctr images check``."""

    ref: str
    media_type: str
    digest: str
    status: str
    size: str
    unpacked: bool

    @property
    def complete(self) -> bool:
        """True when ``ctr`` found every blob of the image (status ``complete (n/n)``)."""
        return self.status.startswith("complete")


def _process_table(cmdline: bool) -> dict[int, object]:
    """``{pid: argv}`` (``cmdline=True``) or ``{pid: ppid}`` of every process in /proc."""
    table: dict[int, object] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if cmdline:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    table[int(entry)] = [a.decode(errors="replace")
                                         for a in fh.read().split(b"\0") if a]
            else:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read()
                table[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
    return table


def _arg_after(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg in (flag, "-" + flag):
            return argv[i + 1]
    return None


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] != b"Z"


def _listening_sockets(pids: list[int]) -> list[str]:
    """Paths of the unix sockets that ``pids`` hold open (from ``/proc/net/unix``)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    paths = []
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return paths
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes and fields[7].startswith("/"):
            paths.append(fields[7])
    return sorted(set(paths))


def _cgroup_dirs(pid: int) -> list[str]:
    """The cgroup directories of ``pid`` below ``/sys/fs/cgroup`` (v1 and v2), root excluded."""
    out = []
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _hid, controllers, path = line.split(":", 2)
        if path in ("", "/"):
            continue
        if controllers == "":
            base = "/sys/fs/cgroup/unified"
            base = base if os.path.isdir(base) else "/sys/fs/cgroup"
            out.append(base + path)
            continue
        for name in controllers.split(","):
            name = name.removeprefix("name=")
            if os.path.isdir(f"/sys/fs/cgroup/{name}"):
                out.append(f"/sys/fs/cgroup/{name}{path}")
    return out


def _mounts_under(dirs: tuple[Path, ...]) -> list[str]:
    """Mount points (from /proc/self/mountinfo) at or below any of ``dirs``."""
    prefixes = [str(Path(d).resolve()) for d in dirs]
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return found


def find_binary(name: str, binary_dir: str | os.PathLike[str] | None) -> Path:
    """Locate ``containerd``/``ctr`` in ``binary_dir`` or on PATH."""
    if binary_dir is not None:
        path = Path(binary_dir) / name
        if not os.access(path, os.X_OK):
            raise DaemonError(f"{path} is not an executable")
        return path
    found = shutil.which(name)
    if found is None:
        raise DaemonError(f"{name} not found on PATH")
    return Path(found)


def containerd_version(binary_dir: str | os.PathLike[str] | None = None) -> str:
    """The version word of ``containerd --version`` (e.g. ``1.6.20~ds1``)."""
    out = subprocess.run(
        [str(find_binary("containerd", binary_dir)), "--version"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return out[2] if len(out) >= 3 else " ".join(out)


def parse_table(text: str) -> list[dict[str, str]]:
    """Split ``ctr``'s tabwriter output into dicts keyed by header names.

    Cells may contain single spaces (``complete (3/3)``), so columns are cut at the header's
    start offsets rather than split on whitespace; tabwriter pads every cell to those offsets.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = []
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(line)
            cells.append(line[start:end].strip())
        rows.append(dict(zip(names, cells)))
    return rows


#: Longest socket path any containerd accepts (macOS-style limit that containerd checks).
MAX_SOCKET_PATH = 104


def short_socket_dir() -> Path:
    """A fresh private directory whose ``c.sock.ttrpc`` path fits containerd's limit.

    Uses the temp dir when its path is short enough, else ``/tmp`` (``TMPDIR`` or a deep checkout
    would otherwise push the socket past the limit and the daemon would refuse to start).
    """
    longest_name = len("/ctrd-XXXXXXXX/c.sock.ttrpc")
    for parent in (tempfile.gettempdir(), "/tmp"):
        if len(parent) + longest_name <= MAX_SOCKET_PATH and os.path.isdir(parent):
            return Path(tempfile.mkdtemp(prefix="ctrd-", dir=parent))
    raise DaemonError("no temp directory short enough for a unix socket path")


def terminate(proc: "subprocess.Popen[bytes] | None", timeout: float) -> bool:
    """SIGTERM a daemon started in its own session and wait; after ``timeout`` SIGKILL its
    whole process group. False when it had to be killed."""
    if proc is None or proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False


def complete_tar(path: str | os.PathLike[str]) -> bool:
    """Every member readable to its end, and index.json present."""
    import tarfile

    try:
        with tarfile.open(path) as tar:
            names = set()
            for member in tar:
                names.add(member.name)
                if member.isfile():
                    fh = tar.extractfile(member)
                    while fh is not None and fh.read(1 << 20):
                        pass
            return "index.json" in names
    except (tarfile.TarError, OSError):
        return False


class StartedService:
    """A private daemon as a context manager: ``with X(...) as x`` starts it and always closes
    it, also when the start itself fails half-way (subclasses define start and close)."""

    def start(self) -> Self:  # pragma: no cover - defined by each service
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - defined by each service
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PrivateContainerd(StartedService):
    """Context manager running one containerd with private root/state/socket.

    Args:
        binary_dir: directory holding ``containerd`` and ``ctr`` (default: PATH), so other
            versions (1.7, 2.x unpacked with ``dpkg -x``) can be tested.
        root: containerd root to use; created if missing, kept on exit. Default: a temp dir that
            is removed on exit.
        workdir: parent for the temp dir holding config, state and log. The sockets get a
            short directory of their own (see :func:`short_socket_dir`), because a unix socket
            path must fit in 104-108 bytes and a checkout may live anywhere.
        start_timeout: seconds to wait for the socket to answer.
        cri: also run the CRI plugin (default off, as for every other test). Its registry
            ``config_path`` is :attr:`hosts_dir` (empty until :meth:`add_plain_http_registry`),
            its CNI dirs are private empty dirs (the image service needs no network), and its
            own state lives under the daemon's root/state. 2.x migrates the version-2 config
            (``io.containerd.grpc.v1.cri`` settings move to ``io.containerd.cri.v1.images``).
        discard_unpacked_layers: with ``cri``, set CRI's ``discard_unpacked_layers = true``
            (EKS AMIs, GKE >= 1.27): CRI pulls label a manifest for its config only, so GC
            deletes the layer blobs of unpacked images. Written where each line reads it:
            1.6/1.7 ``[plugins."io.containerd.grpc.v1.cri".containerd]``, 2.x
            ``[plugins."io.containerd.cri.v1.images"]`` (2.x's migration of a version-2 config
            drops the 1.x key when the config has no ``containerd.runtimes`` table, as ours).
            Default off: the config is then exactly as without the parameter.
    """

    def __init__(
        self,
        binary_dir: str | os.PathLike[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        cri: bool = False,
        discard_unpacked_layers: bool = False,
    ) -> None:
        if discard_unpacked_layers and not cri:
            raise ValueError("discard_unpacked_layers is a CRI setting: it needs cri=True")
        self.cri = cri
        self.discard_unpacked_layers = discard_unpacked_layers
        self.containerd = find_binary("containerd", binary_dir)
        self.ctr_bin = find_binary("ctr", binary_dir)
        self._tmp = Path(tempfile.mkdtemp(prefix="ctrd-", dir=workdir))
        self._own_root = root is None
        self.root = Path(root) if root is not None else self._tmp / "root"
        self.state = self._tmp / "state"
        self._sock_dir = short_socket_dir()
        self.address = str(self._sock_dir / "c.sock")
        self.config_path = self._tmp / "config.toml"
        self.log_path = self._tmp / "containerd.log"
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        #: Registry hosts dir (``<host>/hosts.toml``) used as CRI's ``config_path``.
        self.hosts_dir = self._tmp / "certs.d"
        #: runc state root for tasks started through :meth:`ctr` with ``--runc-root``
        #: (keeps them out of the system's ``/run/containerd/runc``).
        self.runc_root = self.state / "runc"

    # -- lifecycle --------------------------------------------------------------------------

    def _write_config(self) -> None:
        plugins = DISABLED_PLUGINS
        if self.cri:
            plugins = tuple(p for p in DISABLED_PLUGINS if p not in CRI_PLUGINS)
        disabled = ", ".join(f'"{p}"' for p in plugins)
        self.config_path.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            f"disabled_plugins = [{disabled}]\n"
            "[grpc]\n"
            f'  address = "{self.address}"\n'
            "[ttrpc]\n"
            f'  address = "{self.address}.ttrpc"\n'
            "[debug]\n"
            '  address = ""\n'
            '  level = "info"\n'
            "[metrics]\n"
            '  address = ""\n'
            + (self._cri_config() if self.cri else "")
        )

    def _cri_config(self) -> str:
        """CRI plugin settings (version-2 form; 2.x migrates them on start)."""
        cni = self._tmp / "cni"
        for sub in ("bin", "conf"):
            (cni / sub).mkdir(parents=True, exist_ok=True)
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        return (
            '[plugins."io.containerd.grpc.v1.cri"]\n'
            '  stream_server_address = "127.0.0.1"\n'
            '  stream_server_port = "0"\n'
            '[plugins."io.containerd.grpc.v1.cri".cni]\n'
            f'  bin_dir = "{cni / "bin"}"\n'
            f'  conf_dir = "{cni / "conf"}"\n'
            '[plugins."io.containerd.grpc.v1.cri".registry]\n'
            f'  config_path = "{self.hosts_dir}"\n'
            + (self._discard_config() if self.discard_unpacked_layers else "")
        )

    @staticmethod
    def _discard_config() -> str:
        """``discard_unpacked_layers = true`` for every line: 1.6/1.7 read the first table
        (2.x would drop it in migration here), 2.x the second (1.6/1.7 ignore a table of a
        plugin they do not have)."""
        return (
            '[plugins."io.containerd.grpc.v1.cri".containerd]\n'
            "  discard_unpacked_layers = true\n"
            '[plugins."io.containerd.cri.v1.images"]\n'
            "  discard_unpacked_layers = true\n"
        )

    def config_dump(self) -> str:
        """``containerd config dump`` of this daemon's config: what it really runs with, after
        its version's migration and defaults (written first if the daemon never started)."""
        if not self.config_path.exists():
            self._write_config()
        return subprocess.run(
            [str(self.containerd), "--config", str(self.config_path), "config", "dump"],
            capture_output=True, text=True, check=True, timeout=60, stdin=subprocess.DEVNULL,
        ).stdout

    def add_plain_http_registry(self, host: str) -> Path:
        """Write ``hosts_dir/<host>/hosts.toml`` sending pulls of ``host`` to plain HTTP.

        Read by CRI (``config_path``) at each pull, so it may be written before or after start;
        ``ctr`` can use the same dir with ``--hosts-dir``.
        """
        path = self.hosts_dir / host / "hosts.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'server = "http://{host}"\n\n'
            f'[host."http://{host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
        return path

    def start(self) -> "PrivateContainerd":
        """Start the daemon and wait until ``ctr version`` answers."""
        if self._proc is not None:
            raise DaemonError("daemon already running")
        self.root.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self._write_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.containerd), "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise DaemonError(f"containerd exited with {code}:\n{self.log_tail()}")
            if os.path.exists(self.address):
                probe = self._run_ctr(["version"], namespace="default")
                if probe.returncode == 0:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonError(f"containerd did not answer in {self.start_timeout}s:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait, so both bolt files are closed and unlocked."""
        proc, self._proc = self._proc, None
        if not terminate(proc, timeout):
            raise DaemonError(f"containerd ignored SIGTERM for {timeout}s; killed")

    def kill(self) -> None:
        """SIGKILL the daemon (a crash: bolt files are left as the kill found them), then
        :meth:`reap_leftovers`, so no shim, container process, mount or cgroup outlives it and
        the root is offline and unlocked."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.reap_leftovers()

    def shim_pids(self) -> list[int]:
        """Pids of the shims serving this daemon (their ``-address`` is our socket)."""
        pids = []
        for pid, argv in _process_table(cmdline=True).items():
            if argv and "containerd-shim" in os.path.basename(argv[0]) and \
                    _arg_after(argv, "-address") == self.address:
                pids.append(pid)
        return pids

    def reap_leftovers(self, timeout: float = 10.0) -> None:
        """Kill this daemon's shims and their container processes, remove the shims' socket
        files and the containers' cgroups, and unmount everything mounted under its state dir
        or root.

        Only processes found through our socket address (shims) and their descendants are
        touched. Meant for a daemon that is already dead (see :meth:`kill`).
        """
        shims = self.shim_pids()
        sockets = _listening_sockets(shims)
        parents = _process_table(cmdline=False)
        victims: list[int] = []
        frontier = list(shims)
        while frontier:
            pid = frontier.pop()
            children = [c for c, ppid in parents.items() if ppid == pid]
            victims.extend(children)
            frontier.extend(children)
        cgroups = {cg for pid in victims for cg in _cgroup_dirs(pid)}
        for pid in victims + shims:  # containers first, then the shims
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in victims + shims) and time.monotonic() < deadline:
            time.sleep(0.05)
        for path in sockets:  # a killed shim leaves its socket (1.6: /run/containerd/s/<hash>)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass
        for cg in sorted(cgroups, key=len, reverse=True):
            try:
                os.rmdir(cg)
            except OSError:
                pass
        for target in sorted(_mounts_under((self.state, self.root)), key=len, reverse=True):
            if subprocess.run(["umount", target], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", target], capture_output=True)

    def close(self) -> None:
        """Stop and remove the temp dir (and the root if it was ours)."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)
        shutil.rmtree(self._sock_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the daemon log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- ctr --------------------------------------------------------------------------------

    def _run_ctr(
        self, args: list[str], *, namespace: str, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.ctr_bin), "--address", self.address, "--namespace", namespace, *args],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    #: ``ctr run`` flags after which the task's output is not ctr's to read back
    _RUN_WITHOUT_OUTPUT = ("-d", "--detach", "--null-io", "-t", "--tty")

    def ctr(
        self, *args: str, namespace: str = "default", check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this daemon; raise DaemonError with stderr unless ``check=False``.

        A foreground ``ctr run`` hands back what the task printed (stdout and stderr, in order)
        as ``stdout``, read from a file the shim writes (``--log-uri file://``) rather than from
        ctr's own FIFO copy: on 1.7 and 2.x, ``ctr run`` deletes the task as soon as it exits,
        and ``Task.Delete`` cancels the client's IO, which since containerd PR 8334 closes the
        FIFO readers; output the copy goroutine had not drained yet is lost (seen as an empty
        ``ctr run`` output under load). The shim finishes copying into the file before its
        delete returns.
        """
        if not self.running:
            raise DaemonError("daemon is not running")
        argv = [str(a) for a in args]
        if argv[:1] == ["run"] and "--rm" in argv and not any(a.startswith("--runc-root") for a in argv):
            # a task's runc state lives under ``<runc root>/<namespace>/<id>``, by default the
            # machine's ``/run/containerd/runc``: two daemons (a test session and another beside
            # it) running a task of one name in one namespace met there, and one failed with
            # "cannot start a container that has stopped" (24 of 30 runs of two daemons side by
            # side). A throwaway ``run --rm`` keeps it in this daemon's state dir (a container
            # kept for later keeps the default, as nodes do). The cgroup path (``/<ns>/<id>``)
            # is still the machine's: side by side, 1 run in ~150 met there.
            argv = ["run", "--runc-root", str(self.runc_root), *argv[1:]]
        if argv[:1] == ["run"] and not any(a in self._RUN_WITHOUT_OUTPUT or a.startswith("--log-uri") for a in argv):
            return self._ctr_run(argv, namespace=namespace, check=check, timeout=timeout)
        res = self._run_ctr(argv, namespace=namespace, timeout=timeout)
        if check and res.returncode != 0:
            raise DaemonError(
                f"ctr -n {namespace} {' '.join(args)} failed ({res.returncode}): "
                f"{res.stderr.strip()}"
            )
        return res

    def _ctr_run(self, argv: list[str], *, namespace: str, check: bool, timeout: float) -> subprocess.CompletedProcess[str]:
        """``ctr run`` whose task output goes to a file (see :meth:`ctr`), returned as stdout."""
        logs = self._tmp / "task-logs"
        logs.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=logs, suffix=".log")
        os.close(fd)
        log = Path(name)
        try:
            res = self._run_ctr(["run", f"--log-uri=file://{log}", *argv[1:]], namespace=namespace, timeout=timeout)
            res.stdout = res.stdout + log.read_text(errors="replace")
        finally:
            log.unlink(missing_ok=True)
        if check and res.returncode != 0:
            raise DaemonError(f"ctr -n {namespace} {' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def force_gc(self, namespace: str = "default") -> None:
        """Make the daemon collect garbage now: deleting a lease with ``--sync`` waits for GC."""
        lease = self.ctr("leases", "create", namespace=namespace).stdout.strip().split()[0]
        self.ctr("leases", "delete", "--sync", lease, namespace=namespace)

    #: attempts at one export: 2.x's ctr streams the archive from the transfer service and
    #: sometimes exits 0 before the file is complete (seen: a 2560-byte tar of a 7 KiB image)
    EXPORT_ATTEMPTS = 8

    def export(self, out: str | os.PathLike[str], *refs: str, args: tuple[str, ...] = (),
               namespace: str = "default", check: bool = True) -> str | None:
        """``ctr images export`` until two runs in a row give the same bytes and a readable tar,
        so a truncated stream is never kept. Returns ctr's error text when it fails and
        ``check`` is False (raises DaemonError otherwise)."""
        path = Path(out)
        previous = None
        for _attempt in range(self.EXPORT_ATTEMPTS):
            path.unlink(missing_ok=True)
            res = self.ctr("images", "export", *args, str(path), *refs, namespace=namespace,
                           timeout=300, check=check)
            if res.returncode != 0:
                path.unlink(missing_ok=True)
                return res.stderr.strip() or f"exit {res.returncode}"
            data = path.read_bytes()
            if data == previous and complete_tar(path):
                return None
            previous = data
        raise DaemonError(f"ctr -n {namespace} images export {' '.join(refs)} gave no stable archive "
                          f"in {self.EXPORT_ATTEMPTS} runs")

    def images_check(self, namespace: str = "default") -> list[CheckRow]:
        """Parse ``ctr images check`` (REF TYPE DIGEST STATUS SIZE UNPACKED)."""
        out = self.ctr("images", "check", namespace=namespace).stdout
        return [
            CheckRow(
                ref=row["REF"], media_type=row["TYPE"], digest=row["DIGEST"],
                status=row["STATUS"], size=row["SIZE"], unpacked=row["UNPACKED"] == "true",
            )
            for row in parse_table(out)
        ]

    def image_names(self, namespace: str = "default") -> list[str]:
        """Names from ``ctr images ls -q``."""
        out = self.ctr("images", "ls", "-q", namespace=namespace).stdout
        return [line for line in out.splitlines() if line]

    def namespaces(self) -> list[str]:
        """Names from ``ctr namespaces ls -q``."""
        out = self.ctr("namespaces", "ls", "-q").stdout
        return [line for line in out.splitlines() if line]
