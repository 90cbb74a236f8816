"""The standalone executable (``scripts/build-standalone``) in a chroot without Python.

The chroot holds only the executable, the libraries ``ldd`` names and ``/tmp``. Each command
runs twice on identical copies of the committed small root: the executable inside the chroot,
the installed package (``python -m ctrconv``) outside it, from the same relative paths, and the
two must print the same (stdout, stderr, exit code) and write the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from support.standalone import REPO, build_standalone, ldd_paths, make_chroot, run_in_chroot, Run

SMALL_ROOT = REPO / "fixtures" / "small-root.tar.xz"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the standalone executable is built for Linux")


@pytest.fixture(scope="session")
def standalone() -> dict:
    """The build's facts; built once per session, reused across sessions while the inputs
    (sources, schemas, build script, pinned requirements) are unchanged."""
    if os.geteuid() != 0:
        pytest.skip("running the executable in a chroot needs root")
    missing = [t for t in ("readelf", "objdump", "ldd") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (binutils, libc-bin)")
    return build_standalone()


class Twin:
    """The same work directory twice: ``chroot/work`` for the executable, ``pkg/work`` for
    the package; both start with the small root extracted as ``small-root``."""

    def __init__(self, base: Path, binary: Path) -> None:
        self.chroot = make_chroot(base / "chroot", binary)
        self.pkg = base / "pkg"
        for top in (self.chroot, self.pkg):
            (top / "work").mkdir(parents=True)
            with tarfile.open(SMALL_ROOT) as tar:
                tar.extractall(top / "work", filter="fully_trusted")

    def frozen(self, *args: str) -> Run:
        return run_in_chroot(self.chroot, *args, cwd="/work")

    def package(self, *args: str) -> Run:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-m", "ctrconv", *args], capture_output=True, text=True,
                             cwd=self.pkg / "work", env=env, timeout=300)
        return Run(out.returncode, out.stdout, out.stderr)

    def both(self, *args: str, code: int = 0) -> Run:
        frozen, package = self.frozen(*args), self.package(*args)
        assert package.code == code, (args, package.stderr)
        assert (frozen.code, frozen.stdout, frozen.stderr) == (package.code, package.stdout, package.stderr), args
        return frozen

    def same_file(self, rel: str) -> None:
        a, b = self.chroot / "work" / rel, self.pkg / "work" / rel
        assert _sha256(a) == _sha256(b), rel


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def twin(standalone: dict, tmp_path_factory: pytest.TempPathFactory) -> Twin:
    return Twin(tmp_path_factory.mktemp("standalone"), Path(standalone["cached"]))


def test_chroot_holds_only_the_binary_and_its_ldd_libraries(twin: Twin, standalone: dict):
    files = sorted("/" + str(p.relative_to(twin.chroot)) for p in twin.chroot.rglob("*")
                   if p.is_file() and not p.is_relative_to(twin.chroot / "work"))
    expected = sorted({"/usr/local/bin/ctrconv", *ldd_paths(Path(standalone["cached"]))})
    assert files == expected
    assert not any("python" in f for f in files)
    # libpython's libm is named by ldd (patchelf added it): nothing is loaded that ldd hides
    assert "libm.so.6" in standalone["libraries"]


def test_bundle_has_the_zstandard_c_extension_and_the_schemas(standalone: dict):
    assert any(name.startswith("backend_c.") for name in standalone["bundled"]), standalone["bundled"]
    assert any(name.startswith("libpython3") for name in standalone["bundled"])


def test_version_and_help_in_the_chroot(twin: Twin):
    from ctrconv import __version__

    version = twin.frozen("--version")
    assert version.code == 0 and version.stdout == f"ctrconv {__version__}\n"
    twin.both("--help")


def test_ls_verify_export_import_rebuild_same_as_the_package(twin: Twin):
    root = "small-root"
    twin.both("ls", "--root", root, "-A")
    twin.both("ls", "--root", root, "-A", "--json")
    twin.both("verify", "--root", root, "-A")
    twin.both("verify", "--root", root, "-A", "--json")
    # export: the OCI tar (JSON schemas validate every document on the way) and a directory
    twin.both("export", "--root", root, "--image", "busybox:small", "-o", "busybox.tar", "--json")
    twin.same_file("busybox.tar")
    twin.both("export", "--root", root, "--all", "-o", "all-docker.tar", "--format", "docker-archive", "-q")
    twin.same_file("all-docker.tar")
    twin.both("verify", "-i", "busybox.tar")
    # import into a new root, unpacked (overlayfs snapshot dirs, no mount needed)
    twin.both("import", "--root", "new-root", "-i", "busybox.tar", "--json")
    twin.both("ls", "--root", "new-root", "--json")
    twin.both("verify", "--root", "new-root", "--deep")
    # rebuild -o of a damaged copy: the images leaf page of meta.db destroyed, the image
    # re-derived from the content store
    for top in (twin.chroot, twin.pkg):
        shutil.copytree(top / "work" / root, top / "work" / "damaged", symlinks=True)
        with open(top / "work" / "damaged" / "io.containerd.metadata.v1.bolt" / "meta.db", "r+b") as db:
            db.seek(4 * 4096)
            db.write(b"\xff" * 4096)
    twin.both("verify", "--root", "damaged", "-A", code=1)
    twin.both("rebuild", "--root", "damaged", "-o", "rebuilt")
    twin.both("rebuild", "--root", "damaged", "-o", "rebuilt-json", "--json")
    twin.both("ls", "--root", "rebuilt", "-A", "--json")
    twin.both("verify", "--root", "rebuilt", "-A")


def test_errors_are_one_line_in_the_chroot(twin: Twin):
    result = twin.both("ls", "--root", "no-such-root", code=2)
    assert result.stderr.startswith("ctrconv: error: ") and result.stderr.count("\n") == 1


def test_import_jobs_uses_the_frozen_forkserver(standalone: dict, tmp_path: Path):
    """``import -j 2`` starts worker processes from the executable itself (multiprocessing's
    forkserver, diverted by freeze_support); run on the host, where /dev/shm exists."""
    binary = Path(standalone["cached"])
    with tarfile.open(SMALL_ROOT) as tar:
        tar.extractall(tmp_path, filter="fully_trusted")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    subprocess.run([str(binary), "export", "--root", str(tmp_path / "small-root"), "--all", "-o",
                    str(tmp_path / "all.tar"), "-q"], check=True, env=env, timeout=300)
    out = subprocess.run([str(binary), "import", "--root", str(tmp_path / "new"), "-i", str(tmp_path / "all.tar"),
                          "-j", "2", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    check = subprocess.run([str(binary), "verify", "--root", str(tmp_path / "new"), "--deep"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


def _glibc_versions(path: Path) -> set[tuple[int, ...]]:
    out = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True, check=True).stdout
    return {tuple(int(x) for x in m.split(".")) for line in out.splitlines() if "*UND*" in line
            for m in re.findall(r"\bGLIBC_(\d+\.\d+(?:\.\d+)?)\b", line)}


def test_oldest_glibc_is_what_the_symbols_need(standalone: dict, tmp_path: Path):
    """The reported glibc is the newest GLIBC_x.y symbol version that the bootloader or any
    library inside the archive needs (each one taken out of the file and read with objdump),
    and docs/rescue.md states that figure for this project's build machines."""
    from PyInstaller.archive.readers import CArchiveReader

    binary = Path(standalone["cached"])
    needs = _glibc_versions(binary)
    archive = CArchiveReader(str(binary))
    libraries = [name for name in archive.toc if name.endswith(".so") or ".so." in name]
    assert len(libraries) > 10
    for index, name in enumerate(libraries):
        extracted = tmp_path / f"{index}.so"
        extracted.write_bytes(archive.extract(name))
        needs |= _glibc_versions(extracted)
    newest = ".".join(str(x) for x in max(needs))
    assert standalone["glibc"] == newest
    assert f"glibc {newest}" in (REPO / "docs" / "rescue.md").read_text()


def test_zstd_layers_use_the_bundled_zstandard(twin: Twin, tmp_path: Path):
    """A zstd-compressed layer (written by ctrconv's layer writer) is imported, unpacked and
    verified by the executable exactly as by the package: zstandard's C extension is in it."""
    from ctrconv.debugimage import build_debug_image

    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(4096) * 64)
    for top in (twin.chroot, twin.pkg):
        build_debug_image(payload, top / "work" / "zstd.tar", name="example.invalid/zstd:1", compression="zstd",
                          libraries=[])
    twin.same_file("zstd.tar")
    twin.both("verify", "-i", "zstd.tar", "--json")
    twin.both("import", "--root", "zstd-root", "-i", "zstd.tar", "--json")
    twin.both("verify", "--root", "zstd-root", "--deep")
    twin.both("export", "--root", "zstd-root", "--all", "-o", "zstd-docker.tar", "--format", "docker-archive", "--json")
    twin.same_file("zstd-docker.tar")
