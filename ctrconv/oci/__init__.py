"""The OCI / Docker image model: media types, descriptors, schemas, references, platforms.

Everything here is pure (no I/O beyond reading the bundled schemas and ``/proc/cpuinfo``),
so sources, sinks and the containerd store all share one notion of a valid image document.
"""

from ctrconv.oci import mediatypes
from ctrconv.oci.model import Descriptor, ImageConfig, Index, Manifest, marshal_go, parse_blob
from ctrconv.oci.platform import (
    ALL,
    Platform,
    default_matcher,
    default_strict_matcher,
    format_platform,
    host_platform,
    normalize,
    only,
    only_strict,
    ordered,
    parse_platform,
    select_children,
)
from ctrconv.oci.reference import (
    Reference,
    familiarize,
    import_name,
    oci_ref_name,
    parse_docker_ref,
    parse_normalized_named,
)
from ctrconv.oci.validate import parse_config_diff_ids, parse_json_bytes, validate_json

__all__ = [
    "ALL",
    "Descriptor",
    "ImageConfig",
    "Index",
    "Manifest",
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
    "parse_blob",
    "parse_config_diff_ids",
    "parse_docker_ref",
    "parse_json_bytes",
    "parse_normalized_named",
    "parse_platform",
    "select_children",
    "validate_json",
]
