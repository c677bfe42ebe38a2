"""The sync command's setting options are generated from the one settings table."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import click
import pytest

from oci_pypi_sync.cli import main
from oci_pypi_sync.config import KEYS, MANY, Settings, SyncConfig, format_default


def sync_command() -> click.Command:
    command = main.commands["sync"]
    assert isinstance(command, click.Command)
    return command


def test_every_setting_is_a_parameter_of_sync_as_the_table_declares_it() -> None:
    params = {param.name: param for param in sync_command().params}
    for key in KEYS:
        param = params[key.field]
        if key.flag is None:
            assert isinstance(param, click.Argument), key.field
            assert param.nargs == -1
            continue
        assert isinstance(param, click.Option), key.field
        assert param.opts[0] == f"--{key.flag}"
        assert ([key.short] if key.short else []) == param.opts[1:]
        assert param.help is not None
        assert param.help.startswith(key.help)
        assert key.env_var is not None
        assert key.env_var in param.help
        default = format_default(key)
        if default is not None:
            assert f"default {default}" in param.help
        if key.bounds is not None:
            assert key.bounds in param.help
        assert param.is_flag == (key.kind == "bool")
        assert param.multiple == (key.kind in MANY)
        # "Not given" must stay distinguishable from a value, so that the
        # environment, the config file and the table's default can speak.
        assert param.default in (None, ())


def test_the_settings_records_hold_the_fields_of_the_table() -> None:
    table = [key.field for key in KEYS]
    assert [f.name for f in fields(Settings) if f.name != "origins"] == table
    assert [f.name for f in fields(SyncConfig) if f.name != "path"] == table
    assert {f.name: f.default for f in fields(Settings) if f.name != "origins"} == {
        key.field: key.default for key in KEYS
    }


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    environ.update(env, XDG_STATE_HOME=str(cwd / "state-home"))
    return subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_help_shows_defaults_bounds_and_variables_from_the_table(tmp_path: Path) -> None:
    result = run(["sync", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    words = " ".join(result.stdout.split())
    assert "-j, --jobs N Files at once. [between 1 and 256; default 8; env OCI_PYPI_JOBS]" in words
    assert "--retries N Retries of a step after a transient fault. [between 0 and 20; " in words
    assert "--with-deps Add the dependency closure. [env OCI_PYPI_WITH_DEPS]" in words


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--jobs", "0"], {}, "--jobs: 0 is out of range (must be between 1 and 256)"),
        ([], {"OCI_PYPI_JOBS": "300"}, "OCI_PYPI_JOBS: 300 is out of range"),
        (["--timeout", "0"], {}, "--timeout: 0.0 is out of range (must be at least 0.1)"),
        (["--latest", "x"], {}, "'x' is not a valid integer"),
    ],
)
def test_a_bad_setting_is_one_error_naming_where_it_came_from(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run(["sync", "six", "--dry-run", *args], tmp_path, **env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
