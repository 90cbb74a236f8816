"""Imports every command module so each registers itself on the app."""

from ctrconv.cli import dump, export, import_, ls, rebuild, verify  # noqa: F401
