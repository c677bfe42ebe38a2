"""Every usage error, click's own included, is one ``error:`` line with the way out; exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli

COMMANDS = [
    "completion",
    "sync",
    "ls",
    "copy",
    "verify",
    "serve",
    "login",
    "status",
    "projects",
    "logout",
]


def _usage_error(args: list[str], home: Path) -> str:
    """Run the CLI; it must end with exactly one ``error:`` line and exit 2."""
    result = run_cli(args, cli_env(home))
    assert result.returncode == 2, result.describe()
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Usage:" not in result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_names_it_and_the_help(command: str, tmp_path: Path) -> None:
    line = _usage_error([command, "--frobnicate"], tmp_path)
    assert line == f"error: no such option '--frobnicate'; see 'oci-pypi {command} --help'"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["copy"], "error: missing argument 'SRC'; see 'oci-pypi copy --help'"),
        (["copy", "oci:a"], "error: missing argument 'DST'; see 'oci-pypi copy --help'"),
        (["login"], "error: missing argument 'HOST'; see 'oci-pypi login --help'"),
        (["logout"], "error: missing argument 'HOST'; see 'oci-pypi logout --help'"),
        (
            ["completion"],
            "error: missing argument '{bash|zsh|fish}'. Choose from: bash, zsh, fish; "
            "see 'oci-pypi completion --help'",
        ),
    ],
)
def test_a_missing_argument_is_named(args: list[str], expected: str, tmp_path: Path) -> None:
    assert _usage_error(args, tmp_path) == expected


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["sync", "six", "--to"], "option '--to' requires an argument; see 'oci-pypi sync --help'"),
        (["serve", "--port", "many"], "'--port': 'many' is not a valid integer"),
        (["completion", "tcsh"], "'tcsh' is not one of 'bash', 'zsh', 'fish'"),
        (["sync", "six", "--jobs", "x"], "'x' is not a valid integer"),
        (["ls", "--fro", "oci:x"], "no such option '--fro' (did you mean"),
        (["sync", "six", "--to", "not a target"], "target 'not a target' is neither"),
        (["sync"], "nothing to sync: give requirements, -r FILE"),
        (["no-such-command"], "no such command 'no-such-command'; see 'oci-pypi --help'"),
    ],
)
def test_a_bad_value_names_the_thing_at_fault(args: list[str], named: str, tmp_path: Path) -> None:
    line = _usage_error(args, tmp_path)
    assert named in line
    assert line.endswith(f"; see 'oci-pypi {args[0]} --help'") or args[0] == "no-such-command"


@pytest.mark.parametrize(
    ("args", "asked"),
    [
        (["login", "registry.test"], "username"),
        (["login", "registry.test", "-u", "me"], "password"),
        (["sync", "six", "--to", "registry.test/pypi", "-u", "me"], "password"),
    ],
)
def test_a_prompt_without_a_terminal_says_which_options_answer_it(
    args: list[str], asked: str, tmp_path: Path
) -> None:
    line = _usage_error(args, tmp_path)  # stdin is not a terminal
    assert line == (
        f"error: {asked} needed and stdin is not a terminal to ask on; give -u USER and "
        f"--password-stdin; see 'oci-pypi {args[0]} --help'"
    )


def test_help_and_version_still_exit_0(tmp_path: Path) -> None:
    for args in (["--help"], ["sync", "--help"], ["--version"]):
        result = run_cli(args, cli_env(tmp_path))
        assert result.returncode == 0, result.describe()
        assert result.stdout
        assert not result.stderr
