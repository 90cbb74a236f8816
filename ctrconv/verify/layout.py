"""Verify an OCI layout or image archive: every index/manifest/config against the schemas and
every blob's digest and size (streamed)."""

from __future__ import annotations

from typing import Callable

from ctrconv.errors import ContentError, CtrconvError
from ctrconv.oci import mediatypes as mt
from ctrconv.image.plan import plan_image, platform_string
from ctrconv.streams import CHUNK, VerifyingReader
from ctrconv.digest import Digest
from ctrconv.verify.problems import Report


def verify_layout(path: str, *, progress: Callable[[int], object] | None = None) -> Report:
    from ctrconv.sources import open_source

    report = Report()
    source = open_source(path)
    try:
        checked: set[str] = set()
        for entry in source.entries():
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
                digest = desc["digest"]
                if digest in missing or digest in checked:
                    continue
                checked.add(digest)
                report.count("blobs")
                try:
                    d = Digest.parse(digest)
                    with source.open(d) as stream:
                        reader = VerifyingReader(stream, d, desc["size"], what=f"blob {d}")
                        while True:
                            chunk = reader.read(CHUNK)
                            if not chunk:
                                break
                            if progress:
                                progress(len(chunk))
                except ContentError as exc:
                    report.add("corrupt-blob", f"blob {digest}", path, str(exc))
    finally:
        source.close()
    return report
