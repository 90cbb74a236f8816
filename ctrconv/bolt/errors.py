"""Errors for damaged or unreadable bolt files; every one names the page where it applies."""

from __future__ import annotations

from ctrconv.errors import CtrconvError


class BoltError(CtrconvError):
    """Base of every bolt file problem."""

    def __init__(self, message: str, *, page: int | None = None, path: str | None = None) -> None:
        self.page = page
        self.path = path
        where = []
        if path:
            where.append(path)
        if page is not None:
            where.append(f"page {page}")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class UnreadableFile(BoltError):
    """The file cannot be opened at all (missing, permissions): a usage error."""

    exit_code = 2


class FileTooSmall(BoltError):
    """Shorter than two pages, or shorter than the meta's high-water mark."""


class InvalidMeta(BoltError):
    """A meta page with bad magic, version, checksum or page size."""


class NoValidMeta(BoltError):
    """Neither meta page is usable."""


class CorruptPage(BoltError):
    """A page reachable from the tree whose header or elements are wrong."""


class PageCycle(CorruptPage):
    """A page reached twice while walking the tree (cycle or double reference)."""


class KeyOrderError(CorruptPage):
    """Keys of a page not strictly increasing."""
