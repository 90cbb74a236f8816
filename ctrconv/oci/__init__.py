"""OCI / Docker image formats: media types, schemas, references, platforms, Go JSON output.

The image model the pipeline carries (plans of descriptors and validated documents) is
:mod:`ctrconv.image.model`.

Everything here is pure (no I/O beyond reading the bundled schemas and ``/proc/cpuinfo``),
so sources, sinks and the containerd store all share one notion of a valid image document.

Names are resolved on first use (PEP 562): ``ctrconv.oci.platform`` alone (what ``ctrconv ls``
needs) must not import the model's schema validation, and jsonschema with it.
"""

from __future__ import annotations

from ctrconv.lazy import lazy_exports

#: exported name -> the submodule defining it
_WHERE = {
    "mediatypes": "",
    "marshal_go": "gojson",
    **dict.fromkeys(
        ("ALL", "Platform", "default_matcher", "default_strict_matcher", "format_platform", "host_platform",
         "normalize", "only", "only_strict", "ordered", "parse_platform", "select_children"), "platform"),
    **dict.fromkeys(
        ("Reference", "familiarize", "import_name", "oci_ref_name", "parse_docker_ref", "parse_normalized_named"),
        "reference"),
    **dict.fromkeys(("parse_config_diff_ids", "parse_json_bytes", "validate_json"), "validate"),
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)


__all__ = [
    "ALL",
    "Platform",
    "Reference",
    "default_matcher",
    "default_strict_matcher",
    "familiarize",
    "format_platform",
    "host_platform",
    "import_name",
    "marshal_go",
    "mediatypes",
    "normalize",
    "oci_ref_name",
    "only",
    "only_strict",
    "ordered",
    "parse_config_diff_ids",
    "parse_docker_ref",
    "parse_json_bytes",
    "parse_normalized_named",
    "parse_platform",
    "select_children",
    "validate_json",
]
