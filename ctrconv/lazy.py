"""Package names imported from their submodules on first use (PEP 562).

A command that needs one light name of a package (``ctrconv ls`` wants ``chain_ids``, the
``--help`` text the sink format names) must not import the package's heavy submodules (tar and
decompression machinery, schema validation) with it. A package lists where each name lives
and takes its ``__getattr__`` and ``__dir__`` from :func:`lazy_exports`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, where: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``where`` maps a name to the submodule
    defining it (``""``: the name is itself a submodule). A resolved name is cached in the
    package, so each is looked up once."""
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        try:
            submodule = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        if submodule:
            value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        else:
            value = importlib.import_module(f"{package}.{name}")
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *where})

    return __getattr__, __dir__


__all__: list[str] = ["lazy_exports"]
