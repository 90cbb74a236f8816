"""CLI conventions operators expect: --version, shell completion, no colour (NO_COLOR)."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctrconv import __version__

REPO = Path(__file__).resolve().parents[3]


def test_version_in_process(cli):
    result = cli("--version")
    assert (result.code, result.stdout, result.stderr) == (0, f"ctrconv {__version__}\n", "")


def test_version_matches_the_package_metadata():
    """One version: pyproject takes it from ctrconv.__version__ (setuptools dynamic)."""
    from importlib import metadata

    text = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'version = {attr = "ctrconv.__version__"}' in text
    try:
        installed = metadata.version("ctrconv")
    except metadata.PackageNotFoundError:
        pytest.skip("ctrconv is not installed as a distribution")
    assert installed == __version__


@pytest.fixture
def ctrconv_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has a ``ctrconv`` running this checkout, and a private HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ctrconv"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m ctrconv "$@"\n')
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "SHELL": "/bin/bash"}


def test_show_completion_prints_a_bash_script(ctrconv_on_path):
    out = subprocess.run(["ctrconv", "--show-completion", "bash"], capture_output=True, text=True,
                         env=ctrconv_on_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "_CTRCONV_COMPLETE=complete_bash" in out.stdout
    assert "complete -o default -F _ctrconv_completion ctrconv" in out.stdout


@pytest.mark.parametrize("args, marker", [
    (["--show-completion", "zsh"], "#compdef ctrconv"),
    (["--show-completion=fish"], "complete --command ctrconv"),
    (["--show-completion", "bash"], "complete -o default -F _ctrconv_completion ctrconv"),
])
def test_the_shell_named_is_the_one_shown_whatever_runs_ctrconv(ctrconv_on_path, args, marker):
    """A shell named after ``--show-completion`` is the one whose script is printed, whatever
    shell (or none: an image build's ``/bin/sh -c``, a process manager) runs ctrconv; typer took
    it from the process's ancestors and ignored the name (a flaky failure of the test above
    when no ancestor was a shell)."""
    for parent in (["/bin/sh", "-c", 'exec "$@"', "sh"], ["bash", "-c", 'exec "$@"', "bash"]):
        out = subprocess.run([*parent, "ctrconv", *args], capture_output=True, text=True,
                             env=ctrconv_on_path, timeout=60)
        assert out.returncode == 0, (parent, out.stderr)
        assert marker in out.stdout, (parent, out.stdout[:200])


def test_completion_shell_names_are_recognised_as_typer_takes_them() -> None:
    from ctrconv.cli import names_a_completion_shell

    assert names_a_completion_shell(["--show-completion", "bash"])
    assert names_a_completion_shell(["--install-completion=zsh"])
    assert names_a_completion_shell(["-q", "--show-completion", "pwsh"])
    assert not names_a_completion_shell(["--show-completion"])
    assert not names_a_completion_shell(["--show-completion", "ls"])
    assert not names_a_completion_shell(["ls", "--root", "bash"])


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_installed_bash_completion_completes_commands_and_options(ctrconv_on_path):
    env = ctrconv_on_path
    out = subprocess.run(["ctrconv", "--install-completion", "bash"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    home = Path(env["HOME"])
    script = home / ".bash_completions" / "ctrconv.sh"
    assert script.is_file() and str(script) in (home / ".bashrc").read_text()

    def complete(*words: str) -> list[str]:
        array = " ".join(f"'{w}'" for w in words)
        # bash calls the completion function with the command's name as $1
        program = (f"source {script}; COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; "
                   '_ctrconv_completion ctrconv; printf "%s\\n" "${COMPREPLY[@]}"')
        run = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    assert complete("ctrconv", "exp") == ["export"]
    assert set(complete("ctrconv", "")) >= {"ls", "export", "import", "verify", "rebuild", "dump"}
    assert "--all-namespaces" in complete("ctrconv", "verify", "--all")
    assert complete("ctrconv", "export", "--form") == ["--format"]


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``ctrconv ARGS`` with stdout and stderr on a pseudo-terminal; (code, bytes shown)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ctrconv", *args], stdout=follower, stderr=follower,
                            stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return proc.wait(timeout=60), shown


@pytest.mark.parametrize("no_color", [None, "1"])
def test_no_colour_on_a_terminal(no_color, tmp_path: Path):
    """ctrconv writes no colour or other escape sequences: not in help, not in errors, not in
    reports; NO_COLOR (https://no-color.org) is honoured trivially, and with it set as well."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TERM": "xterm-256color",
           "PYTHONPATH": str(REPO), "FORCE_COLOR": "1"}
    if no_color:
        env["NO_COLOR"] = no_color
    import tarfile

    with tarfile.open(REPO / "fixtures" / "small-root.tar.xz") as tar:
        tar.extractall(tmp_path, filter="fully_trusted")
    root = str(tmp_path / "small-root")
    for args, code in [(["--help"], 0), (["export", "--help"], 0), (["ls", "--bogus"], 2),
                       (["ls", "--root", root, "-A"], 0), (["verify", "--root", root, "-A"], 0)]:
        returncode, shown = _run_on_a_terminal(args, env)
        assert returncode == code, (args, shown)
        assert shown and b"\x1b" not in shown, (args, shown[:400])


