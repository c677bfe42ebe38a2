"""The ``oci-pypi`` command line: parse arguments, call the library, render the result.

Exit codes: 0 when everything asked for is mirrored, 1 when the run
finished but some files or projects failed, 2 for usage errors (bad
options, an invalid requirement or target), 3 when the run could not
proceed at all (index or registry unreachable, credentials refused).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from oci_pypi_sync import __version__
from oci_pypi_sync.errors import OciPypiError, UsageError

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_FATAL = 3

T = TypeVar("T")

log = logging.getLogger("oci_pypi_sync")


def _configure_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        verbosity, logging.DEBUG if verbosity > 1 else logging.ERROR
    )
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
    root = logging.getLogger("oci_pypi_sync")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbosity > 1:
        logging.getLogger("httpx").setLevel(logging.DEBUG)
        logging.getLogger("httpx").addHandler(handler)


def _run(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine, turning our errors into a one-line message and an exit code."""
    try:
        return asyncio.run(coro_factory())
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except OciPypiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FATAL)


verbose_option = click.option(
    "-v", "--verbose", count=True, help="Say more (-vv for HTTP requests)."
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
index_url_option = click.option(
    "--index-url",
    "-i",
    metavar="URL",
    help="Simple repository index to read (default: OCI_PYPI_INDEX_URL, PIP_INDEX_URL, "
    "pip's configuration, then pip's default).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oci-pypi")
def main() -> None:
    """Mirror Python packages from a simple repository index into OCI registries and layouts."""


@main.command()
@click.argument("requirements", nargs=-1, required=True, metavar="REQ...")
@click.option(
    "--to",
    "target",
    metavar="TARGET",
    help="HOST[:PORT]/PREFIX for a registry, or oci:PATH for an OCI image layout "
    "(default: oci:./oci-pypi-mirror).",
)
@index_url_option
@click.option("--pre", is_flag=True, help="Include pre-release versions.")
@click.option("--include-yanked", is_flag=True, help="Include yanked files (PEP 592).")
@click.option("--only-binary", is_flag=True, help="Mirror wheels only, no sdists.")
@click.option("--dry-run", is_flag=True, help="Show what would be mirrored; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Files transferred at once.",
)
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a non-loopback registry.")
@click.option(
    "--probe-metadata/--no-probe-metadata",
    default=True,
    show_default=True,
    help="Fetch a wheel's .metadata even when the index does not advertise it.",
)
@verbose_option
@quiet_option
def sync(
    requirements: tuple[str, ...],
    target: str | None,
    index_url: str | None,
    pre: bool,
    include_yanked: bool,
    only_binary: bool,
    dry_run: bool,
    as_json: bool,
    jobs: int,
    plain_http: bool,
    probe_metadata: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Mirror the files that REQ... select (PEP 508, e.g. 'scipy>=1.11,<1.13') into TARGET.

    \b
    Examples:
      oci-pypi sync six                          # into ./oci-pypi-mirror
      oci-pypi sync 'scipy>=1.11,<1.13' --to registry.example.com/pypi
      oci-pypi sync six==1.17.0 --to oci:/srv/mirror --dry-run --json
    """
    from oci_pypi_sync.index.location import resolve_index_url
    from oci_pypi_sync.report import report_json, summary_line
    from oci_pypi_sync.select import SelectionOptions, parse_requirements
    from oci_pypi_sync.sync import SyncOptions
    from oci_pypi_sync.sync import sync as run_sync
    from oci_pypi_sync.targets import open_store, parse_target

    _configure_logging(-1 if quiet else verbose)
    try:
        reqs = parse_requirements(requirements)
        parsed_target = parse_target(target, plain_http=plain_http)
        location = resolve_index_url(index_url)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    options = SyncOptions(
        selection=SelectionOptions(pre=pre, include_yanked=include_yanked, only_binary=only_binary),
        dry_run=dry_run,
        jobs=jobs,
        probe_metadata=probe_metadata,
    )

    async def go() -> Any:
        from oci_pypi_sync.index.client import IndexClient

        store = open_store(parsed_target)
        try:
            async with IndexClient(location.url) as index:
                return await run_sync(reqs, index, store, options)
        finally:
            await store.aclose()

    report = _run(go)
    if as_json:
        click.echo(report_json(report))
    if not quiet:
        click.echo(summary_line(report), err=as_json)
        for project_error in report.project_errors:
            click.echo(f"error: {project_error.project}: {project_error.error}", err=True)
        for failed in report.files:
            if failed.action == "failed":
                click.echo(f"error: {failed.filename}: {failed.error}", err=True)
    sys.exit(EXIT_FAILURES if report.failed else EXIT_OK)


@main.command()
@index_url_option
@verbose_option
def projects(index_url: str | None, verbose: int) -> None:
    """Print every project name of the index, one per line."""
    from oci_pypi_sync.index.client import IndexClient
    from oci_pypi_sync.index.location import resolve_index_url

    _configure_logging(verbose)
    try:
        location = resolve_index_url(index_url)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc

    async def go() -> list[str]:
        async with IndexClient(location.url) as index:
            return await index.get_project_names()

    names = _run(go)
    out = sys.stdout
    try:
        out.write("\n".join(names))
        if names:
            out.write("\n")
        out.flush()
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(EXIT_OK)
