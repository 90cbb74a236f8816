"""Platform specifiers, normalisation and matching, following containerd's ``platforms`` package.

containerd decides which children of an index to export, import, label and unpack with a
*MatchComparer*: ``Match`` filters, ``Less`` orders, and the first of the sorted matches wins.
Reproducing those rules exactly (``Parse``, ``Normalize``, ``Only``/``OnlyStrict``/``Ordered``,
``DefaultStrict``) is what makes ctrconv pick the same manifest as ``ctr``:

* ``ctr images export`` matches with :func:`default_strict_matcher` (host only) unless
  ``--platform`` (``OnlyStrict``) or ``--all-platforms`` (:data:`ALL`);
* ``ctr images import`` walks with :func:`default_matcher` (host plus compatible sub-platforms).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence, TypeVar

from ctrconv.errors import CtrconvError, FormatError, UsageError

_PART_RE = re.compile(r"[A-Za-z0-9_-]+\Z")

#: GOOS values known to Go (containerd ``isKnownOS``).
KNOWN_OS = frozenset(
    "aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 "
    "solaris windows zos".split()
)
#: GOARCH values known to Go (containerd ``isKnownArch``).
KNOWN_ARCH = frozenset(
    "386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips mipsle mips64 "
    "mips64le mips64p32 mips64p32le ppc riscv riscv64 s390 s390x sparc sparc64 wasm".split()
)
#: Python/uname machine names -> GOARCH.
_MACHINE_TO_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "386",
    "i686": "386",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loongarch64": "loong64",
    "mips64": "mips64",
}


@dataclass(frozen=True)
class Platform:
    """OCI platform (``os``, ``architecture``, optional ``variant``/``os.version``/features)."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default=())

    @classmethod
    def from_json(cls, obj: Any) -> "Platform":
        """Build from a descriptor's ``platform`` object; malformed input is a FormatError."""
        if not isinstance(obj, dict):
            raise FormatError("platform is not a JSON object")
        for key in ("os", "architecture", "variant", "os.version"):
            if not isinstance(obj.get(key, ""), str):
                raise FormatError(f"platform {key} is not a string")
        features = obj.get("os.features") or []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise FormatError("platform os.features is not an array of strings")
        return cls(
            os=obj.get("os", ""),
            architecture=obj.get("architecture", ""),
            variant=obj.get("variant", ""),
            os_version=obj.get("os.version", ""),
            os_features=tuple(features),
        )

    def to_json(self) -> dict[str, Any]:
        """Key order and omissions of Go's json.Marshal of ``ocispec.Platform``."""
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return format_platform(self)


def normalize_os(os_name: str) -> str:
    """Lowercase, ``macos`` -> ``darwin``."""
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd ``normalizeArch``: canonical GOARCH and variant (``aarch64`` -> ``arm64``)."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
        return "arm", variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """containerd ``Normalize``: canonical OS, architecture and variant (``arm64/v8`` -> ``arm64``)."""
    arch, variant = normalize_arch(p.architecture, p.variant)
    return Platform(normalize_os(p.os), arch, variant, p.os_version, p.os_features)


_CPUINFO_VARIANTS = {
    "8": "v8", "aarch64": "v8",
    "7": "v7", "7m": "v7", "?(12)": "v7", "?(13)": "v7", "?(14)": "v7", "?(15)": "v7",
    "?(16)": "v7", "?(17)": "v7",
    "6": "v6", "6tej": "v6",
    "5": "v5", "5t": "v5", "5te": "v5", "5tej": "v5",
    "4": "v4", "4t": "v4",
    "3": "v3",
}


