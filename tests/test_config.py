"""The config file and the precedence: flags, OCI_PYPI_* variables, the file, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.utils import NormalizedName

from oci_pypi_sync.config import (
    DEFAULTS,
    KEYS,
    ConfigError,
    Settings,
    SyncConfig,
    load_config,
    merge_settings,
)
from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.plan.environments import TargetEnvironment

EXAMPLE = Path(__file__).parent / "data" / "config" / "oci-pypi.toml"


def test_full_example_loads_with_paths_relative_to_the_file() -> None:
    config = load_config(EXAMPLE)
    base = EXAMPLE.parent
    assert config == SyncConfig(
        path=EXAMPLE,
        index_url="https://index.example.test/simple/",
        to=f"oci:{base / 'mirror'}",
        requirements=("numpy>=1.26", "scipy"),
        requirement_files=(base / "requirements.txt", Path("/abs/extra.txt")),
        pylock=base / "pylock.toml",
        python=("3.11", "3.12"),
        platform=("linux/amd64", "windows/amd64"),
        targets=("3.13/darwin/arm64", "3.10/linux/arm64"),
        pre=False,
        include_yanked=True,
        only_binary=True,
        latest=3,
        allow=("numpy", "scipy", "re:types-.*"),
        deny=("re:.*-nightly",),
        with_deps=True,
        max_bytes=20 << 30,
        jobs=16,
        state=base / "state" / "mirror.sqlite",
        shard="1/4",
        prune=True,
        retries=6,
        timeout=30.0,
        provenance="require",
        trusted_publisher=("numpy=github:numpy/numpy",),
        trusted_root=base / "trust" / "trusted_root.json",
    )


def test_every_key_is_in_the_example_and_the_docs() -> None:
    text = EXAMPLE.read_text()
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for key in KEYS:
        assert f"\n{key.config_key} = " in text, key.config_key
        assert f"`{key.config_key}`" in docs, key.config_key


def test_registry_target_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[sync]\nto = "registry.example.test:5000/pypi"\n')
    assert load_config(path).to == "registry.example.test:5000/pypi"


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("# nothing yet\n")
    assert load_config(path) == SyncConfig(path=path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sync]\nonly_binary = true\n", "unknown key 'only_binary' in [sync]"),
        ("[sink]\npre = true\n", "unknown table or key 'sink'"),
        ("pre = true\n", "unknown table or key 'pre'"),
        ("sync = 3\n", "'sync' must be a table"),
        ("[sync]\npre = 'yes'\n", "[sync] pre: expected a boolean, got a string"),
        ("[sync]\njobs = 2.5\n", "[sync] jobs: expected an integer, got a float"),
        ("[sync]\njobs = true\n", "[sync] jobs: expected an integer, got a boolean"),
        ("[sync]\npython = '3.12'\n", "[sync] python: expected an array of strings, got a string"),
        ("[sync]\npython = [3.12]\n", "python: expected an array of strings, got an array of"),
        ("[sync]\ntimeout = '30s'\n", "[sync] timeout: expected a number, got a string"),
        ("[sync]\nto = ['a']\n", "[sync] to: expected a string (a target), got an array"),
        ("[sync]\nstate = {}\n", "[sync] state: expected a string (a path), got a table"),
        ("[sync]\njobs = 0\n", "[sync] jobs: 0 is out of range (must be between 1 and 256)"),
        ("[sync]\nlatest = 0\n", "[sync] latest: 0 is out of range (must be at least 1)"),
        ("[sync]\npython = ['3']\nplatform = ['win_amd64']\n", "[sync] python: Python version"),
        ("[sync]\npython = ['3.12']\nplatform = ['beos']\n", "[sync] platform: platform 'beos'"),
        ("[sync]\ndeny = ['re:(']\n", "[sync] deny: deny entry 're:(' is not a valid regular"),
        ("[sync]\nrequirements = ['six', 'x @ https://h.test/x.whl']\n", "names a URL"),
        ("[sync]\nshard = '4/4'\n", "[sync] shard: "),
        ("[sync\n", "invalid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)
    assert isinstance(info.value, UsageError)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file '/nonexistent/c\.toml'"):
        load_config("/nonexistent/c.toml")


# --- precedence ---------------------------------------------------------------------------


def test_defaults_only() -> None:
    settings = merge_settings({}, {}, None)
    assert settings == Settings(origins=settings.origins)
    assert settings.jobs == DEFAULTS["jobs"] == 8
    assert settings.retries == 4
    assert settings.environments() == ()
    assert set(settings.origins.values()) == {"default"}


def test_cli_beats_environment_beats_config_beats_default() -> None:
    config = load_config(EXAMPLE)
    environ = {
        "OCI_PYPI_JOBS": "32",
        "OCI_PYPI_LATEST": "5",
        "OCI_PYPI_ONLY_BINARY": "0",
        "OCI_PYPI_PYTHON": "3.13, 3.12",
        "OCI_PYPI_UNRELATED": "x",
    }
    cli: dict[str, object | None] = {
        "jobs": 4,
        "latest": None,  # not given: the environment's value
        "requirements": (),  # not given: the file's value
        "platform": ["linux/arm64"],
        "prune": None,
    }
    settings = merge_settings(cli, environ, config)
    assert settings.jobs == 4
    assert settings.origins["jobs"] == "--jobs"
    assert settings.latest == 5
    assert settings.origins["latest"] == "OCI_PYPI_LATEST"
    assert settings.only_binary is False
    assert settings.python == ("3.13", "3.12")
    assert settings.platform == ("linux/arm64",)
    assert settings.requirements == ("numpy>=1.26", "scipy")
    assert settings.origins["requirements"] == f"{EXAMPLE} [sync] requirements"
    assert settings.prune is True
    assert settings.timeout == 30.0
    assert settings.state == EXAMPLE.parent / "state" / "mirror.sqlite"
    # The cross product of the flags, and the file's exact pairs.
    assert settings.environments() == (
        TargetEnvironment((3, 10), "manylinux_2_28_aarch64"),
        TargetEnvironment((3, 12), "manylinux_2_28_aarch64"),
        TargetEnvironment((3, 13), "macosx_14_0_arm64"),
        TargetEnvironment((3, 13), "manylinux_2_28_aarch64"),
    )


def test_environment_lists_paths_and_booleans() -> None:
    environ = {
        "OCI_PYPI_REQUIREMENT": "a.txt,sub/b.txt",
        "OCI_PYPI_PYLOCK": "pylock.toml",
        "OCI_PYPI_ALLOW": "django, re:django-.*",
        "OCI_PYPI_WITH_DEPS": "yes",
        "OCI_PYPI_INCLUDE_YANKED": "ON",
        "OCI_PYPI_TIMEOUT": "2.5",
        "OCI_PYPI_PRE": "",  # empty counts as unset
    }
    settings = merge_settings({}, environ, None)
    assert settings.requirement_files == (Path("a.txt"), Path("sub/b.txt"))
    assert settings.pylock == Path("pylock.toml")
    assert settings.allow == ("django", "re:django-.*")
    assert settings.with_deps is True
    assert settings.include_yanked is True
    assert settings.timeout == 2.5
    assert settings.pre is False
    assert settings.origins["pre"] == "default"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OCI_PYPI_ONLY_BINARY": "maybe"}, "OCI_PYPI_ONLY_BINARY: 'maybe' is not a boolean"),
        ({"OCI_PYPI_JOBS": "many"}, "OCI_PYPI_JOBS: 'many' is not an integer"),
        ({"OCI_PYPI_TIMEOUT": "soon"}, "OCI_PYPI_TIMEOUT: 'soon' is not a number"),
        ({"OCI_PYPI_RETRIES": "99"}, "OCI_PYPI_RETRIES: 99 is out of range"),
        (
            {"OCI_PYPI_PLATFORM": "linux/amd64", "OCI_PYPI_PYTHON": "3"},
            "OCI_PYPI_PYTHON: Python version '3'",
        ),
    ],
)
def test_environment_errors_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        merge_settings({}, environ, None)


def test_python_from_the_file_meets_platform_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[sync]\npython = ['3.12']\n")
    config = load_config(path)
    with pytest.raises(ConfigError, match=r"c\.toml \[sync\] python: a target Python needs a"):
        merge_settings({}, {}, config)
    settings = merge_settings({"platform": ("win_amd64",)}, {}, config)
    assert settings.environments() == (TargetEnvironment((3, 12), "win_amd64"),)


def test_cli_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--latest: 0 is out of range"):
        merge_settings({"latest": 0}, {}, None)
    with pytest.raises(ConfigError, match=r"^--platform: a target platform needs a target Python"):
        merge_settings({"platform": ["linux/amd64"]}, {}, None)


def test_unknown_cli_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown setting names: only-binary"):
        merge_settings({"only-binary": True}, {}, None)


def test_selection_options_from_settings() -> None:
    settings = merge_settings(
        {
            "python": ["3.12"],
            "platform": ["win_amd64"],
            "only_binary": True,
            "latest": 2,
            "deny": ["re:.*-dev"],
        },
        {"OCI_PYPI_PRE": "1"},
        None,
    )
    digests = {NormalizedName("six"): frozenset({"a" * 64})}
    options = settings.selection_options(hashes=digests)
    assert options.environments == (TargetEnvironment((3, 12), "win_amd64"),)
    assert options.only_binary is True
    assert options.pre is True
    assert options.latest == 2
    assert options.deny == ("re:.*-dev",)
    assert options.hashes == digests


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"provenance": "always"}, "'always' is not one of ignore, mirror, require"),
        ({"trusted_publisher": ("numpy",)}, "PROJECT=PUBLISHER"),
        ({"trusted_publisher": ("numpy=svn:numpy",)}, "KIND:IDENTITY"),
        (
            {"provenance": "ignore", "trusted_publisher": ("numpy=github:numpy/numpy",)},
            "need --provenance mirror or require",
        ),
    ],
)
def test_provenance_settings_are_checked(cli: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        merge_settings(cli, {}, None)


def test_trusted_publishers_come_from_the_environment_as_a_list() -> None:
    settings = merge_settings(
        {},
        {"OCI_PYPI_TRUSTED_PUBLISHER": "a=github:o/a, b=google:ci@p.iam.gserviceaccount.com"},
        None,
    )
    assert settings.trusted_publisher == ("a=github:o/a", "b=google:ci@p.iam.gserviceaccount.com")
    assert settings.provenance == "mirror"


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1 << 20), ("500M", 500 << 20), ("10GiB", 10 << 30), ("1.5k", 1536)],
)
def test_sizes_are_read_in_powers_of_1024(text: str, size: int) -> None:
    assert merge_settings({}, {"OCI_PYPI_MAX_BYTES": text}, None).max_bytes == size
    assert merge_settings({"max_bytes": text}, {}, None).max_bytes == size


def test_a_bad_size_names_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^OCI_PYPI_MAX_BYTES: 'lots' is not a size"):
        merge_settings({}, {"OCI_PYPI_MAX_BYTES": "lots"}, None)
    path = tmp_path / "mirror.toml"
    path.write_text('[sync]\nmax-bytes = "10 parsecs"\n')
    with pytest.raises(ConfigError, match=r"\[sync\] max-bytes: '10 parsecs' is not a size"):
        load_config(path)
