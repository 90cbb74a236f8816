"""Outcome rules for one fuzz case: allowed exceptions, a time bound and a memory bound.

A case may return anything or raise :class:`CtrconvError`. Any other exception, running longer
than the time bound (``SIGALRM`` interval timer, so it must run on the main thread) or a Python
heap peak above the memory bound (``tracemalloc``) is a :class:`Finding`, which carries the
original exception so the regression test can show it.
"""

from __future__ import annotations

import contextlib
import signal
import traceback
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterator

from ctrconv.errors import CtrconvError

#: wall-clock seconds one case may take (the seeds take milliseconds)
DEFAULT_SECONDS = 10.0
#: Python heap peak one case may reach; seeds are < 1 MiB, reads are chunked at 1 MiB
DEFAULT_PEAK = 64 << 20


class Finding(AssertionError):
    """A case broke the contract: wrong exception type, hang or memory blow-up."""

    def __init__(self, kind: str, detail: str, cause: BaseException | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.cause = cause


class CaseTimeout(BaseException):
    """Raised by the interval timer; a BaseException so ``except Exception`` cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in the main thread after ``seconds`` of wall time."""

    def fire(signum: int, frame: Any) -> None:
        raise CaseTimeout()

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_case(
    fn: Callable[[], Any],
    *,
    seconds: float = DEFAULT_SECONDS,
    peak: int | None = DEFAULT_PEAK,
) -> Any:
    """Run ``fn`` under the bounds; return its result or the :class:`CtrconvError` it raised.

    Raises :class:`Finding` for everything else.
    """
    tracing = peak is not None and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    try:
        with time_limit(seconds):
            try:
                return fn()
            except CtrconvError as exc:
                return exc
    except CaseTimeout:
        raise Finding("timeout", f"case ran longer than {seconds} s") from None
    except (RecursionError, MemoryError) as exc:
        raise Finding(type(exc).__name__, str(exc)[:300], exc) from exc
    except Exception as exc:  # the contract: nothing but CtrconvError escapes
        raise Finding("exception", f"{type(exc).__name__}: {str(exc)[:300]}", exc) from exc
    finally:
        if tracing:
            _, top = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            if top > peak:  # type: ignore[operator]
                raise Finding("memory", f"heap peak {top} bytes above the {peak} byte bound")


def signature(finding: Finding) -> str:
    """``kind:Exception:file:function`` of the innermost ctrconv frame: one per distinct bug.

    Line numbers are left out so a signature survives edits elsewhere in the file.
    """
    cause = finding.cause
    if cause is None:
        return finding.kind
    frames = traceback.extract_tb(cause.__traceback__)
    own = [f for f in frames if "/ctrconv/" in f.filename] or frames
    where = f"{Path(own[-1].filename).name}:{own[-1].name}" if own else "?"
    return f"{finding.kind}:{type(cause).__name__}:{where}"