def test_docs_cli_reference_is_the_help_output():
    """docs/cli.md's command reference and --help have one source: the block is generated
    from the CLI and must equal what the generator makes now."""
    from ctrconv.cli import docgen

    document = (REPO / "docs" / "cli.md").read_text()
    assert docgen.BEGIN in document and docgen.END in document
    assert docgen.replace_block(document) == document, \
        "docs/cli.md is out of date: python3 -m ctrconv.cli.docgen --write docs/cli.md"
    block = document[document.index(docgen.BEGIN):document.index(docgen.END)]
    for command in ("ls", "export", "import", "verify", "rebuild", "dump"):
        assert f"### `ctrconv {command} --help`" in block


def test_generated_help_is_what_a_terminal_shows():
    """The generator renders the real ``ctrconv CMD --help`` run (80 columns)."""
    from ctrconv.cli import docgen

    texts = docgen.help_texts()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONPATH": str(REPO),
           "COLUMNS": "120"}
    for name in ("", "ls", "export"):
        out = subprocess.run([sys.executable, "-m", "ctrconv", *([name] if name else []), "--help"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0 and out.stdout.rstrip("\n") == texts[name], name


def test_the_contract_in_the_repository_is_in_step_with_the_reference():
    """docs/contract.md is the repository's copy of the command-line contract; the shared
    reference wins, so the copy must say exactly what it says (checked wherever it exists)."""
    mirror = (REPO / "docs" / "contract.md").read_text()
    body = mirror.split("-->\n\n", 1)[1]
    assert body.startswith("# ctrconv command-line contract")
    reference = REPO.parent / "shared" / "spec" / "cli.md"
    if not reference.is_file():
        pytest.skip("the shared reference is not beside this checkout")
    assert body == reference.read_text(), "docs/contract.md differs from ../shared/spec/cli.md: copy it again"


def test_readme_and_docs_link_only_inside_the_repository():
    import re

    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).resolve().is_relative_to(REPO), f"{page.name} links outside: {target}"


def test_a_named_completion_shell_leaves_the_environment_as_it_was(monkeypatch, capsys) -> None:
    """Typer's detection is switched off for the run that names a shell only: a caller's later
    runs in the same process (a library user, a test runner) detect the shell again."""
    import os

    from ctrconv.cli import main

    monkeypatch.delenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(["--show-completion", "zsh"])
    assert stopped.value.code in (0, None) and "#compdef ctrconv" in capsys.readouterr().out
    assert "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION" not in os.environ
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "x")
    with pytest.raises(SystemExit):
        main(["--show-completion=bash"])
    assert os.environ["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] == "x"
