"""Helpers shared by the benchmark scripts: timing with honest peak RSS, result tables, images.

Peak RSS: every measured command runs under GNU ``/usr/bin/time -f %M``. ``time`` is a small C
program that forks and execs the command, so the child's ``ru_maxrss`` starts from ``time``'s
own ~2 MiB and not from this Python process (which a ``posix_spawn``/vfork child would inherit
as its high-water mark). Wall time is measured here around the whole ``time`` process (its
own overhead is about a millisecond).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from support.daemon import PrivateContainerd, containerd_version  # noqa: E402,F401
# the same small blobs and layers the scale tests build roots from
from support.scale_root import put_blob, tiny_layer  # noqa: E402,F401

GNU_TIME = "/usr/bin/time"
CHUNK = 1 << 20

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


# -- running and timing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One measured command: wall seconds, peak RSS (KiB) of the command itself, and its CPU
    seconds (user + system, waited-for children included) when measured."""

    wall: float
    rss_kib: int
    cpu: float | None = None


def ctrconv_env() -> dict[str, str]:
    """The environment for ``python -m ctrconv`` from this checkout (bytecode compiled first)."""
    precompile()
    return {**os.environ, "PYTHONPATH": str(REPO)}


def precompile() -> None:
    """Write the checkout's ``.pyc`` files, as ``pip install`` does for an installed package.

    With ``PYTHONDONTWRITEBYTECODE`` set (it is, on this workplace's machines) an editable
    checkout is otherwise compiled from source on every run: ~40 ms of every command's start-up
    that no installed ctrconv pays. The stored code of dataclass methods too
    (:mod:`ctrconv.codecache`), which an installed ctrconv writes on its first run.
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "ctrconv")], check=True)
    subprocess.run([sys.executable, "-m", "ctrconv.codecache"], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def ctrconv(*args: str) -> list[str]:
    """Command line for ``ctrconv ARGS`` run from this checkout with this interpreter."""
    return [sys.executable, "-m", "ctrconv", *args]


def timed(cmd: Sequence[str], env: dict[str, str] | None = None, *, ok_codes: Iterable[int] = (0,),
          stdout: str | os.PathLike[str] = os.devnull) -> Run:
    """Run ``cmd`` once under ``/usr/bin/time``; fail loudly on an unexpected exit code."""
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} (GNU time) is needed to measure peak RSS: apt-get install time")
    fd, rss_name = tempfile.mkstemp(prefix="bench-rss-")
    os.close(fd)
    with open(stdout, "wb") as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "%M %U %S", "-o", rss_name, "--", *cmd], env=env,
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        wall = time.perf_counter() - start
        err.seek(0)
        err_text = err.read().decode(errors="replace")
    rss_text = Path(rss_name).read_text()
    os.unlink(rss_name)
    if proc.returncode not in tuple(ok_codes):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err_text[-3000:]}\n{rss_text}")
    # GNU time writes "Command exited with non-zero status N" before the format line then.
    rss, user, system = rss_text.strip().splitlines()[-1].split()
    return Run(wall, int(rss), float(user) + float(system))


def shell(script: str) -> list[str]:
    """``bash -c SCRIPT`` with pipefail, for floors built from pipes and globs."""
    return ["bash", "-o", "pipefail", "-c", script]


def drop_caches() -> bool:
    """Write back dirty pages and drop the page cache; False when the kernel refuses."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def settle(cold: bool) -> bool:
    """Between cases: always ``sync`` (so nobody pays for the previous case's writeback);
    drop the page cache too when ``cold``. Returns whether the cache really was dropped."""
    os.sync()
    return drop_caches() if cold else False


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def vm_hwm_kib(pid: int | None) -> int | None:
    """Peak RSS so far of a running process (``VmHWM``), e.g. the containerd daemon."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- results ---------------------------------------------------------------------------------


@dataclass
class Results:
    """Runs per case, printed as a table of medians and ratios to a reference case."""

    runs: dict[str, list[Run]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, case: str, run: Run) -> None:
        self.runs.setdefault(case, []).append(run)

    def median(self, case: str) -> float:
        return statistics.median(r.wall for r in self.runs[case])

    def cpu_median(self, case: str) -> float | None:
        """Median user + system CPU seconds, when every run of the case measured it."""
        cpus = [r.cpu for r in self.runs[case]]
        return None if any(c is None for c in cpus) else statistics.median(cpus)  # type: ignore[type-var]

    def peak_rss_mib(self, case: str) -> float:
        return max(r.rss_kib for r in self.runs[case]) / 1024

    def table(self, *, ref: dict[str, str] | str, size_bytes: int | None = None) -> str:
        """Rows of median/min seconds, MiB/s (when ``size_bytes``), ratio to the reference case
        (``ref``: one case name, or a per-case mapping), peak RSS and notes."""
        width = max(len(c) for c in self.runs) + 1
        head = f"{'case':{width}} {'median s':>9} {'min s':>7}"
        if size_bytes:
            head += f" {'MiB/s':>7}"
        head += f" {'ratio':>14} {'peak RSS':>10}  note"
        lines = [head]
        for case, runs in self.runs.items():
            walls = [r.wall for r in runs]
            med = statistics.median(walls)
            line = f"{case:{width}} {med:9.3f} {min(walls):7.3f}"
            if size_bytes:
                line += f" {size_bytes / 2**20 / med:7.0f}"
            against = ref if isinstance(ref, str) else ref.get(case)
            if against and against in self.runs and against != case:
                ratio = f"{med / self.median(against):.2f}x {_short(against)}"
            else:
                ratio = "1.00x" if against == case else "-"
            line += f" {ratio:>14} {self.peak_rss_mib(case):6.1f} MiB"
            if case in self.notes:
                line += f"  {self.notes[case]}"
            lines.append(line.rstrip())
        return "\n".join(lines)


def _short(case: str) -> str:
    return "ctr" if case.startswith("ctr ") else case.split()[0]


def machine_facts(path: Path) -> str:
    """One line: date, CPUs, RAM, the disk under ``path``, containerd and Python versions, and
    the load average (other work on a shared machine makes every number noisier)."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{time.strftime('%Y-%m-%d %H:%M')} | {os.cpu_count()} CPUs ({cpu}) | {mem_gib:.0f} GiB RAM | "
            f"disk: {_disk(path)} | containerd {containerd_version()} | Python {platform.python_version()} | "
            f"load avg {' '.join(f'{x:.1f}' for x in os.getloadavg())} | core speed {core_speed():.2f} s")


