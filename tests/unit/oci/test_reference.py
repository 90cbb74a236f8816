"""Reference normalisation tables (distribution/reference, containerd reference.Parse, ctr import)."""

from __future__ import annotations

from datetime import date

import pytest

from ctrconv.errors import UsageError
from ctrconv.oci.reference import (
    digest_name,
    familiarize,
    import_name,
    is_image_prefix,
    normalize,
    oci_ref_name,
    parse_docker_ref,
    parse_normalized_named,
    parse_reference,
)

H = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "given, stored",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/busybox:1", "docker.io/library/busybox:1"),
        ("foo/bar:1", "docker.io/foo/bar:1"),
        ("foo/bar/baz", "docker.io/foo/bar/baz:latest"),
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
        ("[::1]:5000/x:y", "[::1]:5000/x:y"),
        ("example.com/a_b.c-d__e---f:T_1.x-y", "example.com/a_b.c-d__e---f:T_1.x-y"),
        ("Registry.Example/x", "Registry.Example/x:latest"),  # upper-case first part = domain
        (f"busybox@{H}", f"docker.io/library/busybox@{H}"),
        (f"busybox:1@{H}", f"docker.io/library/busybox@{H}"),  # ParseDockerRef drops the tag
        (f"quay.io/x/y@{H}", f"quay.io/x/y@{H}"),
    ],
)
def test_normalize(given: str, stored: str) -> None:
    assert normalize(given) == stored
    assert normalize(stored) == stored  # idempotent


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Busybox",
        "docker.io/Library/busybox",
        "example.com/A",
        "busybox:",
        "busybox:-tag",
        "busybox:" + "t" * 129,
        "busybox@sha256:abc",
        "busybox@sha256:" + "A" * 64,
        "busybox@md5:" + "a" * 32,
        "a" * 64,
        "foo//bar",
        "foo/bar/",
        "-foo",
        "foo_/bar",
        "x/" + "a" * 300,
        "a" * 5000,
        "http://foo/bar",
    ],
)
def test_invalid_references(bad: str) -> None:
    with pytest.raises(UsageError):
        normalize(bad)


def test_parse_parts() -> None:
    ref = parse_docker_ref(f"localhost:5000/a/b:c@{H}")
    assert (ref.domain, ref.path, ref.tag, str(ref.digest)) == ("localhost:5000", "a/b", "", H)
    # plain Parse: no normalisation; like Go's leftmost-first regexp, "a" is taken as domain
    ref = parse_reference("a/b:c")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("a", "b", "c", None)
    ref = parse_reference("busybox")
    assert (ref.domain, ref.path, ref.tag) == ("", "busybox", "")
    ref = parse_normalized_named("busybox")  # no :latest yet
    assert str(ref) == "docker.io/library/busybox" and ref.name == "docker.io/library/busybox"


@pytest.mark.parametrize(
    "name, familiar",
    [
        ("docker.io/library/test:v1", "test:v1"),
        ("docker.io/library/test", "test:latest"),
        ("docker.io/foo/bar:1", "foo/bar:1"),
        ("docker.io/library/a/b:1", "library/a/b:1"),
        ("quay.io/library/x:1", "quay.io/library/x:1"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
        (f"docker.io/library/test@{H}", f"test@{H}"),
        (f"docker.io/library/test:v1@{H}", f"test:v1@{H}"),
    ],
)
def test_familiarize(name: str, familiar: str) -> None:
    assert familiarize(name) == familiar


@pytest.mark.parametrize(
    "name, ref_name",
    [
        ("docker.io/library/test:v1", "v1"),
        (f"docker.io/library/test:v1@{H}", f"v1@{H}"),
        (f"docker.io/library/test@{H}", f"@{H}"),
        ("docker.io/library/test", ""),
        ("localhost:5000/foo:v1", "v1"),
        ("[::1]:5000/foo:v1", "v1"),
        ("user@host/foo:v1", "v1"),
        ("docker.io/x%3Av2", "v2"),  # net/url unescapes the path
        ("docker.io/x:v1?query", "v1"),
        ("test", ""),
        ("test:v1", "test:v1"),  # no host: reference.Parse fails, whole name kept
        ("import-2024-01-01:v1", "import-2024-01-01:v1"),
        ("/foo:v1", "/foo:v1"),
        ("a://b:c", "a://b:c"),
        ("docker.io/x%zz:v1", "docker.io/x%zz:v1"),
    ],
)
def test_oci_ref_name(name: str, ref_name: str) -> None:
    assert oci_ref_name(name) == ref_name


DAY = date(2024, 5, 6)


@pytest.mark.parametrize(
    "annotations, prefix, name",
    [
        ({"io.containerd.image.name": "docker.io/library/a:1"}, None, "docker.io/library/a:1"),
        # the image name annotation wins verbatim, even outside --base-name (1.6/1.7)
        ({"io.containerd.image.name": "x", "org.opencontainers.image.ref.name": "v"}, "foo", "x"),
        ({"org.opencontainers.image.ref.name": "v1"}, None, "import-2024-05-06:v1"),
        ({"org.opencontainers.image.ref.name": "v1"}, "foo/bar", "foo/bar:v1"),
        ({"org.opencontainers.image.ref.name": "docker.io/a/b:1"}, None, "docker.io/a/b:1"),
        ({"org.opencontainers.image.ref.name": "foo/bar:1"}, "foo/bar", "foo/bar:1"),
        ({"org.opencontainers.image.ref.name": "foo/barx:1"}, "foo/bar", None),
        ({"org.opencontainers.image.ref.name": "other/x:1"}, "foo/bar", None),
        ({"org.opencontainers.image.ref.name": f"@{H}"}, None, f"@{H}"),
        ({}, None, None),
        ({"org.opencontainers.image.ref.name": ""}, None, None),
    ],
)
def test_import_name(annotations: dict[str, str], prefix: str | None, name: str | None) -> None:
    assert import_name(annotations, prefix, today=DAY) == name


def test_prefix_helpers() -> None:
    assert is_image_prefix("foo/bar", "foo/bar")
    assert is_image_prefix("foo/bar@x", "foo/bar")
    assert not is_image_prefix("foo/barx", "foo/bar")
    assert digest_name("import-x", H) == f"import-x@{H}"
