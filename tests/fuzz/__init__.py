"""Fuzzing support: seed inputs, mutators, bounded targets (shared by CI tests and ``run_long.py``).

Every target takes one input (bytes) and may only return or raise
:class:`ctrconv.errors.CtrconvError`; anything else, a case running past its time bound or a
memory peak past its bound is a finding (:class:`fuzz.bounds.Finding`).
"""
