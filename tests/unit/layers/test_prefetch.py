"""The decompression read-ahead thread: order, errors, early close."""

from __future__ import annotations

import threading

import pytest

from ctrconv.errors import FormatError
from ctrconv.layers.compression import Prefetch


def test_chunks_arrive_in_order():
    assert list(Prefetch(iter([b"a", b"b", b"c"] * 50), depth=2)) == [b"a", b"b", b"c"] * 50


def test_errors_are_raised_in_the_reader():
    def chunks():
        yield b"ok"
        raise FormatError("corrupt gzip")

    pf = Prefetch(chunks())
    assert next(pf) == b"ok"
    with pytest.raises(FormatError, match="corrupt gzip"):
        next(pf)
    with pytest.raises(StopIteration):
        next(pf)


def test_close_stops_a_producer_blocked_on_a_full_queue():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield b"x" * 1024
        finally:
            closed.set()

    before = threading.active_count()
    pf = Prefetch(endless(), depth=2)
    next(pf)
    pf.close()
    assert closed.wait(5)
    assert threading.active_count() == before
