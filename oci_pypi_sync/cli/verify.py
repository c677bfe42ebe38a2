"""``oci-pypi verify``: check a mirror, and repair it from the index."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import click

from oci_pypi_sync.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    configure_logging,
    index_url_option,
    registry_options,
    run,
    target_access,
    verbose_option,
)
from oci_pypi_sync.errors import UsageError


@click.command()
@click.argument("target", metavar="TARGET", required=False)
@click.option("--repair", is_flag=True, help="Re-fetch what is missing or wrong from the index.")
@click.option("--deep", is_flag=True, help="Read back and hash every blob (registries too).")
@index_url_option
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a non-loopback registry.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@registry_options
@verbose_option
def verify(
    target: str | None,
    repair: bool,
    deep: bool,
    index_url: str | None,
    plain_http: bool,
    as_json: bool,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    username: str | None,
    password_stdin: bool,
    verbose: int,
) -> None:
    """Check that every tag's index, manifest and blob is present with the right digest and size.

    Exits 0 when the mirror is sound (or was fully repaired), 1 otherwise.

    \b
    Examples:
      oci-pypi verify                            # ./oci-pypi-mirror
      oci-pypi verify registry.example.com/pypi --repair
    """
    import json

    from oci_pypi_sync.index.location import resolve_index_url
    from oci_pypi_sync.ops.verify import repair as run_repair
    from oci_pypi_sync.ops.verify import verify as run_verify

    configure_logging(verbose)
    access = target_access(
        target, plain_http, ca_bundle, client_cert, client_key, username, password_stdin
    )
    try:
        location = resolve_index_url(index_url) if repair else None
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc

    async def go() -> Any:
        from oci_pypi_sync.index.client import IndexClient

        store = access.open(create=repair)
        try:
            report = await run_verify(store, deep=deep)
            mended = None
            if repair and not report.ok and location is not None:
                async with IndexClient(location.url) as index:
                    mended = await run_repair(store, report, index)
                report = await run_verify(store, deep=deep)
            return report, mended
        finally:
            await store.aclose()

    report, mended = run(go)
    if as_json:
        document = {
            "target": report.target,
            "ok": report.ok,
            "tags_checked": report.tags_checked,
            "manifests_checked": report.manifests_checked,
            "blobs_checked": report.blobs_checked,
            "findings": [asdict(f) for f in report.findings],
            "repaired": [asdict(a) for a in mended.repaired] if mended else [],
            "unrepaired": [asdict(a) for a in mended.unrepaired] if mended else [],
        }
        click.echo(json.dumps(document, indent=2))
    else:
        if mended is not None:
            for action in mended.repaired:
                click.echo(f"repaired {action.repository}:{action.tag}: {action.detail}")
            for action in mended.unrepaired:
                click.echo(f"not repaired {action.repository}:{action.tag}: {action.detail}")
        for finding in report.findings:
            click.echo(f"{finding.kind} {finding.repository}:{finding.tag}: {finding.detail}")
        click.echo(
            f"{report.target}: {report.tags_checked} tags, {report.manifests_checked} manifests, "
            f"{report.blobs_checked} blobs checked; "
            + ("sound" if report.ok else f"{len(report.findings)} findings"),
            err=True,
        )
    sys.exit(EXIT_OK if report.ok else EXIT_FAILURES)
