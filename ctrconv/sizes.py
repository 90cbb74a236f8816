"""Sizes as ``ctr`` prints them: a module of its own, so a command that reports one size
(``export``'s summary line) does not import the listing machinery of :mod:`ctrconv.inventory`."""

from __future__ import annotations

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def human_size(n: int) -> str:
    """ctr's ``progress.Bytes`` (go-units ``CustomSize("%02.1f %s", n, 1024, ...)``): the size
    divided by 1024 while it is 1024 or more. For a size JSON can state exactly (below 2^53,
    every size a document holds) the unit comes from the bit length and the size is divided
    once: dividing by a power of two is exact, so the text is the loop's (half its time, a
    table of 10,000 images formats 10,000 sizes)."""
    if type(n) is int and 0 <= n < 1 << 53:
        i = min((n.bit_length() - 1) // 10, 8) if n else 0
        return "%02.1f %s" % (n / (1 << 10 * i), _SIZE_UNITS[i])
    size, i = float(n), 0
    while size >= 1024 and i < len(_SIZE_UNITS) - 1:
        size /= 1024
        i += 1
    return "%02.1f %s" % (size, _SIZE_UNITS[i])
