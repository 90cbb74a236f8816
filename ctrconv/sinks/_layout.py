"""The name documents of an OCI layout and a docker archive, byte-exact with ``ctr``.

``ctr images export`` (containerd ``images/archive/exporter.go``) marshals these with Go's
``json.Marshal``: struct fields in declaration order, map keys sorted, no trailing newline;
:func:`ctrconv.oci.gojson.marshal_go` reproduces that encoding.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from ctrconv.containerd import docker_store
from ctrconv.errors import UsageError
from ctrconv.oci import mediatypes as mt
from ctrconv.oci import reference
from ctrconv.oci.gojson import marshal_go
from ctrconv.sinks.base import ExportedImage, blob_path

#: ``{"imageLayoutVersion":"1.0.0"}``, 30 bytes, no newline (``ociLayoutFile``).
OCI_LAYOUT = marshal_go({"imageLayoutVersion": "1.0.0"})


def index_json(entries: Sequence[dict[str, Any]], *, media_type: bool) -> bytes:
    """``index.json``: ``ocispec.Index`` with ``schemaVersion`` 2.

    containerd 1.6.31+/1.7.15+/2.x also set the top-level ``mediaType`` (``media_type=True``);
    1.6.20 (Debian 12) leaves it out.
    """
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        doc["mediaType"] = mt.OCI_INDEX
    doc["manifests"] = list(entries)
    return marshal_go(doc)


def name_entry(desc: dict[str, Any], name: str) -> dict[str, Any]:
    """An ``index.json`` entry naming ``desc`` like ``addNameAnnotation``.

    The descriptor's own annotations are kept and the two name annotations set; fields are in
    ``ocispec.Descriptor`` order and annotation keys sorted, as Go marshals a map.
    """
    annotations = dict(desc.get("annotations") or {})
    annotations[reference.ANNOTATION_IMAGE_NAME] = name
    annotations[reference.ANNOTATION_REF_NAME] = reference.oci_ref_name(name)
    entry: dict[str, Any] = {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"]}
    if desc.get("urls"):
        entry["urls"] = list(desc["urls"])
    entry["annotations"] = {k: annotations[k] for k in sorted(annotations)}
    if desc.get("platform"):
        entry["platform"] = desc["platform"]
    return entry


def _familiar(name: str) -> str | None:
    try:
        return reference.familiarize(name)
    except UsageError:
        return None


def docker_tag(name: str) -> str | None:
    """The ``repo:tag`` docker accepts in ``RepoTags`` for ``name``, or None.

    Digest references and CRI's ``sha256:<id>`` aliases are not tags ``docker load`` can
    create, so they are left out.
    """
    familiar = _familiar(name)
    if familiar is None or "@" in familiar:
        return None
    repo, _, tag = familiar.rpartition(":")
    if repo == "sha256" and len(tag) == 64:
        return None
    return familiar


def group_by_manifest(images: Sequence[ExportedImage]) -> list[tuple[ExportedImage, list[str]]]:
    """Images grouped by chosen manifest digest, first-seen order; each with its names."""
    groups: dict[str, tuple[ExportedImage, list[str]]] = {}
    for image in images:
        if image.manifest is None:
            continue
        key = image.manifest.descriptor["digest"]
        if key not in groups:
            groups[key] = (image, [])
        groups[key][1].append(image.name)
    return list(groups.values())


def _manifest_item(image: ExportedImage, tags: list[str] | None) -> dict[str, Any]:
    assert image.manifest is not None
    layers = [blob_path(layer["digest"]) for layer in image.manifest.layers]
    return {
        "Config": blob_path(image.manifest.config["digest"]),
        "RepoTags": tags,
        "Layers": layers or None,
    }


def ctr_manifest_json(images: Sequence[ExportedImage]) -> bytes | None:
    """``manifest.json`` exactly as ``ctr images export`` writes it (``manifestsRecord``).

    RepoTags are the familiarised names (``docker.io/library/test:v1`` -> ``test:v1``); a name
    that cannot be familiarised is left out (ctr would fail the whole export instead).
    None when no image has a manifest (then ctr writes no manifest.json).
    """
    groups = group_by_manifest(images)
    if not groups:
        return None
    items = []
    for image, names in groups:
        tags = [t for t in (_familiar(n) for n in names) if t is not None]
        items.append(_manifest_item(image, tags or None))
    return marshal_go(items)


#: an image ID used as a name (CRI's alias of an image; an export by ID)
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


def is_unnamed(name: str) -> bool:
    """``name`` stands for no name: Docker's dangling-image record, or an image ID (what an
    export by ID names its images, like ``docker save <ID>``)."""
    return docker_store.is_dangling(name) or _IMAGE_ID.fullmatch(name) is not None


def unnamed_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """An ``index.json`` entry without the two name annotations (``docker save <ID>``)."""
    out = dict(entry)
    annotations = {k: v for k, v in (entry.get("annotations") or {}).items()
                   if k not in (reference.ANNOTATION_IMAGE_NAME, reference.ANNOTATION_REF_NAME)}
    if annotations:
        out["annotations"] = annotations
    else:
        out.pop("annotations", None)
    return out


def docker_manifest_json(images: Sequence[ExportedImage]) -> bytes:
    """``manifest.json`` for a docker archive as Docker 25+'s ``docker save`` writes it: one
    entry per manifest, ``RepoTags`` its docker tags, or null when it has none (an unnamed
    image: ``docker load`` then prints ``Loaded image ID``)."""
    items = []
    for image, names in group_by_manifest(images):
        tags = list(dict.fromkeys(t for t in (docker_tag(n) for n in names) if t is not None))
        items.append(_manifest_item(image, tags or None))
    return marshal_go(items)