def _cpuinfo_variant() -> str:
    """containerd ``getCPUVariant`` on Linux: ``Cpu architecture`` from ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() == "cpu architecture":
                    return _CPUINFO_VARIANTS.get(value.strip().lower(), "unknown")
    except OSError:
        pass
    return "unknown"


def host_platform() -> Platform:
    """containerd ``DefaultSpec()`` for this Linux host (GOOS/GOARCH, variant for arm only)."""
    machine = os.uname().machine.lower()  # (the ``platform`` module's answer, without importing it: 3 ms)
    arch = _MACHINE_TO_GOARCH.get(machine, machine)
    variant = ""
    if arch in ("arm", "arm64"):
        variant = _cpuinfo_variant()
        if arch == "arm64" and variant == "unknown":
            variant = "v8"
    os_name = "windows" if os.name == "nt" else os.uname().sysname.lower() or "linux"
    return Platform(os_name, arch, variant)


def parse_platform(specifier: str, *, host: Platform | None = None) -> Platform:
    """containerd ``platforms.Parse``: ``linux``, ``arm64``, ``linux/amd64``, ``linux/arm/v7``.

    A lone OS or architecture takes the rest from ``host`` (default :func:`host_platform`).
    Raises :class:`UsageError` for malformed or unknown specifiers.
    """
    if "*" in specifier:
        raise UsageError(f"{specifier!r}: wildcards not yet supported")
    parts = specifier.split("/")
    for part in parts:
        if not _PART_RE.match(part):
            raise UsageError(f"{specifier!r}: invalid platform component {part!r}")
    if len(parts) == 1:
        host = host or host_platform()
        os_name = normalize_os(parts[0])
        if os_name in KNOWN_OS:
            variant = host.variant if host.architecture == "arm" and host.variant != "v7" else ""
            return Platform(os_name, host.architecture, variant)
        arch, variant = normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in KNOWN_ARCH:
            return Platform(host.os, arch, variant)
        raise UsageError(f"{specifier!r}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(normalize_os(parts[0]), arch, variant)
    if len(parts) == 3:
        arch, variant = normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return Platform(normalize_os(parts[0]), arch, variant)
    raise UsageError(f"{specifier!r}: cannot parse platform specifier")


def format_platform(p: Platform) -> str:
    """containerd ``Format``: ``os/arch[/variant]``, or ``unknown`` without an OS."""
    if not p.os:
        return "unknown"
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


class MatchComparer(Protocol):
    """containerd ``platforms.MatchComparer``."""

    def match(self, p: Platform) -> bool: ...

    def less(self, a: Platform, b: Platform) -> bool: ...


def _same(want: Platform, p: Platform) -> bool:
    """The Linux ``defaultMatcher``: equal after normalisation (os, arch, variant)."""
    got = normalize(p)
    return (want.os, want.architecture, want.variant) == (got.os, got.architecture, got.variant)


@dataclass(frozen=True)
class Ordered:
    """Matches any of ``platforms``; earlier entries sort first (containerd ``Ordered``)."""

    platforms: tuple[Platform, ...]

    def rank(self, p: Platform) -> int | None:
        """Index of the first platform ``p`` matches, None when it matches none."""
        for i, want in enumerate(self.platforms):
            if _same(normalize(want), p):
                return i
        return None

    def match(self, p: Platform) -> bool:
        return self.rank(p) is not None

    def less(self, a: Platform, b: Platform) -> bool:
        ra, rb = self.rank(a), self.rank(b)
        return ra is not None and (rb is None or ra < rb)


@dataclass(frozen=True)
class _All:
    """Matches every platform, with no preference (containerd ``platforms.All``)."""

    def rank(self, p: Platform) -> int | None:
        return 0

    def match(self, p: Platform) -> bool:
        return True

    def less(self, a: Platform, b: Platform) -> bool:
        return False


#: ``--all-platforms``.
ALL = _All()


def ordered(*platforms: Platform) -> Ordered:
    return Ordered(tuple(normalize(p) for p in platforms))


def platform_vector(p: Platform) -> list[Platform]:
    """containerd ``platformVector``: ``p`` then the platforms it can also run, best first."""
    vector = [p]
    if p.architecture == "amd64":
        level = _variant_number(p.variant)
        if level is not None and level > 1:
            vector += [
                Platform(p.os, "amd64", f"v{n}", p.os_version, p.os_features)
                for n in range(level - 1, 0, -1)
            ]
        vector.append(Platform(p.os, "386", "", p.os_version, p.os_features))
    elif p.architecture == "arm":
        level = _variant_number(p.variant)
        if level is not None and level > 5:
            vector += [
                Platform(p.os, "arm", f"v{n}", p.os_version, p.os_features)
                for n in range(level - 1, 4, -1)
            ]
    elif p.architecture == "arm64":
        variant = p.variant or "v8"
        vector += platform_vector(Platform(p.os, "arm", variant, p.os_version, p.os_features))
    return vector


def _variant_number(variant: str) -> int | None:
    digits = variant[1:] if variant.startswith("v") else variant
    return int(digits) if digits.isdigit() else None


def only(p: Platform) -> Ordered:
    """containerd ``Only``: ``p`` plus compatible sub-platforms (amd64 -> 386, arm64 -> arm/v8..v5)."""
    return Ordered(tuple(normalize(x) for x in platform_vector(normalize(p))))


def only_strict(p: Platform) -> Ordered:
    """containerd ``OnlyStrict``: exactly ``p`` (after normalisation)."""
    return ordered(p)


def default_matcher() -> Ordered:
    """containerd ``platforms.Default()`` = ``Only(DefaultSpec())``."""
    return only(host_platform())


def default_strict_matcher() -> Ordered:
    """containerd ``platforms.DefaultStrict()`` = ``OnlyStrict(DefaultSpec())`` (ctr export)."""
    return only_strict(host_platform())


def selector(matcher: MatchComparer) -> Callable[[dict[str, Any]], bool]:
    """``matcher`` as the image walk's selector of index children: ``(platform dict) -> bool``;
    a platform that does not parse is not selected."""

    def select(p: dict[str, Any]) -> bool:
        try:
            return matcher.match(Platform.from_json(p))
        except CtrconvError:
            return False

    return select


class _HasPlatform(Protocol):
    platform: Platform | None


D = TypeVar("D", bound=_HasPlatform)


def select_children(children: Iterable[D], matcher: MatchComparer) -> list[D]:
    """Filter and order an index's children the way containerd ``images.Manifest`` does.

    Children without a platform are kept and sort last; the rest are kept when ``matcher``
    matches and are stably sorted by ``matcher.less``. The first element is the child
    containerd picks (e.g. for ``manifest.json`` in ``ctr images export``).
    """
    kept = [c for c in children if c.platform is None or matcher.match(c.platform)]
    return _stable_sort(kept, matcher)


def _stable_sort(items: Sequence[D], matcher: MatchComparer) -> list[D]:
    rank = getattr(matcher, "rank", None)
    if rank is not None:

        def key(item: D) -> tuple[int, int]:
            if item.platform is None:
                return (1, 0)
            r = rank(item.platform)
            return (0, r if r is not None else 1 << 30)

        return sorted(items, key=key)
    result: list[D] = []
    for item in items:  # insertion sort: stable for any comparer, lists are tiny
        pos = len(result)
        while pos > 0 and _less(matcher, item, result[pos - 1]):
            pos -= 1
        result.insert(pos, item)
    return result


def _less(matcher: MatchComparer, a: _HasPlatform, b: _HasPlatform) -> bool:
    if a.platform is None:
        return False
    if b.platform is None:
        return True
    return matcher.less(a.platform, b.platform)
