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
    registry_options,
    require_mirror,
    run,
    target_access,
    verbose_option,
)
from oci_pypi_sync.cli.options import jobs_option, setting_parameter
from oci_pypi_sync.config import KEYS_BY_FIELD
from oci_pypi_sync.errors import UsageError


@click.command()
@click.argument("target", metavar="TARGET", required=False)
@click.option("--repair", is_flag=True, help="Re-fetch what is missing or wrong from the index.")
@click.option("--deep", is_flag=True, help="Read back and hash every blob (registries too).")
@click.option(
    "--provenance",
    "check_provenance",
    is_flag=True,
    help="Also verify every stored PEP 740 attestation again, offline, against the file's blob.",
)
@click.option(
    "--trusted-root",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="A Sigstore trusted_root.json for --provenance (default: the sigstore package's).",
)
@click.option(
    "--trusted-publisher",
    "trusted_publishers",
    multiple=True,
    metavar="PROJECT=PUBLISHER",
    help="With --provenance: PROJECT's files must be attested by this publisher; repeatable.",
)
@click.option(
    "--sample",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    metavar="FRACTION",
    help="Check a random FRACTION of the tags (0.01: one in a hundred), reading their blobs back.",
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=None,
    help="With --sample: the draw; the same seed checks the same tags (default: a new draw).",
)
@jobs_option("Tag lists and tags read at once.")
@setting_parameter(KEYS_BY_FIELD["index_url"])
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a non-loopback registry.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@registry_options
@verbose_option
def verify(
    target: str | None,
    repair: bool,
    deep: bool,
    check_provenance: bool,
    trusted_root: str | None,
    trusted_publishers: tuple[str, ...],
    sample: float | None,
    seed: int | None,
    jobs: int,
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

    With --provenance, every stored PEP 740 provenance object is verified
    again with no network, against the digest of the file's blob, and the
    report lists files without provenance and the publishers per project.

    Content of format 1, and version indexes another tool re-encoded with
    their content intact, are warnings: --repair rewrites them in format 2.
    Exits 0 when the mirror is sound (or was fully repaired), 1 otherwise.

    The repositories come from the mirror's catalog (a registry's
    /v2/_catalog only when there is none). --sample checks a random
    fraction of the tags, each one deeply: a spot check, which proves
    nothing about the tags it did not draw.

    \b
    Examples:
      oci-pypi verify                            # ./oci-pypi-mirror
      oci-pypi verify registry.example.com/pypi --repair
      oci-pypi verify oci:/srv/mirror --provenance --trusted-root trusted_root.json
      oci-pypi verify registry.example.com/pypi --sample 0.01 -j 32   # a spot check
    """
    import json
    import secrets
    from pathlib import Path

    from oci_pypi_sync.index.location import resolve_index_url
    from oci_pypi_sync.ops.provenance import verify_provenance
    from oci_pypi_sync.ops.verify import repair as run_repair
    from oci_pypi_sync.ops.verify import verify as run_verify
    from oci_pypi_sync.provenance.publishers import parse_pins

    configure_logging(verbose)
    access = target_access(
        target, plain_http, ca_bundle, client_cert, client_key, username, password_stdin
    )
    require_mirror(access, target, "a TARGET argument")
    try:
        location = resolve_index_url(index_url) if repair else None
        pins = parse_pins(trusted_publishers)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    if (trusted_root or trusted_publishers) and not check_provenance:
        raise click.UsageError("--trusted-root and --trusted-publisher go with --provenance")
    if seed is not None and sample is None:
        raise click.UsageError("--seed goes with --sample")
    draw = seed if seed is not None else secrets.randbits(32)

    async def go() -> Any:
        from oci_pypi_sync.index.client import IndexClient

        store = access.open(create=repair)
        try:
            report = await run_verify(store, deep=deep, jobs=jobs, sample=sample, seed=draw)
            mended = None
            if repair and report.findings and location is not None:
                async with IndexClient(location.url) as index:
                    mended = await run_repair(store, report, index)
                # the same draw: the tags just repaired are checked again
                report = await run_verify(store, deep=deep, jobs=jobs, sample=sample, seed=draw)
            audit = None
            if check_provenance:
                root = Path(trusted_root) if trusted_root else None
                audit = await verify_provenance(store, trusted_root=root, pins=pins)
            return report, mended, audit
        finally:
            await store.aclose()

    report, mended, audit = run(go)
    ok = report.ok and (audit is None or audit.ok)
    if as_json:
        document = {
            "target": report.target,
            "ok": report.ok,
            "tags_checked": report.tags_checked,
            "manifests_checked": report.manifests_checked,
            "blobs_checked": report.blobs_checked,
            "tags_skipped": report.tags_skipped,
            "tags_listed": report.tags_listed,
            "sample": report.sample,
            "seed": draw if report.sample is not None else None,
            "findings": [{**asdict(f), "warning": f.warning} for f in report.findings],
            "repaired": [asdict(a) for a in mended.repaired] if mended else [],
            "unrepaired": [asdict(a) for a in mended.unrepaired] if mended else [],
        }
        if audit is not None:
            document["ok"] = ok
            document["provenance"] = {
                "ok": audit.ok,
                "files_checked": audit.files_checked,
                "files_verified": audit.files_verified,
                "attestations_verified": audit.attestations_verified,
                "bundles_checked": audit.bundles_checked,
                "failures": [asdict(f) for f in audit.failures],
                "without_provenance": [asdict(f) for f in audit.without],
                "publishers": {name: list(found) for name, found in audit.publishers.items()},
                "publisher_changes": [str(change) for change in audit.changes],
            }
        click.echo(json.dumps(document, indent=2))
    else:
        if mended is not None:
            for action in mended.repaired:
                click.echo(f"repaired {action.repository}:{action.tag}: {action.detail}")
            for action in mended.unrepaired:
                click.echo(f"not repaired {action.repository}:{action.tag}: {action.detail}")
        for finding in report.findings:
            prefix = "warning: " if finding.warning else ""
            click.echo(
                f"{prefix}{finding.kind} {finding.repository}:{finding.tag}: {finding.detail}"
            )
        faults = len(report.findings) - report.warnings
        verdict = f"{faults} findings" if faults else "sound"
        if report.warnings:
            verdict += f", {report.warnings} warnings (oci-pypi verify --repair rewrites them)"
        skipped = f", {report.tags_skipped} other tags skipped" if report.tags_skipped else ""
        drawn = (
            f" (a sample of {report.sample:g} of {report.tags_listed}, --seed {draw})"
            if report.sample is not None
            else ""
        )
        click.echo(
            f"{report.target}: {report.tags_checked} tags{drawn}, "
            f"{report.manifests_checked} manifests, "
            f"{report.blobs_checked} blobs checked{skipped}; {verdict}",
            err=True,
        )
        if audit is not None:
            for project, found in audit.publishers.items():
                click.echo(f"publishers {project}: {', '.join(found)}")
            for missing in audit.without:
                click.echo(
                    f"no provenance {missing.repository} {missing.version}: {missing.filename}"
                )
            for failure in audit.failures:
                click.echo(
                    f"provenance failed {failure.repository} {failure.version}: "
                    f"{failure.filename}: {failure.detail}"
                )
            for change in audit.changes:
                click.echo(f"warning: {change}", err=True)
            click.echo(
                f"{audit.target}: provenance of {audit.files_verified} of {audit.files_checked} "
                f"files verified ({audit.attestations_verified} attestations, "
                f"{audit.bundles_checked} Sigstore bundles), {len(audit.without)} without, "
                f"{len(audit.failures)} failed",
                err=True,
            )
    sys.exit(EXIT_OK if ok else EXIT_FAILURES)
