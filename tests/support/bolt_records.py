"""Helpers of the record readers' differential tests (content records, image records and
content-record keys read from their leaf pages, against the reading with a ``Bucket`` per
record): damaged copies of a bolt file, opened one after another, and the buckets a reading
makes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import pytest

from ctrconv.bolt import BoltFile
from ctrconv.bolt import reader as bolt_reader
from ctrconv.errors import CtrconvError

T = TypeVar("T")


def flipped_pages(original: bytes, pages: Callable[[], int], rng, trials: int, *, most: int = 4,  # type: ignore[no-untyped-def]
                  near_header: float = 0.7, header: int = 256, page_size: int = 4096) -> Iterable[bytes]:
    """``trials`` copies of a bolt file's bytes with 1..``most`` random bytes changed, each in a
    page ``pages()`` picks, near the page header (its first ``header`` bytes) with probability
    ``near_header``, anywhere in the page otherwise: the record readers' differential damage
    tests (same ``rng`` draws in the same order as the loops they replaced)."""
    for _ in range(trials):
        data = bytearray(original)
        for _ in range(rng.randint(1, most)):
            page = pages()
            at = page * page_size + rng.randrange(header if rng.random() < near_header else page_size)
            data[at] = rng.randrange(256)
        yield bytes(data)


def damaged_files(path: Path, original: bytes, pages: Callable[[], int], rng, trials: int,  # type: ignore[no-untyped-def]
                  **damage: float) -> Iterator[tuple[int, BoltFile]]:
    """(trial, the open file) for each of :func:`flipped_pages`' copies written to ``path``;
    a copy whose meta pages do not open is skipped, and each file is closed when the caller
    asks for the next."""
    for trial, data in enumerate(flipped_pages(original, pages, rng, trials, **damage)):  # type: ignore[arg-type]
        path.write_bytes(data)
        try:
            db = BoltFile(path)
        except CtrconvError:
            continue
        with db:
            yield trial, db


def buckets_made(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The keys of the sub-buckets every ``Bucket`` lookup makes from now on, in order (the
    leaf-page readers must make none for a sound record)."""
    made: list[bytes] = []
    real = bolt_reader.Bucket._child
    monkeypatch.setattr(bolt_reader.Bucket, "_child", lambda self, key, *a: made.append(key) or real(self, key, *a))
    return made


def until_error(read: Callable[[], Iterable[T]]) -> tuple[list[T], object]:
    """The records ``read`` gives before its first error, and that error (type and wording),
    or None: what two readers of one damaged file are compared by."""
    got: list[T] = []
    try:
        for record in read():
            got.append(record)
    except CtrconvError as exc:
        return got, (type(exc), str(exc))
    return got, None
