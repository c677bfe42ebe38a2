"""``oci-pypi projects``: every project name of the index."""

from __future__ import annotations

import sys

import click

from oci_pypi_sync.cli.common import (
    EXIT_OK,
    configure_logging,
    run,
    verbose_option,
)
from oci_pypi_sync.cli.options import setting_parameter
from oci_pypi_sync.config import KEYS_BY_FIELD
from oci_pypi_sync.errors import UsageError


@click.command()
@setting_parameter(KEYS_BY_FIELD["index_url"])
@verbose_option
def projects(index_url: str | None, verbose: int) -> None:
    """Print every project name of the index, one per line."""
    from oci_pypi_sync.index.client import IndexClient
    from oci_pypi_sync.index.location import resolve_index_url

    configure_logging(verbose)
    try:
        location = resolve_index_url(index_url)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc

    async def go() -> list[str]:
        async with IndexClient(location.url) as index:
            return await index.get_project_names()

    names = run(go)
    out = sys.stdout
    try:
        out.write("\n".join(names))
        if names:
            out.write("\n")
        out.flush()
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(EXIT_OK)
