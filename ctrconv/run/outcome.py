"""A command run's outcome: one ``ctrconv: error: ...`` line and an exit code for every way a
command can fail (the contract's codes: 0, 1 failed, 2 usage, 128+N signal), and the run's end
(late signals, flushed streams). Shared by the typer CLI and the shortcut (:mod:`ctrconv.run`)."""

from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn

from ctrconv import commitpoint, interrupts, tempfiles
from ctrconv.errors import CtrconvError
from ctrconv.run.jsontext import indented
from ctrconv.run.lines import one_line

#: raised by the signal handler while a command runs (:mod:`ctrconv.interrupts`)
Stopped = interrupts.Stopped
#: the exit status of a command whose output's reader went away (128 + SIGPIPE)
EXIT_BROKEN_PIPE = 141


def error_line(message: str) -> None:
    sys.stderr.write(f"ctrconv: error: {one_line(message)}\n")
    sys.stderr.flush()


def warning_line(message: str) -> None:
    sys.stderr.write(f"ctrconv: warning: {one_line(message)}\n")
    sys.stderr.flush()


def print_json(document: Any) -> None:
    sys.stdout.write(indented(document) + "\n")  # json.dumps(indent=2, default=str)'s text


def guarded(invoke: Callable[[], int], debug: bool) -> int:
    """``invoke()``'s exit code, or the code of what it raised, worded as one error line (a
    traceback too only with ``debug``); temporary outputs left by an error are removed."""
    try:
        return invoke()
    except CtrconvError as exc:
        if debug:
            _print_traceback()
        message = str(exc)
        if exc.hint:
            message += f" ({exc.hint})"
        if commitpoint.unfinished_note():
            message += f" ({commitpoint.unfinished_note()})"
        error_line(message)
        return exc.exit_code
    except BrokenPipeError:
        # the reader of standard output (or of an -o FIFO) went away (``| head``): as a shell
        # writer that SIGPIPE ends, silently and with 128 + SIGPIPE, never 1 (verify's "found
        # problems"), which a clean root got by timing alone. Past the commit point what the
        # command wrote is in place: only its report was lost, and 0 says the write is durable.
        return 0 if commitpoint.passed() else EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    except Stopped as exc:
        error_line(interrupts.word(exc.signum))
        return 128 + exc.signum
    except RecursionError:
        if debug:
            _print_traceback()
        error_line("input nested too deeply")
        return 1
    except MemoryError:
        error_line("out of memory")
        return 1
    except OSError as exc:
        if debug:
            _print_traceback()
        message = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
        if commitpoint.unfinished_note():
            message += f" ({commitpoint.unfinished_note()})"
        elif commitpoint.passed():  # (writing the report to a full or closed stream, say)
            message += " (after the commit point: what the command wrote is in place)"
        error_line(message)
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            _print_traceback()
        error_line(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)")
        return 1
    finally:
        # temp outputs a signal or an error left between their creation and their cleanup
        tempfiles.remove_leftovers()


def finish(run: Callable[[], int]) -> NoReturn:
    """Run a command (``run`` returns its exit code) and end with that code: names read from
    damaged or foreign stores may hold bytes that are not UTF-8 (decoded with surrogateescape),
    so they are shown escaped instead of failing on output; a signal that came after the
    command had decided its outcome is reported; the streams are flushed."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    with interrupts.command_running():
        code = run()
        late = interrupts.late_signals()
        if late and code == 0:
            # the command had passed its commit point: what it reported is written
            warning_line(f"{interrupts.word(late[0])} after writing; the command had completed")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (BrokenPipeError, ValueError, AttributeError):  # AttributeError: started closed (None)
                pass
    raise SystemExit(code)


def _print_traceback() -> None:
    """``traceback.print_exc()``, imported only when one is printed (``--debug``, an internal
    error): ~1.3 ms of every command's start otherwise."""
    import traceback

    traceback.print_exc()
