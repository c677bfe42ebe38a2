"""Click options made from the settings table (:data:`oci_pypi_sync.config.KEYS`).

A setting's flag, short flag, metavar, help text, default and bounds are
declared once, in the table; this module only turns each row into a click
parameter. Every option defaults to ``None`` (flags too), so that
:func:`~oci_pypi_sync.config.merge_settings` can tell "not given" from a
value and let the environment, the config file or the default speak; the
help text says the default and the environment variable instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from oci_pypi_sync.config import KEYS, MANY, Key, format_default

F = TypeVar("F", bound=Callable[..., Any])


def setting_help(key: Key) -> str:
    """The row's help text with its bounds, default and environment variable."""
    notes = []
    if key.bounds is not None:
        notes.append(key.bounds)
    default = format_default(key)
    if default is not None:
        notes.append(f"default {default}")
    if key.env_var is not None:
        notes.append(f"env {key.env_var}")
    return f"{key.help} [{'; '.join(notes)}]" if notes else key.help


def setting_parameter(key: Key) -> Callable[[F], F]:
    """One setting as a click parameter: an argument when it has no flag, else an option."""
    if key.flag is None:
        return click.argument(key.field, nargs=-1, metavar=key.metavar)
    names = [f"--{key.flag}", *([key.short] if key.short else []), key.field]
    options: dict[str, Any] = {"default": None, "help": setting_help(key)}
    if key.kind == "bool":
        options["is_flag"] = True
    else:
        options["metavar"] = key.metavar
    if key.kind in MANY:
        options["multiple"] = True
        options["default"] = ()
    elif key.kind == "int":
        options["type"] = int
    elif key.kind == "number":
        options["type"] = float
    elif key.choices:
        options["type"] = click.Choice(key.choices)
        options.pop("metavar")
    return click.option(*names, **options)


def setting_options(keys: Sequence[Key] = KEYS) -> Callable[[F], F]:
    """Every setting of ``keys`` as click parameters, in the table's order."""

    def decorate(command: F) -> F:
        for key in reversed(keys):
            command = setting_parameter(key)(command)
        return command

    return decorate


def jobs_option(help: str) -> Callable[[F], F]:
    """``--jobs/-j N`` (1 to 256, default 8) of an operation walking a mirror's tags."""
    return click.option(
        "--jobs", "-j", type=click.IntRange(1, 256), default=8, show_default=True, help=help
    )
