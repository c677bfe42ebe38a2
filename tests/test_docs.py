"""The documentation: readable offline, complete about the commands, and its reference
page laid out as ``--help`` is."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import click

from oci_pypi_sync.cli import main

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"


def pages() -> dict[Path, str]:
    return {page: page.read_text(encoding="utf-8") for page in DOCS.rglob("*.md")}


def test_no_diagram_needs_a_script_from_the_network() -> None:
    """Mermaid fences make the theme load mermaid from a CDN: air-gapped readers
    would see raw source. Diagrams are files in docs/images/, and every image a
    page shows is there."""
    for page, text in pages().items():
        assert "```mermaid" not in text, page
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
            assert not target.startswith(("http://", "https://")), (page, target)
            assert (page.parent / target).is_file(), (page, target)
    config = "\n".join(
        line.split("#", 1)[0] for line in (ROOT / "mkdocs.yml").read_text().splitlines()
    )
    assert "mermaid" not in config
    assert "extra_javascript" not in config
    # Nor fonts from the network: the theme's default is web fonts.
    assert re.search(r"^theme:\n(?:  .*\n)*?  font: false$", config, re.M), "theme.font"


def test_the_commands_guide_names_every_command_and_option() -> None:
    guide = (DOCS / "commands.md").read_text()
    missing = []
    for name, command in main.commands.items():
        if f"## `oci-pypi {name}" not in guide:
            missing.append(f"oci-pypi {name}")
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            for option in param.opts + param.secondary_opts:
                if option.startswith("--") and not re.search(
                    rf"[`\[ ,(]{re.escape(option)}\b", guide
                ):
                    missing.append(f"oci-pypi {name} {option}")
    assert missing == []


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "click_defaults", DOCS / "_hooks" / "click_defaults.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_page_keeps_the_lines_of_start_here_and_examples() -> None:
    """``\\b`` blocks of the help become code blocks, not one run-on paragraph."""
    hook = load_hook()
    assert main.help is not None
    lines = list(hook.keep_blocks(inspect.cleandoc(main.help).splitlines()))
    start = lines.index("Start here:")
    assert lines[start - 1] == "```text"
    assert lines[start + 1].strip().startswith("oci-pypi sync six")
    end = lines.index("```", start)
    assert end - start == 4  # three commands, each on its own line
    sync = main.commands["sync"]
    assert sync.help is not None
    lines = list(hook.keep_blocks(inspect.cleandoc(sync.help).splitlines()))
    examples = lines.index("Examples:")
    assert lines[examples - 1] == "```text"
    assert lines[-1] == "```"
