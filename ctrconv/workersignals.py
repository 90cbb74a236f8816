"""Preloaded first into the ``forkserver`` of ``import --jobs``: ignore SIGINT there.

A terminal's Ctrl-C goes to the whole process group. The forkserver would get it while it
imports its other preloads (a ``KeyboardInterrupt`` traceback), and each worker inherits the
forkserver's SIGINT disposition as it was before the forkserver's own ``SIG_IGN``. With SIGINT
ignored from here on, only the main process handles it: it stops the workers itself
(:func:`ctrconv.layers.parallel.apply_in_parallel`). Importing this module anywhere but in a
forkserver would be a mistake, hence the check.
"""

from __future__ import annotations

import signal
import sys

if sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
