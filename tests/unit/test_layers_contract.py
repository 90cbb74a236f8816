"""The layers the design promises, enforced: the CLI (``ctrconv/cli``, typer, and ``ctrconv/run``,
the command bodies and the shortcut that run without it) talks to the library through ``ctrconv.api``.

Checked on the source (every ``import`` statement, at any depth), so a command that reaches
into the pipeline, the writers or the stores directly fails here, not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "ctrconv" / "cli"
#: the typer-free part of the CLI layer
RUN = CLI.parent / "run"

#: what every CLI module may import from ctrconv: the API, the error tree, itself
ALLOWED_MODULES = {"ctrconv.api", "ctrconv.errors"}
#: process plumbing (signal handling, temp-file cleanup, the commit point) that only the
#: entry of the CLI and its shared helpers wire up
PLUMBING = {"interrupts", "commitpoint", "tempfiles", "__version__", "api"}
PLUMBING_FILES = {"cli/__init__.py", "cli/_common.py", "run/outcome.py", "run/shortcut.py"}


def _ctrconv_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "ctrconv":
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ctrconv":
                    found.append((node.lineno, alias.name, []))
    return found


def test_the_cli_imports_only_the_api():
    files = sorted(CLI.glob("*.py")) + sorted(RUN.glob("*.py"))
    assert len(files) >= 12
    offences = []
    for path in files:
        name = f"{path.parent.name}/{path.name}"
        for line, module, names in _ctrconv_imports(path):
            if module in ALLOWED_MODULES or module.split(".")[:2] in (["ctrconv", "cli"], ["ctrconv", "run"]):
                continue
            if module == "ctrconv" and set(names) <= ({"api"} | (PLUMBING if name in PLUMBING_FILES else set())):
                continue
            offences.append(f"{name}:{line}: {module} {names}")
    assert not offences, "the CLI must go through ctrconv.api:\n" + "\n".join(offences)


def test_the_api_serves_what_the_cli_asks_of_it():
    from ctrconv import api

    for name in api._FOR_THE_CLI:
        assert getattr(api, name) is not None, name


def test_the_bottom_layers_never_import_the_top():
    """bolt/ knows nothing of containerd; nothing below the CLI imports the CLI or the API."""
    package = CLI.parent
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        # clients of the API: the CLI, the entry points, and the debug-image builder (a tool
        # made with the library's public operations)
        if rel.parts[0] in ("cli", "run") or rel.name in ("api.py", "entry.py", "__main__.py", "debugimage.py"):
            continue
        for line, module, names in _ctrconv_imports(path):
            assert not module.startswith(("ctrconv.cli", "ctrconv.run")), f"{rel}:{line} imports the CLI"
            assert module != "ctrconv.api" and not (module == "ctrconv" and "api" in names), \
                f"{rel}:{line} imports the API"
            if rel.parts[0] == "bolt":
                above = {"containerd", "pipeline", "oci", "sinks", "sources", "layers", "verify", "recovery",
                         "registry", "inventory"}
                parts = set(module.split(".")[1:2]) | (set(names) if module == "ctrconv" else set())
                assert not parts & above, f"{rel}:{line}: bolt imports {module} {names}"


#: package -> the ctrconv packages it must never import: the image model and transfer protocols
#: sit below every reader and writer; readers and writers sit below the pipeline that joins them
NEVER_IMPORTS = {
    "image": {"containerd", "pipeline", "sinks", "sources", "layers", "verify", "recovery", "registry", "inventory",
              "bolt"},
    "sources": {"pipeline", "sinks", "verify", "recovery", "inventory"},
    "sinks": {"pipeline", "sources", "verify", "recovery", "inventory", "registry"},
    # the pipeline joins sources and sinks; what ls shows (inventory), the checks and the
    # recovery are built on it, never the other way round
    "pipeline": {"inventory", "verify", "recovery", "registry"},
}


def test_readers_and_writers_sit_below_the_pipeline():
    """``image/`` (model, protocols) imports no reader or writer; sources and sinks import
    neither the pipeline nor each other, so any source meets any sink only in the pipeline;
    the pipeline imports none of the commands built on it."""
    package = CLI.parent
    checked, offences = 0, []
    for top, banned in NEVER_IMPORTS.items():
        for path in sorted((package / top).rglob("*.py")):
            checked += 1
            rel = path.relative_to(package)
            for line, module, names in _ctrconv_imports(path):
                parts = set(module.split(".")[1:2]) | (set(names) if module == "ctrconv" else set())
                if parts & banned:
                    offences.append(f"{rel}:{line}: {module} {names}")
    assert checked >= 20, checked
    assert not offences, "layer violations:\n" + "\n".join(offences)


def test_the_progress_protocol_is_a_leaf():
    """``ctrconv.progress`` sits below everything that reports (hashing, copying, unpacking,
    the pipeline, the API): it imports no ctrconv module and nothing outside the standard
    library, so the hot loops that call it never pull a drawing library in (tqdm stays the CLI's)."""
    path = CLI.parent / "progress.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
    assert imported and imported <= {"__future__", "contextlib", "typing"}, imported


def test_no_test_module_imports_another():
    """Helpers shared by tests live in tests/support/: a test module that imports another one
    couples their layouts (and pytest collects the imported tests twice)."""
    import ast

    tests = Path(__file__).resolve().parents[1]
    offenders = []
    modules = sorted(tests.rglob("test_*.py"))
    assert len(modules) > 50  # the suite really was searched
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.relative_to(tests)}: {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert offenders == []
