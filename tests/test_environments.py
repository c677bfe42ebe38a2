"""Target environments: compatible tags and marker environments of machines other than this one."""

from __future__ import annotations

import pytest
from packaging.markers import Marker
from packaging.tags import Tag

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.plan.environments import (
    PLATFORM_SHORTHANDS,
    TargetEnvironment,
    environments,
    expand_platform,
    parse_platform,
    parse_python,
    wheel_tags,
)


def test_manylinux_runs_older_glibc_and_legacy_aliases() -> None:
    tags = expand_platform("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert tags[-2:] == ("manylinux_2_5_x86_64", "manylinux1_x86_64")
    assert "manylinux2014_x86_64" in tags
    assert "manylinux2010_x86_64" in tags
    assert "manylinux1_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags
    assert tags.index("manylinux_2_17_x86_64") + 1 == tags.index("manylinux2014_x86_64")
    assert len(tags) == 28 - 5 + 1 + 3


def test_legacy_manylinux_alias_expands_like_its_glibc() -> None:
    assert expand_platform("manylinux2014_aarch64") == expand_platform("manylinux_2_17_aarch64")


def test_musllinux_runs_older_musl() -> None:
    assert expand_platform("musllinux_1_2_aarch64") == (
        "musllinux_1_2_aarch64",
        "musllinux_1_1_aarch64",
        "musllinux_1_0_aarch64",
    )


def test_macos_runs_older_versions_and_universal2() -> None:
    tags = expand_platform("macosx_14_0_arm64")
    assert tags[0] == "macosx_14_0_arm64"
    assert "macosx_11_0_arm64" in tags
    assert "macosx_11_0_universal2" in tags
    assert "macosx_10_9_x86_64" not in tags
    intel = expand_platform("macosx_10_15_x86_64")
    assert "macosx_10_9_x86_64" in intel
    assert "macosx_10_9_universal2" in intel
    assert not any(t.endswith("_arm64") for t in intel)


def test_windows_is_just_itself() -> None:
    assert expand_platform("win_amd64") == ("win_amd64",)
    assert expand_platform("win32") == ("win32",)


def test_tags_are_for_the_target_python_not_the_host() -> None:
    env = TargetEnvironment((3, 12), "win_amd64")
    assert env.tags[0] == Tag("cp312", "cp312", "win_amd64")
    assert Tag("cp312", "abi3", "win_amd64") in env.tag_set
    assert Tag("cp38", "abi3", "win_amd64") in env.tag_set
    assert Tag("py3", "none", "any") in env.tag_set
    assert Tag("cp311", "cp311", "win_amd64") not in env.tag_set
    assert Tag("cp312", "cp312", "manylinux_2_17_x86_64") not in env.tag_set
    assert str(env) == "cp312-win_amd64"


def test_supports_and_priority() -> None:
    env = TargetEnvironment((3, 11), "manylinux_2_28_x86_64")
    specific = wheel_tags("cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    pure = wheel_tags("py3-none-any")
    assert env.supports(specific)
    assert env.supports(pure)
    assert not env.supports(wheel_tags("cp311-cp311-musllinux_1_1_x86_64"))
    assert not env.supports(wheel_tags("cp311-cp311-manylinux_2_34_x86_64"))
    specific_rank = env.tag_priority(specific)
    pure_rank = env.tag_priority(pure)
    assert specific_rank is not None
    assert pure_rank is not None
    assert specific_rank < pure_rank
    assert env.tag_priority(wheel_tags("cp311-cp311-win_amd64")) is None


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        (
            "manylinux_2_28_aarch64",
            {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
        ),
        (
            "musllinux_1_2_x86_64",
            {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
        ),
        (
            "manylinux2014_x86_64",
            {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
        ),
        (
            "macosx_14_0_arm64",
            {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
        ),
        (
            "macosx_10_15_x86_64",
            {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "x86_64"},
        ),
        (
            "win_amd64",
            {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
        ),
        ("win32", {"sys_platform": "win32", "os_name": "nt", "platform_machine": "x86"}),
    ],
)
def test_markers_per_platform(platform: str, expected: dict[str, str]) -> None:
    markers = TargetEnvironment((3, 11), platform).markers
    for key, value in expected.items():
        assert markers[key] == value
    assert markers["python_version"] == "3.11"
    assert markers["python_full_version"] == "3.11.0"
    assert markers["implementation_name"] == "cpython"


def test_markers_evaluate_for_the_target() -> None:
    windows = TargetEnvironment((3, 10), "win_amd64")
    linux = TargetEnvironment((3, 12), "manylinux_2_28_x86_64")
    marker = Marker('sys_platform == "win32" and python_version < "3.11"')
    assert marker.evaluate(dict(windows.markers))
    assert not marker.evaluate(dict(linux.markers))


@pytest.mark.parametrize(
    ("value", "expected"), [("3.12", (3, 12)), ("312", (3, 12)), ("39", (3, 9))]
)
def test_parse_python(value: str, expected: tuple[int, int]) -> None:
    assert parse_python(value) == expected


@pytest.mark.parametrize("value", ["3", "three", "3.x", ""])
def test_parse_python_names_the_culprit(value: str) -> None:
    with pytest.raises(UsageError, match=f"Python version {value!r}"):
        parse_python(value)


def test_platform_shorthands() -> None:
    assert parse_platform("linux/amd64") == "manylinux_2_28_x86_64"
    assert parse_platform("Linux/ARM64") == "manylinux_2_28_aarch64"
    assert parse_platform("linux-musl/amd64") == "musllinux_1_2_x86_64"
    assert parse_platform("darwin/arm64") == "macosx_14_0_arm64"
    assert parse_platform("windows/amd64") == "win_amd64"
    assert parse_platform("manylinux_2_17_ppc64le") == "manylinux_2_17_ppc64le"
    for shorthand, tag in PLATFORM_SHORTHANDS.items():
        assert expand_platform(tag)[0] == tag, shorthand


@pytest.mark.parametrize("value", ["linux/sparc", "manylinux_3_1_x86_64", "beos_x86", "any"])
def test_parse_platform_names_the_culprit(value: str) -> None:
    with pytest.raises(UsageError, match=f"platform {value!r} is not a wheel platform tag"):
        parse_platform(value)


def test_environments_is_the_product_in_a_fixed_order() -> None:
    envs = environments(["3.12", "3.11", "311"], ["windows/amd64", "linux/amd64"])
    assert [str(e) for e in envs] == [
        "cp311-manylinux_2_28_x86_64",
        "cp311-win_amd64",
        "cp312-manylinux_2_28_x86_64",
        "cp312-win_amd64",
    ]
    assert environments([], ["linux/amd64"]) == ()
