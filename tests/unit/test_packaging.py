"""Packaging: ``python -m build`` makes a wheel and an sdist that ``twine check`` accepts; the
version is kept in one place; the wheel installs in a fresh virtual environment (no system
site-packages, not this checkout) and runs the README's demo (``fixtures/demo.sh``)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from ctrconv import __version__

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("build", reason="the 'build' package (test extra) is not installed")
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_twine_check_accepts_both(dists: dict[str, Path]):
    pytest.importorskip("twine", reason="twine (test extra) is not installed")
    run = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"])],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("PASSED") == 2


def test_version_is_kept_in_one_place(dists: dict[str, Path]):
    assert dists["wheel"].name == f"ctrconv-{__version__}-py3-none-any.whl"
    assert dists["sdist"].name == f"ctrconv-{__version__}.tar.gz"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' not in pyproject  # dynamic: from ctrconv.__version__
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        metadata = wheel.read(f"ctrconv-{__version__}.dist-info/METADATA").decode()
        names = set(wheel.namelist())
    assert f"Version: {__version__}\n" in metadata
    # the schemas travel as real files (ctrconv/schemas is a symlink in a checkout)
    for schema in ["image-manifest.json", "cli/ls.json", "cli/verify.json", "cli/dump.json"]:
        assert f"ctrconv/schemas/{schema}" in names


def test_wheel_installs_in_a_fresh_venv_and_runs_the_demo(dists: dict[str, Path], tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(dists["wheel"])],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    where = subprocess.run([str(python), "-c", "import ctrconv; print(ctrconv.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=60)
    assert where.stdout.startswith(str(env_dir)), where.stdout + where.stderr  # the wheel, not this checkout
    version = subprocess.run([str(env_dir / "bin" / "ctrconv"), "--version"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=60)
    assert version.stdout == f"ctrconv {__version__}\n", version.stderr
    demo = subprocess.run(["sh", str(REPO / "fixtures" / "demo.sh"), str(tmp_path / "demo")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "docker.io/library/busybox:small" in demo.stdout and "clean: no problems" in demo.stdout
    assert (tmp_path / "demo" / "busybox.tar").is_file() and (tmp_path / "demo" / "new-root").is_dir()
