"""Target environments: the machines a mirror is for, never the machine that runs the sync.

A target is a Python version and a wheel platform tag. From it come the
compatible tag set (with :mod:`packaging.tags`, as the target's own pip
would compute it: a manylinux_2_28 machine also runs manylinux_2_17 wheels,
a macOS 14 machine also runs macOS 11 wheels) and the PEP 508 marker
environment, so dependencies are chosen for the target, not the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms, parse_tag

from oci_pypi_sync.errors import UsageError

#: Shorthands for ``--platform``: OCI-style names to a wheel platform tag.
PLATFORM_SHORTHANDS: Mapping[str, str] = {
    "linux/amd64": "manylinux_2_28_x86_64",
    "linux/arm64": "manylinux_2_28_aarch64",
    "linux/386": "manylinux_2_28_i686",
    "linux/ppc64le": "manylinux_2_28_ppc64le",
    "linux/s390x": "manylinux_2_28_s390x",
    "linux/arm/v7": "manylinux_2_31_armv7l",
    "linux/riscv64": "manylinux_2_39_riscv64",
    "linux-musl/amd64": "musllinux_1_2_x86_64",
    "linux-musl/arm64": "musllinux_1_2_aarch64",
    "darwin/arm64": "macosx_14_0_arm64",
    "darwin/amd64": "macosx_10_15_x86_64",
    "windows/amd64": "win_amd64",
    "windows/386": "win32",
    "windows/arm64": "win_arm64",
}

_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_LEGACY_MANYLINUX_TAG = re.compile(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)")
_MUSLLINUX = re.compile(r"musllinux_(\d+)_(\d+)_(\w+)")
_MACOS = re.compile(r"macosx_(\d+)_(\d+)_(\w+)")
_LINUX_PLAIN = re.compile(r"linux_(\w+)")
_PYTHON = re.compile(r"(\d+)\.(\d+)")

_WINDOWS_MACHINE = {"win_amd64": "AMD64", "win32": "x86", "win_arm64": "ARM64"}


@dataclass(frozen=True, order=True)
class TargetEnvironment:
    """One machine the mirror serves: CPython ``python`` on wheel platform ``platform``."""

    python: tuple[int, int]
    platform: str

    def __str__(self) -> str:
        return f"cp{self.python[0]}{self.python[1]}-{self.platform}"

    @cached_property
    def platform_tags(self) -> tuple[str, ...]:
        """Every platform tag this machine runs, most specific first."""
        return expand_platform(self.platform)

    @cached_property
    def tags(self) -> tuple[Tag, ...]:
        """The compatible tags in pip's order of preference."""
        platforms = list(self.platform_tags)
        return (
            *cpython_tags(self.python, platforms=platforms),
            *compatible_tags(self.python, f"cp{self.python[0]}{self.python[1]}", platforms),
        )

    @cached_property
    def tag_set(self) -> frozenset[Tag]:
        return frozenset(self.tags)

    def supports(self, wheel_tags: Iterable[Tag]) -> bool:
        """Whether a wheel with these tags installs here."""
        return not self.tag_set.isdisjoint(wheel_tags)

    def tag_priority(self, wheel_tags: Iterable[Tag]) -> int | None:
        """Lower is better (pip prefers the most specific tag); ``None`` when unsupported."""
        best = None
        for tag in wheel_tags:
            try:
                rank = self._tag_rank[tag]
            except KeyError:
                continue
            best = rank if best is None else min(best, rank)
        return best

    @cached_property
    def _tag_rank(self) -> dict[Tag, int]:
        ranks: dict[Tag, int] = {}
        for rank, tag in enumerate(self.tags):
            ranks.setdefault(tag, rank)
        return ranks

    @cached_property
    def markers(self) -> dict[str, str]:
        """The PEP 508 marker environment of the target machine."""
        major, minor = self.python
        version = f"{major}.{minor}"
        system, sys_platform, os_name, machine = _system(self.platform)
        return {
            "implementation_name": "cpython",
            "implementation_version": f"{version}.0",
            "os_name": os_name,
            "platform_machine": machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": system,
            "platform_version": "",
            "python_full_version": f"{version}.0",
            "python_version": version,
            "sys_platform": sys_platform,
        }


def parse_python(value: str) -> tuple[int, int]:
    """``3.12`` or ``312`` to ``(3, 12)``, naming the value when it is wrong."""
    text = value.strip()
    match = _PYTHON.fullmatch(text)
    if match is not None:
        return int(match.group(1)), int(match.group(2))
    if text.isdigit() and len(text) >= 2:
        return int(text[0]), int(text[1:])
    raise UsageError(f"Python version {value!r} is not MAJOR.MINOR (for example 3.12)")


