"""The console script and ``python -m ctrconv``: signal handlers first, heavy imports after.

Importing the CLI pulls in typer and the command's module (tens of milliseconds, more on a
loaded machine); a Ctrl-C in that time must give one line and exit 130, not a
``KeyboardInterrupt`` traceback. ``--version`` is answered here, without the CLI, and the
most frequent ``ls`` command lines run without typer (:mod:`ctrconv.run.shortcut`).

As the process entry (``argv`` not given) it also sets the process's garbage-collection
pace and, once the command has finished, ends the process without the interpreter's teardown
(:func:`_end_process`); a caller that passes ``argv`` (tests, embedding programs) keeps
Python's defaults and gets ``SystemExit`` as before.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading

from ctrconv import interrupts, stdstreams


def _version_only(argv: list[str]) -> bool:
    """``ctrconv --version`` (``--debug`` aside): answered before typer is imported, as the
    CLI's eager ``--version`` would answer it."""
    return "--version" in argv and set(argv) <= {"--version", "--debug"}


def _print_version() -> int:
    from ctrconv import __version__

    if sys.stdout is None or "stdout" in stdstreams.CLOSED:  # started with standard output closed
        if sys.stderr is not None:
            sys.stderr.write("ctrconv: error: standard output is closed\n")
        return 1
    try:
        sys.stdout.write(f"ctrconv {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (``| head -c0``): as the CLI, no message
        return 141
    return 0


#: generation-0 threshold of a ctrconv process (Python's default is 700): a command over a
#: large root builds hundreds of thousands of short-lived dicts and lists (parsed documents,
#: records) whose memory reference counting already returns; at 700 the collector ran ~200
#: times in a 10,000-image ``ls`` and took 8 % of its CPU, traversing the long-lived records
#: each time it reached the older generations. At 50,000 it runs a few times; the cyclic
#: garbage it leaves between runs is a few megabytes at most.
GC_YOUNG_THRESHOLD = 50_000


def main(argv: list[str] | None = None) -> None:
    interrupts.install_early()
    if argv is None:
        stdstreams.reopen_closed()  # before anything opens a file (see the module)
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
    if _version_only(sys.argv[1:] if argv is None else argv):
        code = _print_version()
        interrupts.ignore_from_now_on()
        raise SystemExit(code)
    try:
        if argv is None:
            from ctrconv import codecache

            codecache.install()  # before the first dataclass of a command module is made
        from ctrconv.run import shortcut

        quick = shortcut.take(sys.argv[1:] if argv is None else argv)
        if quick is not None:  # an ``ls`` command line: run without building the typer app
            from ctrconv.run.outcome import finish

            finish(quick)
        from ctrconv.cli import main as cli_main

        cli_main(argv)
    except SystemExit as exc:
        if argv is None and isinstance(exc.code, int):
            _end_process(exc.code)
        raise
    finally:
        # the command has decided its outcome: a signal now must not kill the process while
        # the interpreter shuts down (which puts Python handlers back to SIG_DFL, and a
        # Ctrl-C then ends the process by the signal instead of the command's exit code)
        interrupts.ignore_from_now_on()


def _end_process(code: int) -> None:
    """Exit now with ``code``, skipping the interpreter's teardown, when nothing is left for it
    to do but free memory: the command has returned (what it wrote is closed and, where it
    reports a write, fsync-ed by the command itself: :mod:`ctrconv.durability`), no other
    thread runs (the teardown would wait for it), the ``atexit`` handlers run here, and the
    standard streams are flushed. Freeing the objects of a 10,000-image listing took 60-100 ms
    of a one-second ``ls``. Returns (and the normal exit follows) when any of that fails."""
    if threading.active_count() != 1:
        return
    interrupts.ignore_from_now_on()
    try:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:  # noqa: BLE001 - an unflushable stream: let the normal exit report it
        return
    os._exit(code)
