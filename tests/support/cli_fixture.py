"""pytest plugin: the ``cli`` fixture that runs ``ctrconv`` in-process (loaded via pyproject addopts)."""

from __future__ import annotations

from typing import Callable

import pytest


class CliResult:
    """Exit code, stdout and stderr of one in-process ``ctrconv`` run."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    @property
    def json(self):
        import json

        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys) -> Callable[..., CliResult]:
    """Run the CLI in-process: ``cli("ls", "--root", r)`` -> CliResult."""
    from ctrconv.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
