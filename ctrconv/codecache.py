"""Compiled code of the source ctrconv generates at run time, kept between runs of the CLI.

Creating a dataclass compiles its ``__init__``, ``__repr__``, ``__eq__`` (and, frozen,
``__setattr__``, ``__delattr__``, ``__hash__``) from generated source, one ``exec`` of a source
string each: ~0.8 ms per frozen class on the development VM, and an ``export`` creates 43
classes before it copies a byte, a third of its start-up above the bare interpreter (issue 17,
benchmarks/README.md). The compiled schema checks (:mod:`ctrconv.oci.fastschema`) are
generated source too (~4 ms for a manifest's and a config's). The same text compiles to the
same code in every run: this module compiles each text once and keeps the code objects in a
:mod:`marshal` file beside the package's bytecode (``ctrconv/__pycache__``, as trusted as the
``.pyc`` files there, and written only where those can be), marked with the interpreter's
bytecode magic number. A later run executes the stored code object instead of compiling the
text again: the same ``exec`` of the same code, minus the compiler.

Only the CLI process installs it (:func:`install`, from :mod:`ctrconv.entry`): a program that
imports the library keeps its :mod:`dataclasses` untouched (and :func:`compiled` compiles).
An unreadable, stale or corrupt file is ignored (the text is compiled as before); a text not in
the file is compiled and the file rewritten at exit (temp file and rename: two runs at once lose
at most each other's additions). Python's ``PYTHONDONTWRITEBYTECODE`` is honoured: then the
file is read when present, never written (``python3 -m ctrconv.codecache`` writes it, as
``compileall`` writes the ``.pyc`` files).
"""

from __future__ import annotations

import atexit
import builtins
import importlib.util
import marshal
import os
import sys
from pathlib import Path
from types import CodeType
from typing import Any

#: the file's name: one per interpreter bytecode version (``cache_tag``: ``cpython-311``)
FILE_NAME = f"generated-code.{sys.implementation.cache_tag}.marshal"
_MAGIC = importlib.util.MAGIC_NUMBER


class _Cache:
    """Source text -> code object, loaded from and saved to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.codes: dict[str, CodeType] = {}
        self.added = False
        try:
            data = path.read_bytes()
        except OSError:
            return
        if data[:len(_MAGIC)] != _MAGIC:
            return  # another interpreter's code objects
        try:
            loaded = marshal.loads(data[len(_MAGIC):])
        except (EOFError, ValueError, TypeError):
            return  # cut short or not ours: compiled again, and rewritten
        if isinstance(loaded, dict) and all(isinstance(k, str) and isinstance(v, CodeType) for k, v in loaded.items()):
            self.codes = loaded

    def code(self, text: str) -> CodeType:
        code = self.codes.get(text)
        if code is None:
            # ``dont_inherit``: compiled as ``exec(text)`` in dataclasses.py compiles it, without
            # this module's ``from __future__ import annotations``
            code = compile(text, "<string>", "exec", dont_inherit=True)
            self.codes[text] = code
            self.added = True
        return code

    def save(self) -> None:
        """Write the file again when texts were added (quietly: a cache, not a result)."""
        if not self.added:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(_MAGIC + marshal.dumps(self.codes))
            os.replace(tmp, self.path)
            self.added = False
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass


_installed: _Cache | None = None


def cache_path() -> Path:
    return Path(__file__).resolve().parent / "__pycache__" / FILE_NAME


def compiled(text: str) -> CodeType:
    """The code of the module-level source ``text``: stored when installed, else compiled now."""
    if _installed is not None:
        return _installed.code(text)
    return compile(text, "<string>", "exec", dont_inherit=True)


def install(write: bool | None = None, path: Path | None = None) -> None:
    """Make :mod:`dataclasses` run stored code objects for the texts it generates.

    ``write``: save new texts at exit (default: unless ``PYTHONDONTWRITEBYTECODE`` is set);
    ``path``: the file (default: :func:`cache_path`).
    Idempotent. Where :mod:`dataclasses` builds its methods without ``exec`` of a text, nothing
    is looked up and nothing written.
    """
    global _installed
    if _installed is not None:
        return
    import dataclasses

    if "exec" in vars(dataclasses):
        return  # (someone else's hook)
    cache = _installed = _Cache(path if path is not None else cache_path())

    def exec_cached(source: Any, globals: Any = None, locals: Any = None, /) -> None:
        if isinstance(source, str):
            source = cache.code(source)
        builtins.exec(source, globals, locals)

    dataclasses.exec = exec_cached  # type: ignore[attr-defined]  # (looked up before the builtin)
    if write if write is not None else not sys.dont_write_bytecode:
        atexit.register(cache.save)


def _write_now() -> None:
    """``python3 -m ctrconv.codecache``: import every ctrconv module, compile the schema
    checks, and save the file."""
    import pkgutil

    import ctrconv

    install(write=False)
    assert _installed is not None
    _installed.codes = {}  # written afresh: texts of older versions go
    for module in pkgutil.walk_packages(ctrconv.__path__, "ctrconv."):
        if module.name in ("ctrconv.codecache", "ctrconv.__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except Exception:  # noqa: BLE001 - an optional dependency missing: its classes are compiled at run time
            pass
    _compile_schema_checks()
    _installed.added = True
    _installed.save()


#: the orders in which commands meet document types (a schema check's generated text depends
#: on the checks made before it in the run): OCI and Docker images, single and multi-platform,
#: from a root or an OCI layout
_SCHEMA_ORDERS = (
    ("image-manifest.json", "config.json"),
    ("image-index.json", "image-manifest.json", "config.json"),
    ("image-layout.json", "image-index.json", "image-manifest.json", "config.json"),
    ("docker-manifest-v2.json", "docker-config.json"),
    ("docker-manifest-list.json", "docker-manifest-v2.json", "docker-config.json"),
    ("image-index.json", "docker-manifest-v2.json", "docker-config.json"),
    ("image-layout.json", "image-index.json", "docker-manifest-v2.json", "docker-config.json"),
)


def _compile_schema_checks() -> None:
    from ctrconv.oci import fastschema, validate

    for order in _SCHEMA_ORDERS:
        compiler = fastschema._compiler.__wrapped__(str(validate.SCHEMA_DIR))  # a fresh run's
        for schema_file in order:
            compiler.check(validate._SCHEMA_BASE + schema_file)


if __name__ == "__main__":
    from ctrconv import codecache  # (this file runs as ``__main__``: the modules use the package's own)

    codecache._write_now()
