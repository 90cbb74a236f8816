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
    """Run the CLI in-process through the process entry, as the ``ctrconv`` command does (so a
    plain ``ls`` takes the shortcut that runs without typer): ``cli("ls", "--root", r)`` ->
    CliResult."""
    import signal

    from ctrconv.entry import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        # the entry leaves SIGINT, SIGTERM and SIGHUP ignored, as a finishing ctrconv process does: a
        # daemon or tool the test starts next must not inherit that
        dispositions = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            for signum, handler in dispositions.items():
                if handler is not None:
                    signal.signal(signum, handler)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
