"""``ctrconv ls`` as a function of its options: the images of a root, like ``ctr images ls``
plus completeness (the typer command :mod:`ctrconv.cli.ls` and the shortcut run this)."""

from __future__ import annotations

import sys
from pathlib import Path

from ctrconv import api
from ctrconv.errors import UsageError
from ctrconv.run.lines import one_line
from ctrconv.run.outcome import print_json, warning_line
from ctrconv.run.options import wait_seconds


def ls(root: Path, namespace: str, all_namespaces: bool, platform: str | None, as_json: bool, quiet: bool,
       ignore_lock: bool, wait: str | None) -> None:
    """The listing on stdout (a table, ``--json``'s document or ``-q``'s names), a warning on
    stderr for each image whose walk failed."""
    namespaces = None if all_namespaces else [api.check_namespace(namespace)]
    if platform == "":  # (judged the host's: export refuses it)
        raise UsageError("--platform: an empty platform names none (did a variable expand to nothing?)")
    if quiet and not as_json:  # names only: from the image records, no document read
        with api.waiting(wait_seconds(wait)):
            names = api.list_image_names(root, namespaces, ignore_lock=ignore_lock, platform=platform)
        sys.stdout.write("".join(one_line(name) + "\n" for name in names))
        return
    with api.waiting(wait_seconds(wait)):
        images = api.list_images(root, namespaces, ignore_lock=ignore_lock, platform=platform)
    if as_json:
        print_json({"images": [i.to_json() for i in images]})
        return
    judged = images[0].judged_platform if images else ""
    rows = [("NAMESPACE", "REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", f"COMPLETE ({judged})" if judged else "COMPLETE")]
    for i in images:
        if i.status == "platform-absent":
            complete = f"not pulled (has {','.join(i.present_platforms)})"
        elif i.status == "layers-discarded":
            complete = "no (layer blobs not stored: discarded after unpack or never fetched; runs)"
        else:
            complete = "yes" if i.complete else ("error" if i.problem else f"no ({len(i.missing)} missing)")
        rows.append((_shown(i.namespace), _shown(i.name), _shown(i.media_type), _shown(i.digest), api.human_size(i.size),
                     _shown(",".join(i.platforms) or "-"), _shown(complete)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    line = "  ".join(f"{{:{w}}}" for w in widths)  # each cell padded as ``str.ljust`` pads it
    sys.stdout.write("".join(line.format(*r).rstrip() + "\n" for r in rows))
    for i in images:
        if i.problem:
            warning_line(f"{i.namespace}/{i.name}: {i.problem}")


def _shown(text: str) -> str:
    """``text`` as stdout writes it (``backslashreplace``): a stored name that is no UTF-8
    keeps its bytes as ``\\udcff`` escapes, six characters each, which the columns must count;
    control characters escaped (:func:`~ctrconv.run.lines.one_line`)."""
    text = one_line(text)
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")
