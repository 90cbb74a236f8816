"""Run one ``ctrconv`` command line in this process and count the work it does.

``python3 -m support.opcount OUT.json ARG...`` runs ``ctrconv ARG...`` (through
:func:`ctrconv.entry.main`) and writes to ``OUT.json`` how many times it

* called a Python function (``calls``: every frame, so a loop over all images inside a loop
  over all images shows however it is written),
* parsed a JSON document (``json_parses``: :func:`ctrconv.oci.validate.parse_json_bytes`),
* visited a bolt page (``bolt_pages``: :meth:`ctrconv.bolt.reader.BoltFile.page`),
* opened a blob of a content store (``blob_opens``: ``ContentStore.open`` and ``read_exact``),
* ``stat``-ed a path (``stats``), and how many directory entries it listed (``dir_entries``:
  ``os.scandir``/``os.listdir``; a rescan of the blob directory per image shows here).

With ``OPCOUNT_RESCAN=1`` each image ``ls`` summarises also lists the blob directory: the
per-image rescan this counting exists to catch, for the test that shows it is caught. With
``OPCOUNT_LIST_FROM=N`` ``ls`` lists the blob directories once from N records on
(:attr:`~ctrconv.containerd.content.ListingContent.LIST_FROM`), so small test roots take the
path large roots take.

Counts, not times: they are the same on every run and on every machine, so a test can compare
them between a small and a ten times larger root (``tests/unit/test_scale.py``).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any, Callable


def _counting(counts: Counter, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def install(counts: Counter) -> None:
    """Wrap the counted operations (module and class attributes, looked up at call time)."""
    from ctrconv.bolt.reader import BoltFile
    from ctrconv.containerd.content import ContentStore
    from ctrconv.oci import validate

    validate.parse_json_bytes = _counting(counts, "json_parses", validate.parse_json_bytes)
    BoltFile.page = _counting(counts, "bolt_pages", BoltFile.page)  # type: ignore[method-assign]
    ContentStore.open = _counting(counts, "blob_opens", ContentStore.open)  # type: ignore[method-assign]
    ContentStore.read_exact = _counting(counts, "blob_opens", ContentStore.read_exact)  # type: ignore[method-assign]
    os.stat = _counting(counts, "stats", os.stat)
    scandir, listdir = os.scandir, os.listdir

    def counted_scandir(*args: Any) -> Any:
        return _Entries(scandir(*args), counts)

    def counted_listdir(*args: Any) -> list[str]:
        names = listdir(*args)
        counts["dir_entries"] += len(names)
        return names

    os.scandir = counted_scandir  # type: ignore[assignment]
    os.listdir = counted_listdir


class _Entries:
    """An ``os.scandir`` iterator that counts the entries taken from it."""

    def __init__(self, it: Any, counts: Counter) -> None:
        self._it, self._counts = it, counts

    def __iter__(self) -> "_Entries":
        return self

    def __next__(self) -> Any:
        entry = next(self._it)
        self._counts["dir_entries"] += 1
        return entry

    def __enter__(self) -> "_Entries":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._it.close()

    def close(self) -> None:
        self._it.close()


def inject_rescan() -> None:
    """Make ``ls`` list the blob directory once per image (see the module docstring)."""
    from ctrconv import inventory

    summarize = inventory.summarize

    def rescanning(image: Any, content: Any, *args: Any, **kwargs: Any) -> Any:
        os.listdir(os.path.join(content.path, "blobs", "sha256"))
        return summarize(image, content, *args, **kwargs)

    inventory.summarize = rescanning


def main() -> int:
    out, args = sys.argv[1], sys.argv[2:]
    counts: Counter = Counter()
    install(counts)
    if os.environ.get("OPCOUNT_RESCAN") == "1":
        inject_rescan()
    if "OPCOUNT_LIST_FROM" in os.environ:
        from ctrconv.containerd.content import ListingContent

        ListingContent.LIST_FROM = int(os.environ["OPCOUNT_LIST_FROM"])

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            counts["calls"] += 1

    from ctrconv.entry import main as ctrconv_main

    code: Any = 0
    sys.setprofile(profile)
    try:
        ctrconv_main(args)
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.setprofile(None)
        with open(out, "w") as f:
            json.dump({"exit": code, **counts}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
