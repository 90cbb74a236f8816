"""The frozen program of the standalone ``ctrconv`` (``scripts/build-standalone``).

Run by PyInstaller's bootloader instead of the console script. Two things differ from an
installed package and are handled here, before ctrconv's own entry point
(:func:`ctrconv.entry.main`) runs:

* ``import --jobs`` starts a ``forkserver``; frozen, that is this same executable started as
  ``ctrconv -B -s -c 'from multiprocessing.forkserver import main; ...'``, which
  ``multiprocessing.freeze_support()`` diverts (PyInstaller's runtime hook) instead of letting
  the CLI parse it. The forkserver ignores SIGINT, as ``ctrconv.workersignals`` makes it do
  in an installed package (whose check looks for a plain ``python -c``).
* nothing else: the JSON schemas are bundled at ``ctrconv/schemas`` inside the archive, where
  ``ctrconv.oci.validate`` looks for them relative to its own module.
"""

import signal
import sys

_HELPERS = ("from multiprocessing.forkserver import main", "import sys; from multiprocessing.forkserver import main")


def _is_forkserver(argv: list) -> bool:
    if "-c" not in argv:
        return False
    index = argv.index("-c")
    return index + 1 < len(argv) and argv[index + 1].startswith(_HELPERS)


if __name__ == "__main__":
    if _is_forkserver(sys.argv):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    import multiprocessing

    multiprocessing.freeze_support()  # returns unless this process is a multiprocessing helper

    from ctrconv.entry import main

    main()
