"""Hostile-input corpus, built by code (nothing downloaded): see :mod:`hostile.corpus`."""