def parse_platform(value: str) -> str:
    """A wheel platform tag, or a shorthand such as ``linux/amd64``, checked."""
    text = value.strip()
    tag = PLATFORM_SHORTHANDS.get(text.lower(), text)
    try:
        expand_platform(tag)
    except ValueError as exc:
        shorthands = ", ".join(sorted(PLATFORM_SHORTHANDS))
        raise UsageError(
            f"platform {value!r} is not a wheel platform tag (such as manylinux_2_28_x86_64, "
            f"musllinux_1_2_aarch64, macosx_14_0_arm64, win_amd64) or one of: {shorthands}"
        ) from exc
    return tag


def parse_environment(value: str) -> TargetEnvironment:
    """``PYTHON/PLATFORM``: ``3.12/manylinux_2_28_x86_64``, or a shorthand: ``3.11/windows/amd64``.

    One exact machine, where ``--python`` and ``--platform`` give every
    combination of theirs.
    """
    python, slash, platform = value.strip().partition("/")
    if not slash or not platform:
        raise UsageError(
            f"target {value!r} is not PYTHON/PLATFORM "
            "(for example 3.12/manylinux_2_28_x86_64 or 3.11/windows/amd64)"
        )
    return TargetEnvironment(parse_python(python), parse_platform(platform))


def environments(
    pythons: Iterable[str], platforms: Iterable[str], pairs: Iterable[str] = ()
) -> tuple[TargetEnvironment, ...]:
    """Every combination of the Python versions and platforms, and every exact pair.

    Sorted and each once: ``--python 3.12 --platform linux/amd64`` and
    ``--target 3.12/linux/amd64`` name the same machine.
    """
    parsed_pythons = sorted({parse_python(p) for p in pythons})
    parsed_platforms = sorted({parse_platform(p) for p in platforms})
    crossed = {
        TargetEnvironment(python, platform)
        for python in parsed_pythons
        for platform in parsed_platforms
    }
    return tuple(sorted(crossed | {parse_environment(pair) for pair in pairs}))


def expand_platform(platform: str) -> tuple[str, ...]:
    """The platform tags a machine of this platform tag runs, most specific first.

    ``manylinux_2_28_x86_64`` runs every ``manylinux_2_N`` up to 28 and the
    legacy aliases (``manylinux2014``, ``manylinux2010``, ``manylinux1``);
    ``musllinux_1_2`` runs ``musllinux_1_1`` too; a macOS version runs wheels
    for itself and older versions (:func:`packaging.tags.mac_platforms`).
    """
    if match := _LEGACY_MANYLINUX_TAG.fullmatch(platform):
        glibc = _LEGACY_MANYLINUX[match.group(1)]
        return expand_platform(f"manylinux_{glibc[0]}_{glibc[1]}_{match.group(2)}")
    if match := _MANYLINUX.fullmatch(platform):
        major, minor, arch = int(match.group(1)), int(match.group(2)), match.group(3)
        if major != 2:
            raise ValueError(platform)
        tags = []
        for glibc_minor in range(minor, 4, -1):
            tags.append(f"manylinux_2_{glibc_minor}_{arch}")
            for legacy, (_, legacy_minor) in _LEGACY_MANYLINUX.items():
                if legacy_minor == glibc_minor:
                    tags.append(f"{legacy}_{arch}")
        return tuple(tags)
    if match := _MUSLLINUX.fullmatch(platform):
        major, minor, arch = int(match.group(1)), int(match.group(2)), match.group(3)
        return tuple(f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1))
    if match := _MACOS.fullmatch(platform):
        major, minor, arch = int(match.group(1)), int(match.group(2)), match.group(3)
        return tuple(mac_platforms((major, minor), arch))
    if platform in _WINDOWS_MACHINE or _LINUX_PLAIN.fullmatch(platform):
        return (platform,)
    raise ValueError(platform)


def wheel_tags(filename_tags: str) -> frozenset[Tag]:
    """Tags from the ``python-abi-platform`` part of a wheel filename."""
    return frozenset(parse_tag(filename_tags))


def _system(platform: str) -> tuple[str, str, str, str]:
    """platform_system, sys_platform, os_name and platform_machine for a platform tag."""
    if platform in _WINDOWS_MACHINE:
        return "Windows", "win32", "nt", _WINDOWS_MACHINE[platform]
    if match := _MACOS.fullmatch(platform):
        arch = match.group(3)
        machine = "arm64" if arch == "arm64" else "x86_64"
        return "Darwin", "darwin", "posix", machine
    arch = platform.rsplit("_", 1)[-1]
    for pattern in (_MANYLINUX, _MUSLLINUX, _LINUX_PLAIN):
        if match := pattern.fullmatch(platform):
            arch = match.groups()[-1]
            break
    if match := _LEGACY_MANYLINUX_TAG.fullmatch(platform):
        arch = match.group(2)
    return "Linux", "linux", "posix", arch
