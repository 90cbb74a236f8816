"""Two exports into one new directory: the one that renames second is refused as if the
directory had been there at its start (exit 2), not with an error naming its own temp
directory (a red-team run: ``.od.i2jw0jkq.ctrconv-tmp: Directory not empty``, exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrconv.errors import UsageError
from ctrconv.sinks._publish import publish_dir


def test_a_directory_filled_meanwhile_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    final = tmp_path / "od"
    final.mkdir()
    (final / "index.json").write_text("{}")  # the other export won
    staged = tmp_path / ".od.x.ctrconv-tmp"
    staged.mkdir()
    (staged / "oci-layout").write_text("{}")
    with pytest.raises(UsageError) as caught:
        publish_dir(staged, final)
    assert str(final) in str(caught.value) and "is not empty" in str(caught.value)
    assert ".ctrconv-tmp" not in str(caught.value)
    assert (final / "index.json").read_text() == "{}" and staged.is_dir()  # (the sink's abort removes it)


def test_an_empty_directory_is_still_replaced(tmp_path: Path) -> None:
    final = tmp_path / "od"
    final.mkdir()
    staged = tmp_path / ".od.y.ctrconv-tmp"
    staged.mkdir()
    (staged / "oci-layout").write_text("{}")
    publish_dir(staged, final)
    assert (final / "oci-layout").is_file() and not staged.exists()