def core_speed() -> float:
    """Seconds one core takes for a fixed pure-Python workload (a loop and JSON parsing, as
    ctrconv's listing does), best of three: a shared VM's cores are not as fast at every hour
    (the same workload took 0.52 s and 0.87 s on this VM an hour apart), so a time measured in
    one run is only comparable with another taken at a similar core speed."""
    workload = ("s = 0\nfor i in range(3 * 10**6): s += i\n"
                "d = json.dumps([{'a': i, 'b': 'x' * 20} for i in range(20000)])\n"
                "for _ in range(20): json.loads(d)\n")
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        exec(workload, {"json": json})  # noqa: S102 - a fixed workload written above
        best = min(best, time.process_time() - started)
    return best


def _disk(path: Path) -> str:
    """Device, rotational flag and filesystem type under ``path`` (best effort)."""
    try:
        out = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", str(path)],
                             capture_output=True, text=True, check=True).stdout.split()
        source, fstype = out[0], out[1]
        dev = Path(source).name
        rot = Path(f"/sys/class/block/{dev}/queue/rotational")
        kind = {"0": "non-rotational", "1": "rotational"}.get(rot.read_text().strip(), "?") if rot.exists() else "?"
        return f"{source} {fstype} ({kind}{', virtio' if dev.startswith('vd') else ''})"
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def scratch(prefix: str, parent: Path | None) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent or "/var/tmp"))


# -- images ----------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def move_blob(blob_dir: Path, path: Path) -> dict:
    """Move the file at ``path`` into ``blob_dir`` under its digest."""
    hexd = sha256_file(path)
    size = path.stat().st_size
    os.replace(path, blob_dir / hexd)
    return {"digest": f"sha256:{hexd}", "size": size}


def config_json(diff_ids: list[str], arch: str | None = None, extra: dict | None = None) -> bytes:
    config = {"architecture": arch or goarch(), "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, **(extra or {})}
    return json.dumps(config, separators=(",", ":")).encode()


def oci_archive(work: Path, name: str, layers: list[tuple[Path, str, str]]) -> Path:
    """An OCI layout tar holding one image ``name`` with the given layer files.

    ``layers``: (file, media type, diff_id); the files are moved into the layout and the layout
    directory is deleted once the tar is written. Both name annotations are set, like
    ``ctr images export``, so ``ctr images import`` and ``ctrconv import`` name it alike.
    """
    layout = work / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descs = [{"mediaType": mtype, **move_blob(blobs, path)} for path, mtype, _ in layers]
    config = {"mediaType": MT_CONFIG, **put_blob(blobs, config_json([d for _, _, d in layers]))}
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config, "layers": descs}
    tag = name.rsplit(":", 1)[-1]
    manifest_desc = {"mediaType": MT_MANIFEST, **put_blob(blobs, json.dumps(manifest).encode()),
                     "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    archive = work / "image.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(layout), "."], check=True)
    shutil.rmtree(layout)
    return archive


def gzip_layer(dirs: Sequence[str], path: Path) -> tuple[str, int]:
    """``tar cf - -C / DIRS | pigz -1 > path``, hashing the tar on the way: (diff_id, tar bytes)."""
    with open(path, "wb") as out:
        tar = subprocess.Popen(["tar", "cf", "-", "-C", "/", *dirs], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        gz = subprocess.Popen(["pigz", "-1", "-c"], stdin=subprocess.PIPE, stdout=out)
        assert tar.stdout is not None and gz.stdin is not None
        hexd, size = hashing_pipe(tar.stdout, gz.stdin)
        gz.stdin.close()
        # tar exits 1 when a file changed while it was read (a live /usr): the tar is still whole
        if tar.wait() not in (0, 1) or gz.wait() != 0:
            raise SystemExit(f"building a layer of {' '.join(dirs)} failed")
    return f"sha256:{hexd}", size


def hashing_pipe(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` in 1 MiB chunks; (sha256 hex, bytes) of what passed."""
    h = hashlib.sha256()
    total = 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        dst.write(chunk)
        total += len(chunk)
    return h.hexdigest(), total


def file_lists(source: Path, sizes: list[int]) -> list[list[str]]:
    """Regular files under ``source`` (sorted walk) split into groups of >= ``sizes[i]`` bytes,
    as paths relative to ``/`` for ``tar -C / -T``."""
    groups: list[list[str]] = [[] for _ in sizes]
    totals = [0] * len(sizes)
    i = 0
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            groups[i].append(path.lstrip("/"))
            totals[i] += os.path.getsize(path)
            if totals[i] >= sizes[i]:
                i += 1
                if i == len(sizes):
                    return groups
    raise SystemExit(f"{source} holds fewer than {sum(sizes)} bytes")
