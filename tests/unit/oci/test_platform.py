"""Platform parsing, normalisation, matching and ordering (containerd ``platforms``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ctrconv.errors import FormatError, UsageError
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

AMD64_HOST = Platform("linux", "amd64")
ARM64_HOST = Platform("linux", "arm64", "v8")


@pytest.mark.parametrize(
    "spec, want",
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("Linux/X86-64", Platform("linux", "amd64")),
        ("linux/amd64/v1", Platform("linux", "amd64")),
        ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
        ("linux/i386", Platform("linux", "386")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm64", Platform("linux", "arm64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),  # 3 parts keep the default v8
        ("linux/arm64/8", Platform("linux", "arm64", "v8")),
        ("linux/arm", Platform("linux", "arm")),  # v7 is the default, so dropped
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("linux/armhf", Platform("linux", "arm")),
        ("linux/armel", Platform("linux", "arm", "v6")),
        ("macos/arm64", Platform("darwin", "arm64")),
        ("windows/amd64", Platform("windows", "amd64")),
        ("freebsd/riscv64", Platform("freebsd", "riscv64")),
        ("linux", Platform("linux", "amd64")),  # lone OS: host architecture
        ("arm64", Platform("linux", "arm64")),  # lone architecture: host OS
        ("aarch64", Platform("linux", "arm64")),
        ("armhf", Platform("linux", "arm")),
    ],
)
def test_parse(spec: str, want: Platform) -> None:
    assert parse_platform(spec, host=AMD64_HOST) == want


@pytest.mark.parametrize(
    "spec", ["", "linux/", "linux/amd64/v8/x", "*", "linux/*", "linux/am d64", "nothing", "a/b c"]
)
def test_parse_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_platform(spec, host=AMD64_HOST)


@pytest.mark.parametrize(
    "p, text",
    [
        (Platform("linux", "amd64"), "linux/amd64"),
        (Platform("linux", "arm", "v7"), "linux/arm/v7"),
        (Platform("", "amd64"), "unknown"),
    ],
)
def test_format(p: Platform, text: str) -> None:
    assert format_platform(p) == text == str(p)


def test_normalize_arm64_v8_equivalence() -> None:
    assert normalize(Platform("linux", "arm64", "v8")) == normalize(Platform("linux", "aarch64"))
    assert normalize(Platform("linux", "arm")) == Platform("linux", "arm", "v7")
    m = only_strict(Platform("linux", "arm64"))
    assert m.match(Platform("linux", "arm64", "v8"))
    assert m.match(Platform("linux", "aarch64"))
    assert not m.match(Platform("linux", "arm64", "v9"))


def test_only_strict_matches_exactly() -> None:
    m = only_strict(AMD64_HOST)
    assert m.match(Platform("linux", "amd64"))
    assert m.match(Platform("Linux", "x86_64"))
    assert not m.match(Platform("linux", "386"))
    assert not m.match(Platform("windows", "amd64"))
    arm = only_strict(Platform("linux", "arm", "v7"))
    assert arm.match(Platform("linux", "arm"))  # no variant means v7
    assert not arm.match(Platform("linux", "arm", "v6"))


def test_only_matches_compatible_sub_platforms_in_order() -> None:
    m = only(AMD64_HOST)
    assert m.match(Platform("linux", "386"))
    assert m.less(Platform("linux", "amd64"), Platform("linux", "386"))
    assert not m.less(Platform("linux", "386"), Platform("linux", "amd64"))
    arm64 = only(ARM64_HOST)
    order = [Platform("linux", "arm64")] + [Platform("linux", "arm", f"v{n}") for n in (8, 7, 6, 5)]
    assert [p for p in order if arm64.match(p)] == order
    for a, b in zip(order, order[1:]):
        assert arm64.less(a, b) and not arm64.less(b, a)
    assert not arm64.match(Platform("linux", "amd64"))
    v7 = only(Platform("linux", "arm", "v7"))
    assert v7.match(Platform("linux", "arm", "v5")) and not v7.match(Platform("linux", "arm", "v8"))
    v3 = only(Platform("linux", "amd64", "v3"))
    assert [v3.rank(Platform("linux", "amd64", v)) for v in ("v3", "v2", "")] == [0, 1, 2]


def test_all_and_ordered() -> None:
    assert ALL.match(Platform("plan9", "mips"))
    assert not ALL.less(Platform("a", "b"), Platform("c", "d"))
    m = ordered(Platform("linux", "arm64"), Platform("linux", "amd64"))
    assert m.less(Platform("linux", "aarch64"), Platform("linux", "amd64"))


def test_host_defaults() -> None:
    host = host_platform()
    assert host.os == "linux" and host.architecture
    assert default_strict_matcher().match(host)
    assert default_matcher().match(host)
    assert len(default_strict_matcher().platforms) == 1


@dataclass(frozen=True)
class Child:
    name: str
    platform: Platform | None


CHILDREN = [
    Child("s390x", Platform("linux", "s390x")),
    Child("i386", Platform("linux", "386")),
    Child("noplat", None),
    Child("amd64", Platform("linux", "amd64")),
    Child("arm7", Platform("linux", "arm", "v7")),
    Child("amd64-again", Platform("linux", "amd64")),
    Child("arm64", Platform("linux", "arm64", "v8")),
]


def names(children: list[Child]) -> list[str]:
    return [c.name for c in children]


def test_select_children_like_images_manifest() -> None:
    assert names(select_children(CHILDREN, only_strict(AMD64_HOST))) == ["amd64", "amd64-again", "noplat"]
    assert names(select_children(CHILDREN, only(AMD64_HOST))) == ["amd64", "amd64-again", "i386", "noplat"]
    assert names(select_children(CHILDREN, only(ARM64_HOST))) == ["arm64", "arm7", "noplat"]
    # all platforms: order kept except that children without platform sort last
    assert names(select_children(CHILDREN, ALL)) == [
        "s390x", "i386", "amd64", "arm7", "amd64-again", "arm64", "noplat"
    ]


def test_platform_json_round_trip() -> None:
    obj = {"architecture": "amd64", "os": "windows", "os.version": "10.0", "os.features": ["win32k"]}
    p = Platform.from_json(obj)
    assert p == Platform("windows", "amd64", "", "10.0", ("win32k",))
    assert list(p.to_json()) == ["architecture", "os", "os.version", "os.features"]
    assert Platform.from_json(p.to_json()) == p
    with pytest.raises(FormatError):
        Platform.from_json({"architecture": 1, "os": "linux"})
    with pytest.raises(FormatError):
        Platform.from_json(["linux"])
