"""``verify``: find every broken thing in a containerd root or an OCI layout.

Problems are data (:class:`Problem` records collected in a :class:`Report`), not exceptions:
one damaged record never hides the next.
"""

from ctrconv.verify.problems import Problem, Report

__all__ = ["Problem", "Report"]
