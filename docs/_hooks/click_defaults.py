"""MkDocs hook: show an option without a default as the reference page means it.

Click 8.3 marks "no default given" with a sentinel whose repr (``Sentinel.UNSET``)
mkdocs-click would print verbatim in the Default column. Flags left unset are
off, other options are unset: the column says ``False`` or ``None``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click

_patched = False


def _is_unset(value: object) -> bool:
    return type(value).__name__ == "Sentinel" and repr(value).endswith("UNSET")


def _wrap(original: Callable[[click.Option], str]) -> Callable[[click.Option], str]:
    def row(option: click.Option) -> str:
        text = original(option)
        if _is_unset(option.default):
            shown = "`False`" if option.is_flag and not option.count else "None"
            text = text.replace(f"`{option.default}`", shown)
        return text

    return row


def on_startup(**_: Any) -> None:
    global _patched
    if _patched:
        return
    docs: Any = importlib.import_module("mkdocs_click._docs")
    docs._format_table_option_row = _wrap(docs._format_table_option_row)
    _patched = True
