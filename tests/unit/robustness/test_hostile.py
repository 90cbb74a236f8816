"""The hostile-input corpus through the CLI: refused or handled, never escaping, never a traceback.

For every case of :mod:`hostile.corpus`: the exit code is 1 or 2 (or 0 where handling is
allowed), a failure prints exactly one ``ctrconv: error:`` line (no traceback, no "internal
error"), and the sentinel directory plus everything outside the target root is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hostile.corpus import CASES, Case, Ctx, prepare

REPO = Path(__file__).resolve().parents[3]


def _state(base: Path, skip: Path) -> dict[str, tuple[int, str]]:
    """mode and content hash (or link target) of everything under ``base`` except ``skip``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path == skip:
                continue
            st = path.lstat()
            if path.is_symlink():
                what = "-> " + os.readlink(path)
            elif path.is_file():
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = ""
            found[str(path.relative_to(base))] = (st.st_mode, what)
    return found


def _assert_clean_failure(case: Case, code: int, stderr: str) -> None:
    assert code in (1, 2), f"{case.name}: exit {code}, stderr {stderr!r}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"{case.name}: expected one error line, got {stderr!r}"
    assert lines[0].startswith("ctrconv: error: "), lines[0]
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    if case.expect:
        assert case.expect in lines[0].lower(), f"{case.name}: {lines[0]!r} lacks {case.expect!r}"


def _params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=f"known open: {c.known}")]
                         if c.known else []) for c in cases]


@pytest.mark.parametrize("case", _params(CASES))
def test_hostile_case(case: Case, tmp_path: Path, cli) -> None:
    ctx = Ctx(tmp_path)
    prepare(ctx)
    args = case.build(ctx)
    before = _state(tmp_path, ctx.root)
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    result = cli(*args)
    if case.outcome == "refuse" or result.code != 0:
        _assert_clean_failure(case, result.code, result.stderr)
    assert _state(tmp_path, ctx.root) == before, f"{case.name}: files outside the target root changed"
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd
    assert not Path("/escape").exists() and not (tmp_path.parent / "escape").exists()


def test_corpus_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


MEMORY_CASES = [c for c in CASES if "memory" in c.tags]


@pytest.mark.parametrize("case", _params(MEMORY_CASES))
def test_claimed_sizes_stay_in_bounded_memory(case: Case, tmp_path: Path) -> None:
    """Cases claiming 2**60 bytes (or an 8 GiB header) fail cleanly under a 1 GiB address-space limit."""
    ctx = Ctx(tmp_path)
    prepare(ctx)
    args = case.build(ctx)
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
    code = limit + "from ctrconv.cli import main; main(" + repr(args) + ")"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    _assert_clean_failure(case, proc.returncode, proc.stderr)
    assert "out of memory" not in proc.stderr


def test_decompression_bomb_stops_at_the_explicit_limit(tmp_path: Path) -> None:
    """A 1 GiB-of-zeros layer (1 MiB of gzip) stops at ``max_bytes`` with a FormatError, writing less."""

    import io
    import zlib

    from ctrconv.errors import FormatError
    from ctrconv.layers import unpack_layer
    from hostile.images import member, tar

    header = tar([member("bomb", data=b"")])[:512]
    header = bytearray(header)
    header[124:136] = b"%011o\0" % (1 << 30)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = packer.compress(bytes(header))
    zeros = b"\0" * (1 << 20)
    for _ in range(1024):
        blob += packer.compress(zeros)
    blob += packer.flush()
    assert len(blob) < 2 << 20
    target = tmp_path / "fs"
    target.mkdir()
    with pytest.raises(FormatError, match="decompression limit"):
        unpack_layer(io.BytesIO(blob), target, mode="naive", max_bytes=16 << 20, external=False)
    assert (target / "bomb").stat().st_size <= 16 << 20



def test_sparse_member_bomb_is_refused(tmp_path: Path) -> None:
    """A PAX GNU sparse member claiming 10**23 bytes must be refused, not written out as zeros.

    Run in a child with RLIMIT_FSIZE = 64 MiB and a 60 s timeout, so the bomb cannot fill the disk.
    """
    code = (
        "import io, resource, signal, sys, tarfile\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))\n"
        "from ctrconv.errors import CtrconvError\n"
        "from ctrconv.layers import apply_layer\n"
        "info = tarfile.TarInfo('victim'); info.size = 0\n"
        "info.pax_headers = {'GNU.sparse.size': str(10**23)}\n"
        "data = info.tobuf(tarfile.PAX_FORMAT, 'utf-8', 'surrogateescape') + b'\\0' * 1024\n"
        "try:\n"
        "    apply_layer(io.BytesIO(data), sys.argv[1], mode='naive')\n"
        "except CtrconvError as exc:\n"
        "    print('refused:', exc); sys.exit(0)\n"
        "except Exception as exc:\n"
        "    print('not refused:', type(exc).__name__, exc); sys.exit(3)\n"
        "sys.exit(4)\n"
    )
    target = tmp_path / "fs"
    target.mkdir()
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
