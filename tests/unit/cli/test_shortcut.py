"""The ``ls`` shortcut (:mod:`ctrconv.run.shortcut`): a command line it takes is parsed as click
parses it, every other one is left to typer, and a run through it is the typer run's output,
error lines and exit code; it imports no CLI framework."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ctrconv.run.options import WAIT_FOREVER
from ctrconv.run.shortcut import parse_ls

#: the pieces command lines are made of: options as written, values, and things typer must judge
_PIECES = [
    ["-A"], ["--all-namespaces"], ["--json"], ["-q"], ["--quiet"], ["--ignore-lock"], ["--wait"], ["--wait=30"],
    ["--wait=x"], ["--wait="], ["--wait", "5"], ["--root", "/r"], ["--root=/r2"], ["--root", "rel/dir/"],
    ["--root="], ["--root"], ["--root", "-A"], ["-n", "k8s.io"], ["-n", "bad ns"], ["-nmoby"], ["-n=x"],
    ["--namespace", "other"], ["--namespace=x.y"], ["--platform", "linux/arm64"], ["--platform=linux/amd64/v3"],
    ["--platform", "-"], ["-Aq"], ["-qA"], ["-h"], ["--help"], ["--debug"], ["--"], ["extra"], ["--json=1"],
    ["--bogus"], ["-x"], ["--root", "ls"], ["--namespace", "--json"],
]
_ENVIRONMENTS = [{}, {"CTRCONV_ROOT": "/env/root"}, {"CTRCONV_ROOT": ""}, {"CONTAINERD_NAMESPACE": "k8s.io"},
                 {"CONTAINERD_NAMESPACE": "", "CTRCONV_ROOT": "/e"}, {"CTRCONV_DEBUG": "1"},
                 {"_CTRCONV_COMPLETE": "bash_complete"}]


def _command_lines(count: int) -> list[list[str]]:
    rng = random.Random(20261206)
    lines = [["ls"], ["--debug", "ls"], ["ls", "ls"], ["--debug", "--debug", "ls"], ["-A"], [], ["list"]]
    for _ in range(count):
        prefix = rng.choice([["ls"], ["ls"], ["ls"], ["--debug", "ls"], ["ls", "--debug"], ["export"]])
        line = list(prefix)
        for _ in range(rng.randint(0, 5)):
            line += rng.choice(_PIECES)
        lines.append(line)
    return lines


def _arguments(ctx) -> list[str]:
    """The group's arguments from the command's name on (click 8.2 keeps them privately)."""
    protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
    return [*protected, *ctx.args]


def _click_parse(argv: list[str], command_name: str = "ls") -> dict | str:
    """What typer gives ``command_name`` for ``argv`` (after ``run``'s ``--wait`` rewriting),
    or the name of the exception click raised for it (``command X`` for another command)."""
    import typer

    from ctrconv.cli import app, _common

    argv = [WAIT_FOREVER if arg == "--wait" else arg for arg in argv]
    group = typer.main.get_command(app)
    try:
        with group.make_context("ctrconv", list(argv), resilient_parsing=False) as ctx:
            name, command, rest = group.resolve_command(ctx, _arguments(ctx))
            if name != command_name:
                return f"command {name}"
            with command.make_context(name, rest, parent=ctx) as sub:
                return {**sub.params, "debug": bool(ctx.params.get("debug"))}
    except BaseException as exc:  # noqa: BLE001 - click's usage errors, its Exit for --help
        return type(exc).__name__
    finally:
        _common.STATE.debug = False


def _set_environment(monkeypatch, environ: dict[str, str]) -> None:
    """Exactly ``environ`` of the variables the command lines read."""
    for name in ("CTRCONV_ROOT", "CONTAINERD_NAMESPACE", "CTRCONV_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)


def test_what_it_takes_is_parsed_as_click_parses_it(monkeypatch) -> None:
    """Over thousands of command lines and environments: each one the shortcut takes gives the
    parameters click gives the typer command; the ones it leaves include every one click
    refuses, and it takes the plain ones (so the shortcut is used at all)."""
    taken = left = 0
    for environ in _ENVIRONMENTS:
        _set_environment(monkeypatch, environ)
        for argv in _command_lines(600):
            ours = parse_ls(argv, environ)
            if ours is None:
                left += 1
                continue
            taken += 1
            theirs = _click_parse(argv)
            assert ours == theirs, (argv, environ)
    assert taken > 400 and left > 400, (taken, left)  # (an empty CTRCONV_ROOT is typer's: it refuses it)


@pytest.mark.parametrize("argv", [["ls"], ["--debug", "ls", "-A", "--json"], ["ls", "-q", "--root", "/x"],
                                  ["ls", "--wait", "-n", "k8s.io"], ["ls", "--wait=2.5", "--platform", "linux/arm64"]])
def test_plain_command_lines_are_taken(argv: list[str]) -> None:
    assert parse_ls(argv, {}) is not None


@pytest.mark.parametrize("argv", [["ls", "-h"], ["ls", "--help"], ["ls", "-Aq"], ["ls", "-A", "-A"],
                                  ["ls", "--root"], ["ls", "--root="], ["ls", "--", "-A"], ["ls", "x"],
                                  ["ls", "--wait="], ["ls", "--debug"], ["export", "-A"], ["--version"]])
def test_others_are_left_to_typer(argv: list[str]) -> None:
    assert parse_ls(argv, {}) is None


def _outcome(main, argv: list[str], capsys) -> tuple[int, str, str, bool]:
    """Exit code, stdout, stderr's ``ctrconv:`` lines, and whether a traceback was printed
    (``--debug``: its frames differ with the way the command was reached)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    traced = "Traceback (most recent call last)" in err
    lines = "".join(line + "\n" for line in err.splitlines() if line.startswith("ctrconv:")) if traced else err
    return exc.value.code, out, lines, traced


def test_a_run_through_it_is_the_typer_run(tmp_path: Path, capsys, monkeypatch) -> None:
    """Table, ``--json``, ``-q``, a namespace, a bad namespace, a missing root, a root that is
    a file, a bad ``--wait``: the same stdout, stderr and exit code both ways."""
    from support.synthetic_root import standard_root

    from ctrconv import entry
    from ctrconv.cli import main as typer_main
    from ctrconv.run import shortcut

    monkeypatch.setenv("CTRCONV_NO_CACHE", "1")
    root = standard_root(tmp_path / "root").write()
    (tmp_path / "file").write_text("x")
    taken: list[list[str]] = []
    real_take = shortcut.take
    monkeypatch.setattr(shortcut, "take", lambda argv: taken.append(argv) or real_take(argv))
    lines = [["ls", "--root", str(root)], ["ls", "--root", str(root), "-A", "--json"],
             ["ls", "--root", str(root), "-q"], ["ls", f"--root={root}", "-n", "other"],
             ["ls", "--root", str(root), "-n", "bad/ns"], ["ls", "--root", str(tmp_path / "absent")],
             ["ls", "--root", str(tmp_path / "file")], ["--debug", "ls", "--root", str(root), "--wait=soon"],
             ["ls", "--root", str(root), "--platform", "plan9/mips"], ["ls", "--root", str(root), "--wait"]]
    for argv in lines:
        assert parse_ls(argv, {}) is not None, argv
        quick = _outcome(entry.main, argv, capsys)
        assert taken.pop() == argv
        assert quick == _outcome(typer_main, argv, capsys), argv
    assert {code for code, _, _, _ in (_outcome(entry.main, argv, capsys) for argv in lines)} >= {0, 2}


def test_a_signal_while_the_shortcut_imports_its_command_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    """A signal while ``ls``'s module was still being imported (the first ~30-90 ms) escaped as a
    ``Stopped`` traceback with exit 1 (found by a red-team run); it is the command's now."""
    import signal
    import sys

    from ctrconv import interrupts
    from ctrconv.run import shortcut

    class Interrupting:
        def find_spec(self, name, path=None, target=None):
            if name == "ctrconv.run.ls":
                raise interrupts.Stopped(signal.SIGTERM)
            return None

    monkeypatch.delitem(sys.modules, "ctrconv.run.ls", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    run = shortcut.take(["ls", "--root", str(tmp_path)])
    assert run is not None
    assert run() == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "ctrconv: error: terminated\n"


# -- export --------------------------------------------------------------------------------------

_EXPORT_PIECES = [
    ["--image", "docker.io/library/a:1"], ["--image=b:2"], ["--image", "sha256:abc"], ["--all"], ["--all-platforms"],
    ["-o", "out.tar"], ["-o", "outdir"], ["--output=o.tar"], ["-o", "-"], ["-o"], ["--format", "oci-dir"],
    ["--format=docker-archive"], ["-f", "dir"], ["--format", "containerd-root"], ["--format", "bogus"],
    ["--platform", "linux/arm64"], ["--platform=linux/amd64"], ["--json"], ["-q"], ["--quiet"], ["--ignore-lock"],
    ["--link"], ["--wait"], ["--wait=3"], ["--root", "/r"], ["-n", "k8s.io"], ["--namespace=x"], ["--no-verify"],
    ["--to", "docker://h/r"], ["ref"], ["docker.io/library/b:2"], ["sha256:def"], ["-h"], ["--"], ["-qj"],
    ["--skip-manifest-json"], ["--json=1"], ["--all="],
]


def _export_lines(count: int) -> list[list[str]]:
    rng = random.Random(20261207)
    lines = [["export", "--image", "a", "-o", "x.tar"], ["export", "--all", "-o", "d"], ["export"],
             ["export", "-o", "x.tar", "a"], ["export", "b", "--image", "a", "-o", "x.tar", "c"]]
    for _ in range(count):
        line = rng.choice([["export"], ["export"], ["--debug", "export"]]) + \
            rng.choice([["--image", "a"], ["--all"], []]) + rng.choice([["-o", "o.tar"], ["-o", "d"], []])
        for _ in range(rng.randint(0, 4)):
            line += rng.choice(_EXPORT_PIECES)
        lines.append(line)
    return lines


def _click_export(argv: list[str]) -> dict | str:
    return _click_parse(argv, "export")


def test_an_export_it_takes_is_parsed_as_click_parses_it(monkeypatch) -> None:
    """Each export command line the shortcut takes gives, for every parameter it sets, what
    click gives the typer command, and leaves every other parameter at click's default; it
    takes no line click refuses, none the shared body does not write (containerd-root, a push,
    stdout), and takes the plain ones."""
    from ctrconv.run.shortcut import parse

    defaults = _click_export(["export", "--all", "-o", "d"])
    assert isinstance(defaults, dict)
    taken = left = refs = 0
    for environ in _ENVIRONMENTS[:5]:
        _set_environment(monkeypatch, environ)
        for argv in _export_lines(400):
            parsed = parse(argv, environ)
            if parsed is None:
                left += 1
                continue
            taken += 1
            command, ours = parsed
            theirs = _click_export(argv)
            assert command == "export" and isinstance(theirs, dict), (argv, theirs)
            # the typer command exports its --image values, then its REF arguments
            theirs["image"] = _as_list(theirs["image"]) + _as_list(theirs.pop("refs"))
            for key, value in ours.items():  # (click holds repeated options as tuples, () when absent)
                assert _as_list(theirs[key]) == _as_list(value), (argv, key, value, theirs[key])
            for key, value in theirs.items():
                if key not in ours and key not in ("root", "namespace"):
                    assert value == defaults[key], (argv, key, value)
            assert theirs["to"] is None and theirs["fmt"] in (None, "oci-dir", "oci-tar", "docker-archive", "dir")
            refs += len(ours["image"] or []) > sum(a == "--image" or a.startswith("--image=") for a in argv)
    assert taken > 200 and left > 200 and refs > 20, (taken, left, refs)


def test_an_export_through_it_is_the_typer_run(tmp_path: Path, capsys, monkeypatch) -> None:
    """An OCI tar, an OCI layout, a docker archive, ``--json``, a missing image, a bad
    namespace, a bad platform: the same stdout, stderr, exit code and files both ways."""
    import filecmp

    from support.synthetic_root import standard_root

    from ctrconv import entry
    from ctrconv.cli import main as typer_main
    from ctrconv.run import shortcut

    monkeypatch.setenv("CTRCONV_NO_CACHE", "1")
    root = standard_root(tmp_path / "root").write()
    names = [i for i in (line.split()[1] for line in _ls_names(root)) if i]
    taken: list[list[str]] = []
    real_take = shortcut.take
    monkeypatch.setattr(shortcut, "take", lambda argv: taken.append(argv) or real_take(argv))
    cases = [["--image", names[0], "-o", "{out}.tar", "-q"], ["--all", "-o", "{out}", "--format", "oci-dir"],
             ["--image", names[0], "-o", "{out}.da.tar", "--format", "docker-archive", "--json"],
             ["--image", "no/such:image", "-o", "{out}.tar"], ["-n", "bad/ns", "--all", "-o", "{out}.tar"],
             ["--image", names[0], "--platform", "plan9/mips", "-o", "{out}.tar"]]
    for n, case in enumerate(cases):
        results = []
        for way, main in (("quick", entry.main), ("typer", typer_main)):
            out = str(tmp_path / f"{way}{n}")
            argv = ["export", "--root", str(root), *[a.replace("{out}", out) for a in case]]
            results.append((_outcome(main, argv, capsys), out))
            if way == "quick":
                assert taken.pop() == argv
        (quick, quick_out), (slow, slow_out) = results
        assert quick[0] == slow[0], (case, quick, slow)
        assert quick[1].replace(quick_out, "OUT") == slow[1].replace(slow_out, "OUT"), case
        assert quick[2].replace(quick_out, "OUT") == slow[2].replace(slow_out, "OUT"), case
        for suffix in (".tar", ".da.tar"):
            if Path(quick_out + suffix).exists():
                assert filecmp.cmp(quick_out + suffix, slow_out + suffix, shallow=False), case
        if Path(quick_out).is_dir():
            assert _tree(Path(quick_out)) == _tree(Path(slow_out)), case


def _as_list(value):
    return list(value) if isinstance(value, (tuple, list)) else ([] if value is None else value)


def _ls_names(root: Path) -> list[str]:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "ctrconv", "ls", "--root", str(root)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[3])
    return run.stdout.splitlines()[1:]


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
