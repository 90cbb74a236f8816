"""Verify an OCI layout or image archive: every index/manifest/config against the schemas and
every blob's digest and size (streamed)."""

from __future__ import annotations

from typing import Any

from ctrconv.errors import ContentError, CtrconvError, FormatError
from ctrconv.oci import mediatypes as mt
from ctrconv.image.plan import plan_image, platform_string
from ctrconv.streams import CHUNK, VerifyingReader
from ctrconv.digest import Digest
from ctrconv.progress import Progress, Stage, stage
from ctrconv.verify.problems import Report


def verify_layout(path: str, *, progress: Progress | None = None) -> Report:
    """Every problem of the layout at ``path``; ``progress`` gets one ``verify`` stage whose
    total, the bytes of every blob to hash, is summed from the manifests before hashing."""
    from ctrconv.sources import open_source

    report = Report()
    try:
        source = open_source(path)
    except (FormatError, ContentError) as exc:
        return _invalid_layout(report, path, exc)
    try:
        try:
            entries = source.entries()
        except (FormatError, ContentError) as exc:
            return _invalid_layout(report, path, exc)
        blobs = _plan_images(source, path, report, entries)
        with stage(progress, "verify", sum(int(desc["size"]) for desc in blobs)) as step:
            for desc in blobs:
                _check_blob(source, desc, path, report, step)
    finally:
        source.close()
    return report


def _invalid_layout(report: Report, path: str, exc: CtrconvError) -> Report:
    """The layout's own ``oci-layout`` or ``index.json`` is damaged: a problem of what is
    verified, reported like any other (``--json`` printed no document for it), not a failure
    of verify; a path that is no layout at all stays a usage error."""
    report.add("invalid-layout", f"layout {path}", path, str(exc))
    return report


def _plan_images(source: Any, path: str, report: Report, entries: list[Any]) -> list[dict[str, Any]]:
    """Plan every image of ``entries`` (its document problems reported); the blobs to hash,
    each once."""
    checked: dict[str, dict[str, Any]] = {}
    for entry in entries:
        obj = f"image {entry.name or entry.descriptor.get('digest')}"
        report.count("images")
        try:
            plan = plan_image(source, entry.descriptor, None)
        except ContentError as exc:
            report.add("corrupt-blob", obj, path, str(exc))
            continue
        except CtrconvError as exc:
            report.add("invalid-json", obj, path, str(exc))
            continue
        missing = {d["digest"] for d in plan.missing}
        for desc in plan.missing:
            if desc.get("platform") and mt.is_manifest(desc.get("mediaType", "")):
                report.add("absent-platform", obj, path, f"platform {platform_string(desc['platform'])} ({desc['digest']}) not in the layout", severity="info")
            else:
                report.add("missing-blob", obj, path, f"{desc.get('mediaType')} {desc['digest']} is referenced but absent")
        for desc in plan.blobs:
            if desc["digest"] not in missing:
                checked.setdefault(desc["digest"], desc)
    return list(checked.values())


def _check_blob(source: Any, desc: dict[str, Any], path: str, report: Report, step: Stage) -> None:
    """Stream one blob through its digest and size check."""
    digest = desc["digest"]
    report.count("blobs")
    try:
        d = Digest.parse(digest)
        with source.open(d) as stream:
            reader = VerifyingReader(stream, d, desc["size"], what=f"blob {d}")
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                step.advance(len(chunk))
    except ContentError as exc:
        report.add("corrupt-blob", f"blob {digest}", path, str(exc))
