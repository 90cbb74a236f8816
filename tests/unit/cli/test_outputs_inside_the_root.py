"""A root ctrconv reads is never written: an output inside it is a usage error (found by a
red-team run: ``rebuild --root rb -o rb/rebuilt`` built a root inside the damaged one, and
``-o rb/io.containerd.content.v1.content/ingest/x`` copied the content store into itself)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from support.small_root import small_root  # noqa: F401  (fixture)


def _fingerprint(root: Path) -> dict[str, str]:
    """Every path under ``root`` and its content digest (directories: "")."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[str(path.relative_to(root))] = ""
    return found


@pytest.mark.parametrize("args, inside", [
    (("rebuild", "-q", "-o"), "rebuilt"),
    (("rebuild", "-q", "-o"), "io.containerd.content.v1.content/ingest/zz"),
    (("export", "--all", "-q", "-o"), "io.containerd.content.v1.content/blobs/sha256/x.tar"),
    (("export", "--all", "-q", "-o"), "out.tar"),
    (("export", "--all", "-q", "--format", "oci-dir", "-o"), "layout"),
    (("export", "--all", "-q", "--format", "containerd-root", "-o"), "nested-root"),
])
def test_an_output_inside_the_root_is_refused(cli, small_root: Path, tmp_path: Path,  # noqa: F811
                                              args: tuple[str, ...], inside: str) -> None:
    root = tmp_path / "root"
    shutil.copytree(small_root, root, symlinks=True)
    before = _fingerprint(root)
    command, *rest = args
    result = cli(command, "--root", str(root), *rest, str(root / inside))
    assert result.code == 2, (result.code, result.stderr)
    assert result.stderr.startswith(f"ctrconv: error: output {root / inside} is inside the root {root}")
    assert result.stderr.count("\n") == 1
    assert _fingerprint(root) == before


def test_an_output_beside_the_root_or_through_a_link_into_it(cli, small_root: Path, tmp_path: Path) -> None:  # noqa: F811
    """A path next to the root (a shared name prefix is not "inside") is written; a symlink
    that leads into the root is followed and refused."""
    root = tmp_path / "root"
    shutil.copytree(small_root, root, symlinks=True)
    beside = tmp_path / "root-export.tar"
    assert cli("export", "--root", str(root), "--all", "-q", "-o", str(beside)).code == 0
    assert beside.stat().st_size > 0
    link = tmp_path / "into-root"
    os.symlink(root / "io.containerd.content.v1.content", link)
    before = _fingerprint(root)
    result = cli("export", "--root", str(root), "--all", "-q", "-o", str(link / "x.tar"))
    assert result.code == 2 and "is inside the root" in result.stderr, result.stderr
    assert _fingerprint(root) == before
