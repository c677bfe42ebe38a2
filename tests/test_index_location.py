"""Finding the index URL the way pip does, and never showing its credentials."""

from __future__ import annotations

import builtins
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.index import location
from oci_pypi_sync.index.location import (
    IndexLocation,
    pip_config_files,
    resolve_index_url,
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake HOME with no pip configuration, and no global/site files seen."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture(autouse=True)
def _no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep /etc and sys.prefix pip.conf files of this machine out of the tests."""
    real = pip_config_files  # the unpatched function, imported above

    def only_under_tmp(environ: Any) -> list[Path]:
        return [p for p in real(environ) if str(p).startswith(str(tmp_path))]

    monkeypatch.setattr(location, "pip_config_files", only_under_tmp)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


def test_cli_value_wins_and_gets_a_trailing_slash(home: Path) -> None:
    found = resolve_index_url(
        "https://cli.test/simple", env(home, OCI_PYPI_INDEX_URL="https://env.test/simple/")
    )
    assert (found.url, found.source) == ("https://cli.test/simple/", "--index-url")


def test_our_variable_beats_pips(home: Path) -> None:
    found = resolve_index_url(
        None,
        env(home, OCI_PYPI_INDEX_URL="https://ours.test/s/", PIP_INDEX_URL="https://pip.test/s/"),
    )
    assert (found.url, found.source) == ("https://ours.test/s/", "OCI_PYPI_INDEX_URL")


def test_pip_variable_beats_config_files(home: Path) -> None:
    write(home / ".config/pip/pip.conf", "[global]\nindex-url = https://file.test/s/\n")
    found = resolve_index_url(None, env(home, PIP_INDEX_URL="https://pip.test/s"))
    assert (found.url, found.source) == ("https://pip.test/s/", "PIP_INDEX_URL")


def test_empty_values_are_ignored(home: Path) -> None:
    write(home / ".config/pip/pip.conf", "[global]\nindex-url = https://file.test/s/\n")
    found = resolve_index_url("  ", env(home, OCI_PYPI_INDEX_URL="", PIP_INDEX_URL=" "))
    assert found.url == "https://file.test/s/"


def test_user_config_file_is_read(home: Path) -> None:
    path = write(home / ".config/pip/pip.conf", "[global]\nindex_url = https://user.test/simple\n")
    found = resolve_index_url(None, env(home))
    assert found.url == "https://user.test/simple/"
    assert found.source == f"pip config {path}"


def test_xdg_config_home_is_honoured(home: Path, tmp_path: Path) -> None:
    write(tmp_path / "xdg/pip/pip.conf", "[global]\nindex-url = https://xdg.test/s/\n")
    found = resolve_index_url(None, env(home, XDG_CONFIG_HOME=str(tmp_path / "xdg")))
    assert found.url == "https://xdg.test/s/"


def test_new_user_file_overrides_the_legacy_one(home: Path) -> None:
    write(home / ".pip/pip.conf", "[global]\nindex-url = https://legacy.test/s/\n")
    write(home / ".config/pip/pip.conf", "[global]\nindex-url = https://new.test/s/\n")
    assert resolve_index_url(None, env(home)).url == "https://new.test/s/"


def test_command_sections_override_global(home: Path) -> None:
    write(
        home / ".config/pip/pip.conf",
        "[download]\nindex-url = https://download.test/s/\n"
        "[global]\nindex-url = https://global.test/s/\n"
        "[install]\nindex-url = https://install.test/s/\n"
        "[list]\nindex-url = https://list.test/s/\n",
    )
    assert resolve_index_url(None, env(home)).url == "https://download.test/s/"


def test_pip_config_file_beats_user_files_and_hides_them(home: Path, tmp_path: Path) -> None:
    write(home / ".config/pip/pip.conf", "[install]\nindex-url = https://user.test/s/\n")
    chosen = write(tmp_path / "chosen.conf", "[global]\nindex-url = https://chosen.test/s/\n")
    found = resolve_index_url(None, env(home, PIP_CONFIG_FILE=str(chosen)))
    assert (found.url, found.source) == ("https://chosen.test/s/", f"pip config {chosen}")


def test_pip_config_file_devnull_disables_all_files(home: Path) -> None:
    write(home / ".config/pip/pip.conf", "[global]\nindex-url = https://user.test/s/\n")
    assert pip_config_files(env(home, PIP_CONFIG_FILE=os.devnull)) == []
    assert resolve_index_url(None, env(home, PIP_CONFIG_FILE=os.devnull)).source == "pip default"


def test_file_order_is_pips_lowest_precedence_first(tmp_path: Path) -> None:
    home = tmp_path / "h"
    files = pip_config_files(
        {"HOME": str(home), "XDG_CONFIG_DIRS": f"/a{os.pathsep}/b", "PIP_CONFIG_FILE": "/nope.conf"}
    )
    assert files == [
        Path("/a/pip/pip.conf"),
        Path("/b/pip/pip.conf"),
        Path("/etc/pip.conf"),
        home / ".pip/pip.conf",
        home / ".config/pip/pip.conf",
        Path(sys.prefix) / "pip.conf",
        Path("/nope.conf"),
    ]


def test_default_comes_from_pip(home: Path) -> None:
    from pip._internal.models.index import PyPI

    found = resolve_index_url(None, env(home))
    assert found.source == "pip default"
    assert found.url == PyPI.simple_url.rstrip("/") + "/"


def test_without_pip_the_user_is_told_to_pass_index_url(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_pip(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pip"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pip)
    with pytest.raises(UsageError, match="--index-url"):
        resolve_index_url(None, env(home))


@pytest.mark.parametrize("value", ["ftp://x.test/simple/", "index.test/simple", "https://"])
def test_non_http_urls_are_refused_naming_the_source(value: str, home: Path) -> None:
    with pytest.raises(UsageError, match="PIP_INDEX_URL"):
        resolve_index_url(None, env(home, PIP_INDEX_URL=value))


def test_unreadable_config_file_is_a_usage_error(home: Path) -> None:
    write(home / ".config/pip/pip.conf", "index-url = no section header\n")
    with pytest.raises(UsageError, match=r"pip\.conf"):
        resolve_index_url(None, env(home))


def test_usage_errors_do_not_show_credentials(home: Path) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_index_url("ftp://me:hunter2@x.test/", env(home))
    assert "hunter2" not in str(caught.value)
    assert "me:" not in str(caught.value)


def test_a_requirements_files_index_beats_pips_settings(home: Path) -> None:
    write(home / ".config/pip/pip.conf", "[global]\nindex-url = https://conf.test/simple/\n")
    named = IndexLocation("https://inside.test/simple", "reqs.txt:1")
    found = resolve_index_url(
        None, env(home, PIP_INDEX_URL="https://pip.test/s/"), requirements=named
    )
    assert (found.url, found.source) == ("https://inside.test/simple/", "reqs.txt:1")


def test_a_requirements_files_index_must_agree_with_ours(home: Path) -> None:
    named = IndexLocation("https://inside.test/simple/", "reqs.txt:1")
    same = resolve_index_url("https://inside.test/simple", env(home), requirements=named)
    assert same.url == "https://inside.test/simple/"
    with pytest.raises(UsageError) as caught:
        resolve_index_url(
            None,
            env(home, OCI_PYPI_INDEX_URL="https://u:hunter2@public.test/simple/"),
            requirements=named,
        )
    message = str(caught.value)
    assert "reqs.txt:1 names the index https://inside.test/simple/" in message
    assert "OCI_PYPI_INDEX_URL names https://***@public.test/simple/" in message
    assert "hunter2" not in message
    with pytest.raises(UsageError, match=r"--config mirror\.toml names"):
        resolve_index_url(
            "https://public.test/", env(home), cli_source="--config mirror.toml", requirements=named
        )
