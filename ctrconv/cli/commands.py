"""Imports every command module so each registers itself on the app."""

from ctrconv.cli import dump, export, ls, verify  # noqa: F401
