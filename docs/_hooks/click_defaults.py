"""MkDocs hook: the reference page as ``--help`` means it.

Click 8.3 marks "no default given" with a sentinel whose repr (``Sentinel.UNSET``)
mkdocs-click would print verbatim in the Default column. Flags left unset are
off, other options are unset: the column says ``False`` or ``None``.

A ``\b`` block of a command's help (``Start here:``, ``Examples:``) keeps its
lines in ``--help``; mkdocs-click passes them on as plain Markdown, where they
run into one paragraph. They become code blocks, line for line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
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


def keep_blocks(lines: Iterable[str]) -> Iterator[str]:
    """Help text lines with each ``\b`` block (up to a blank line) fenced as a code block."""
    in_block = False
    for line in lines:
        if line.strip() == "\b":
            in_block = True
            yield "```text"
            continue
        if in_block and not line.strip():
            in_block = False
            yield "```"
        yield line
    if in_block:
        yield "```"


def _describe(original: Callable[..., Iterator[str]]) -> Callable[..., Iterator[str]]:
    def description(ctx: click.Context, remove_ascii_art: bool = False) -> Iterator[str]:
        return keep_blocks(original(ctx, remove_ascii_art))

    return description


def on_startup(**_: Any) -> None:
    global _patched
    if _patched:
        return
    docs: Any = importlib.import_module("mkdocs_click._docs")
    docs._format_table_option_row = _wrap(docs._format_table_option_row)
    docs._make_description = _describe(docs._make_description)
    _patched = True
