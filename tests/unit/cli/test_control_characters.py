"""Names and paths holding control characters are shown escaped: one line stays one line and no
terminal escape sequence reaches the terminal (found by a red-team run: an archive's image name
``ok:1\\r\\x1b[2K\\x1b[31mFAKE LINE\\nsecond`` erased and recoloured the terminal, forged a line
and made ``ls -q`` print two names for one image; a path with a newline made a two-line error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrconv.run.lines import LineWriter, one_line
from support.layouts import LayoutBuilder

HOSTILE = "docker.io/library/ok:1\r\x1b[2K\x1b[31mFAKE LINE\nsecond\x7f\x9b\t"
SHOWN = "docker.io/library/ok:1\\r\\x1b[2K\\x1b[31mFAKE LINE\\nsecond\\x7f\\x9b\\t"


def _no_control(text: str) -> bool:
    return not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in text)


def test_one_line_escapes_controls_and_keeps_the_rest() -> None:
    assert one_line(HOSTILE) == SHOWN
    assert one_line("caf\u00e9 \u65e5\u672c \u00a0plain") == "caf\u00e9 \u65e5\u672c \u00a0plain"
    assert one_line("a\x00b") == "a\\x00b"


def test_a_line_writer_escapes_within_each_line() -> None:
    import io

    out = io.StringIO()
    LineWriter(out).write(f"name {HOSTILE}\n")  # type: ignore[arg-type]
    assert out.getvalue() == f"name {SHOWN}\n"


@pytest.fixture
def hostile_root(cli, tmp_path: Path) -> Path:
    layout = LayoutBuilder(tmp_path / "layout")
    layout.image(HOSTILE, [{"f": b"x"}])
    root = tmp_path / "root"
    result = cli("import", "--root", str(root), "-i", str(tmp_path / "layout"), "--no-unpack")
    assert result.code == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith(SHOWN + ": imported"), result.stdout
    assert _no_control(result.stdout + result.stderr)
    return root


def test_listings_show_the_name_escaped_on_one_line(cli, hostile_root: Path) -> None:
    names = cli("ls", "--root", str(hostile_root), "-q")
    assert names.stdout == SHOWN + "\n"
    table = cli("ls", "--root", str(hostile_root))
    assert table.code == 0 and table.stdout.count("\n") == 2 and SHOWN in table.stdout
    assert _no_control(table.stdout)
    # the document keeps the name exactly (JSON escapes it)
    assert cli("ls", "--root", str(hostile_root), "--json").json["images"][0]["name"] == HOSTILE


def test_reports_and_errors_stay_one_line_each(cli, hostile_root: Path, tmp_path: Path) -> None:
    verify = cli("verify", "--root", str(hostile_root))
    assert _no_control(verify.stdout + verify.stderr)
    exported = cli("export", "--root", str(hostile_root), "--all", "-o", str(tmp_path / "out.tar"))
    assert exported.code == 0 and _no_control(exported.stderr) and exported.stderr.count("\n") == 1
    missing = cli("import", "--root", str(tmp_path / "r2"), "-i", str(tmp_path / "no\nsuch\x1b[31mfile"))
    assert missing.code == 2 and missing.stderr.count("\n") == 1 and _no_control(missing.stderr), missing.stderr
    assert "no\\nsuch\\x1b[31mfile" in missing.stderr
    absent = cli("ls", "--root", str(tmp_path / "no\nroot"))
    assert absent.code == 2 and absent.stderr.count("\n") == 1 and "no\\nroot" in absent.stderr
