"""``oci-pypi status``: the state file's summary."""

from __future__ import annotations

import sys

import click

from oci_pypi_sync.cli.common import (
    EXIT_FATAL,
)
from oci_pypi_sync.errors import OciPypiError, UsageError


@click.command()
@click.option("--to", "--from", "target", metavar="TARGET", help="The target whose state to show.")
@click.option("--state", "state_path", metavar="PATH", help="The state file to read.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def status(target: str | None, state_path: str | None, as_json: bool) -> None:
    """Summarise the state file of a target: done, pending, failed (with reasons), quarantined.

    \b
    Examples:
      oci-pypi status                            # the default layout's state
      oci-pypi status --to registry.example.com/pypi
      oci-pypi status --state /var/lib/mirror/state.sqlite --json
    """
    import json
    from pathlib import Path

    from oci_pypi_sync.cli.status_render import render_status, status_document
    from oci_pypi_sync.state.journal import Journal, default_journal_path
    from oci_pypi_sync.stores.targets import parse_target

    try:
        parsed_target = parse_target(target) if target or not state_path else None
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    if parsed_target is None:
        path = Path(str(state_path))  # --state alone: whichever target the file records
    else:
        path = Path(state_path) if state_path else default_journal_path(parsed_target)
    try:
        with Journal.open(path, target=parsed_target, readonly=True) as journal:
            summary = journal.summary()
    except OciPypiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FATAL)
    if as_json:
        click.echo(json.dumps(status_document(summary), indent=2))
    else:
        click.echo(render_status(summary))
