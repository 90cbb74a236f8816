"""Shared pytest fixtures: the containerd-made fixture set and private daemons.

Tests that use ``fixture_set``, ``tmp_root_copy`` or ``private_containerd`` are marked
``interop`` automatically and are skipped (with the reason) only when containerd/ctr are not
installed or we are not root (unpacking into overlayfs needs mount). Set
``CTRCONV_CONTAINERD_BIN`` to a directory with other ``containerd``/``ctr`` binaries to run
against another version, and ``CTRCONV_FIXTURE_CACHE`` to move the build cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support.daemon import PrivateContainerd
from support.fixture_set import FixtureSet, get_fixture_set
from support.realnode_set import RealnodeSet

DAEMON_FIXTURES = {"fixture_set", "tmp_root_copy", "private_containerd", "fixture_set_for",
                   "realnode_set_for"}
#: fixtures several modules share, defined beside their helpers: ``dockerd`` (one private Docker
#: engine per module) and ``small_root`` (one copy of the committed small root per module)
pytest_plugins = ["support.dockerd", "support.small_root"]


@pytest.fixture(scope="session", autouse=True)
def listing_facts_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``ls`` keeps what it learnt from large roots in the user's cache directory
    (:mod:`ctrconv.listingfacts`); the suite's runs keep it in a directory of their own, so no
    test reads facts another session left and nothing is left in ``~/.cache``."""
    directory = tmp_path_factory.mktemp("listing-facts")
    before = os.environ.get("CTRCONV_CACHE_DIR")
    os.environ["CTRCONV_CACHE_DIR"] = str(directory)
    yield directory
    if before is None:
        os.environ.pop("CTRCONV_CACHE_DIR", None)
    else:
        os.environ["CTRCONV_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def signal_dispositions_restored() -> Iterator[None]:
    """A test that runs ``ctrconv.entry.main`` in this process leaves SIGINT, SIGTERM and
    SIGHUP ignored (as a finishing ctrconv process does); every process a later test starts would
    inherit the ignored SIGINT and never see its Ctrl-C. Each test gets the dispositions back."""
    import signal

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in before.items():
        if signal.getsignal(signum) is not handler and handler is not None:
            signal.signal(signum, handler)


def containerd_bin_dir() -> str | None:
    """Directory of the containerd under test (``CTRCONV_CONTAINERD_BIN``), None = PATH."""
    return os.environ.get("CTRCONV_CONTAINERD_BIN") or None


def _skip_reason() -> str | None:
    bin_dir = containerd_bin_dir()
    for tool in ("containerd", "ctr"):
        found = (Path(bin_dir) / tool).exists() if bin_dir else shutil.which(tool)
        if not found:
            where = bin_dir or "PATH"
            return f"{tool} is not installed (looked in {where}); needed for interop tests"
    if os.geteuid() != 0:
        return "containerd fixtures need root (overlayfs mounts, device nodes)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs a real daemon is an interop test."""
    for item in items:
        if DAEMON_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="session")
def fixture_set() -> FixtureSet:
    """The fixture set (built once per content hash, then cached across sessions)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    return get_fixture_set(containerd_bin_dir())


@pytest.fixture(scope="session")
def fixture_set_for() -> Callable[[str], FixtureSet]:
    """Factory: ``fixture_set_for("1.7" | "2.x")`` -> the fixture set that containerd built.

    The Debian package of that line is fetched once (``tests/support/versions.py``); a test
    calling the factory is skipped, with the reason, only if the package cannot be fetched.
    """
    if os.geteuid() != 0:
        pytest.skip("containerd fixtures need root (overlayfs mounts, device nodes)")
    from support.versions import fixture_set_for as build

    return build


@pytest.fixture(scope="session")
def realnode_set_for() -> Callable[[str], RealnodeSet]:
    """Factory: ``realnode_set_for("1.6" | "1.7" | "2.x")`` -> the real-node corpus that
    containerd line made (registry + CRI pulls; ``fixtures/build_realnode.py``).

    Built once per content hash and cached under ``.cache/realnode/``; a test calling the
    factory is skipped, with the reason, if that line's package cannot be fetched or a tool is
    missing. Never modify its roots: ``RealnodeSet.copy_root(name, dest)`` makes a ``cp -a``.
    """
    if os.geteuid() != 0:
        pytest.skip("the real-node corpus needs root (overlayfs mounts, runc tasks)")
    from support.realnode_set import realnode_set_for as build

    return build


@pytest.fixture
def tmp_root_copy(fixture_set: FixtureSet, tmp_path: Path) -> Path:
    """A private copy of the fixture root (``cp -a``: devices, xattrs, hardlinks kept)."""
    dest = tmp_path / "root"
    subprocess.run(["cp", "-a", str(fixture_set.root), str(dest)], check=True)
    return dest


@pytest.fixture
def private_containerd() -> Iterator[Callable[..., PrivateContainerd]]:
    """Factory: ``private_containerd(root=None, binary_dir=None)`` -> started daemon.

    Every daemon it started is stopped (SIGTERM, wait) at teardown, so roots are unlocked.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    started: list[PrivateContainerd] = []

    def start(root: Path | str | None = None,
              binary_dir: str | None = None) -> PrivateContainerd:
        daemon = PrivateContainerd(binary_dir or containerd_bin_dir(), root=root)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in reversed(started):
        daemon.close()

