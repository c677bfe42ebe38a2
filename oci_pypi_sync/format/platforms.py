"""Wheel platform tags as OCI platforms (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    """An OCI platform, as in the image-index spec."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        return cls(
            os=str(data["os"]),
            architecture=str(data["architecture"]),
            variant=data.get("variant"),
            os_version=data.get("os.version"),
        )

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        if self.variant:
            text += f"/{self.variant}"
        return text


_LINUX_ARCH: Mapping[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "i686": ("386", None),
    "i386": ("386", None),
    "aarch64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "ppc64le": ("ppc64le", None),
    "ppc64": ("ppc64", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "loongarch64": ("loong64", None),
}
_MACOS_ARCH: Mapping[str, tuple[str, ...]] = {
    "x86_64": ("amd64",),
    "arm64": ("arm64",),
    "universal2": ("amd64", "arm64"),
}
_WINDOWS: Mapping[str, str] = {"win32": "386", "win_amd64": "amd64", "win_arm64": "arm64"}
_LINUX_TAG = re.compile(
    r"(?:manylinux|musllinux)_\d+_\d+_(.+)|manylinux(?:1|2010|2014)_(.+)|linux_(.+)"
)
_MACOS_TAG = re.compile(r"macosx_(\d+)_(\d+)_(.+)")


def tag_platforms(platform_tag: str) -> tuple[Platform, ...]:
    """The OCI platforms one wheel platform tag runs on; empty when OCI has no equivalent."""
    if linux := _LINUX_TAG.fullmatch(platform_tag):
        arch = next(group for group in linux.groups() if group)
        mapped = _LINUX_ARCH.get(arch)
        if mapped is None:
            return ()
        return (Platform("linux", mapped[0], mapped[1]),)
    if macos := _MACOS_TAG.fullmatch(platform_tag):
        major, minor, arch = macos.groups()
        return tuple(
            Platform("darwin", oci_arch, None, f"{major}.{minor}")
            for oci_arch in _MACOS_ARCH.get(arch, ())
        )
    if platform_tag in _WINDOWS:
        return (Platform("windows", _WINDOWS[platform_tag]),)
    return ()


def wheel_platforms(platform_tags: Iterable[str]) -> tuple[Platform, ...]:
    """The distinct OCI platforms of a wheel, sorted; for one os/arch the lowest os.version."""
    best: dict[tuple[str, str, str | None], Platform] = {}
    for tag in platform_tags:
        for platform in tag_platforms(tag):
            key = (platform.os, platform.architecture, platform.variant)
            current = best.get(key)
            if current is None or _os_version_key(platform) < _os_version_key(current):
                best[key] = platform
    return tuple(sorted(best.values()))


def _os_version_key(platform: Platform) -> tuple[int, ...]:
    if not platform.os_version:
        return ()
    return tuple(int(part) for part in platform.os_version.split("."))
