"""``oci-pypi copy``: a mirror from one target to another, digests unchanged."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import click

from oci_pypi_sync.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    configure_logging,
    registry_access,
    registry_hosts,
    registry_options,
    run,
    verbose_option,
)
from oci_pypi_sync.cli.options import jobs_option
from oci_pypi_sync.errors import UsageError


@click.command()
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@jobs_option("Tags copied, and tag lists read, at once.")
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to non-loopback registries.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@registry_options
@verbose_option
def copy(
    source: str,
    destination: str,
    jobs: int,
    plain_http: bool,
    as_json: bool,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    username: str | None,
    password_stdin: bool,
    verbose: int,
) -> None:
    """Copy a mirror between targets, digests unchanged; what exists is skipped.

    SRC and DST are oci:PATH (a directory, or PATH.tar for a packed layout)
    or HOST[:PORT]/PREFIX. An interrupted copy resumes where it stopped.
    A registry's repositories come from the mirror's catalog (its
    /v2/_catalog only when there is none).

    \b
    Examples:
      oci-pypi copy oci:./oci-pypi-mirror oci:mirror.tar      # pack for the air gap
      oci-pypi copy oci:mirror.tar registry.internal/pypi     # unpack inside
    """
    import json

    from oci_pypi_sync.ops.copy import copy as run_copy
    from oci_pypi_sync.stores.targets import open_store, parse_target

    configure_logging(verbose)
    try:
        src_target = parse_target(source, plain_http=plain_http)
        dst_target = parse_target(destination, plain_http=plain_http)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    tls, credentials = registry_access(
        registry_hosts(src_target, dst_target),
        ca_bundle,
        client_cert,
        client_key,
        username,
        password_stdin,
    )

    async def go() -> Any:
        src = open_store(src_target, create=False, tls=tls, credentials=credentials)
        try:
            dst = open_store(dst_target, tls=tls, credentials=credentials)
            try:
                return await run_copy(src, dst, jobs=jobs)
            finally:
                await dst.aclose()
        finally:
            await src.aclose()

    report = run(go)
    if as_json:
        document = {
            "source": report.source,
            "destination": report.destination,
            "ok": not report.failed,
            "tags": [asdict(t) for t in report.tags],
            "blobs_copied": report.blobs_copied,
            "blobs_mounted": report.blobs_mounted,
            "blobs_present": report.blobs_present,
            "bytes_copied": report.bytes_copied,
            "manifests_copied": report.manifests_copied,
        }
        click.echo(json.dumps(document, indent=2))
    click.echo(
        f"{report.destination}: {report.count('copied')} tags copied, "
        f"{report.count('unchanged')} unchanged, {report.count('failed')} failed; "
        f"{report.blobs_copied} blobs copied ({report.bytes_copied} bytes), "
        f"{report.blobs_present} already there",
        err=as_json,
    )
    for tag in report.tags:
        if tag.action == "failed":
            click.echo(f"error: {tag.repository}:{tag.tag}: {tag.reason}", err=True)
    sys.exit(EXIT_FAILURES if report.failed else EXIT_OK)
