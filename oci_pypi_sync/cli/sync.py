"""``oci-pypi sync``: mirror what requirements select into a target."""

from __future__ import annotations

import sys
from typing import Any

import click

from oci_pypi_sync.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    configure_logging,
    log,
    quiet_option,
    registry_access,
    registry_hosts,
    registry_options,
    run,
    verbose_option,
)
from oci_pypi_sync.cli.options import setting_options
from oci_pypi_sync.cli.progress import ANNOUNCE_BYTES
from oci_pypi_sync.engine.results import (
    CollectingSink,
    DiscardingSink,
    ReportCollector,
    ReportSink,
    SyncReport,
)
from oci_pypi_sync.errors import UsageError


@click.command()
@setting_options()
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="OCI_PYPI_CONFIG",
    help="A TOML file declaring the sync ([sync] table); flags and OCI_PYPI_* win over it.",
)
@click.option("--all", "all_projects", is_flag=True, help="Every project of the index.")
@click.option("--dry-run", is_flag=True, help="Show what would be mirrored; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option(
    "--json-lines",
    "as_json_lines",
    is_flag=True,
    help="Print the report as JSON Lines on stdout, a record per file, release, error "
    "and exclusion as projects finish (with --all), the summary record last.",
)
@click.option("--no-state", is_flag=True, help="Keep no state file; the target alone is asked.")
@click.option(
    "--shards",
    type=click.IntRange(1),
    metavar="N",
    envvar="OCI_PYPI_SHARDS",
    default=None,
    help="Split into N shards and take the one JOB_COMPLETION_INDEX (Kubernetes Indexed "
    "Job) or CI_NODE_INDEX (GitLab parallel) names.",
)
@click.option(
    "--recheck", is_flag=True, help="Check every project against the target, even unchanged ones."
)
@click.option(
    "--retry-quarantined", is_flag=True, help="Try projects quarantined after repeated failures."
)
@click.option(
    "--accept-replaced",
    is_flag=True,
    help="Mirror the new bytes of files the index replaced under the same name "
    "(refused by default: published files do not change).",
)
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a non-loopback registry.")
@click.option(
    "--probe-metadata/--no-probe-metadata",
    default=True,
    show_default=True,
    help="Fetch a wheel's .metadata even when the index does not advertise it.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress: a live display on a terminal, one log line per phase elsewhere "
    "(default: on; -q silences it).",
)
@registry_options
@verbose_option
@quiet_option
def sync(
    config_path: str | None,
    all_projects: bool,
    dry_run: bool,
    as_json: bool,
    as_json_lines: bool,
    no_state: bool,
    shards: int | None,
    recheck: bool,
    retry_quarantined: bool,
    accept_replaced: bool,
    plain_http: bool,
    probe_metadata: bool,
    progress: bool | None,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    username: str | None,
    password_stdin: bool,
    verbose: int,
    quiet: bool,
    **given: Any,
) -> None:
    """Mirror the files that REQ... select (PEP 508, e.g. 'scipy>=1.11,<1.13') into TARGET.

    Every option can also come from OCI_PYPI_<OPTION> (e.g. OCI_PYPI_ONLY_BINARY=1)
    or from the [sync] table of --config FILE; flags win, then the environment.

    \b
    Examples:
      oci-pypi sync six                          # into ./oci-pypi-mirror
      oci-pypi sync 'scipy>=1.11,<1.13' --to registry.example.com/pypi
      oci-pypi sync requests --with-deps --python 3.12 --platform linux/amd64
      oci-pypi sync -r requirements.txt --to oci:/srv/mirror --dry-run --json
      oci-pypi sync --config mirror.toml --shard 0/4
    """
    import os

    from oci_pypi_sync.cli.render import (
        JsonLinesSink,
        PlanTableSink,
        plan_table,
        report_json,
        report_json_lines,
        summary_json_line,
        summary_line,
    )
    from oci_pypi_sync.config import load_config, merge_settings
    from oci_pypi_sync.engine.job import JobFlags, read_inputs, run_job, streams
    from oci_pypi_sync.index.location import resolve_index_url
    from oci_pypi_sync.plan.shard import shard_from_environment
    from oci_pypi_sync.redact import redact_url
    from oci_pypi_sync.stores.targets import open_store, parse_target, planning_store

    configure_logging(-1 if quiet else verbose)
    try:
        if shards is not None and given["shard"] is None:
            given["shard"] = str(shard_from_environment(shards))
        config = load_config(config_path) if config_path else None
        settings = merge_settings(given, os.environ, config)
        parsed_target = parse_target(settings.to, plain_http=plain_http)
        tls, credentials = registry_access(
            registry_hosts(parsed_target),
            ca_bundle,
            client_cert,
            client_key,
            username,
            password_stdin,
        )
        if not (settings.requirements or settings.requirement_files or settings.pylock) and not (
            all_projects
        ):
            raise UsageError(
                "nothing to sync: give requirements, -r FILE, --pylock FILE, --config FILE or --all"
            )
        if as_json and as_json_lines:
            raise UsageError("--json and --json-lines both print the report: choose one")
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        inputs = read_inputs(settings)
        location = resolve_index_url(
            settings.index_url,
            cli_source=settings.origins.get("index_url", "--index-url"),
            requirements=inputs.index,
        )
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    log.info("index %s (from %s)", redact_url(location.url), location.source)
    flags = JobFlags(
        dry_run=dry_run,
        all_projects=all_projects,
        recheck=recheck,
        retry_quarantined=retry_quarantined,
        probe_metadata=probe_metadata,
        accept_replaced=accept_replaced,
    )
    on_terminal = sys.stderr.isatty()
    show_progress = progress is not False and not quiet
    # What is about to be transferred is said from this size on (always at -v).
    announce_bytes = 0 if verbose else ANNOUNCE_BYTES
    connections = settings.jobs * 2
    # A run over the whole index streams its records (see run_job): as JSON Lines,
    # as a plan table printed as it goes, or kept for --json.
    streamed = all_projects and streams(settings)
    collector = ReportCollector(keep=not streamed)
    sink: ReportSink = DiscardingSink()
    if streamed and as_json_lines:
        sink = JsonLinesSink(click.echo)
    elif streamed and as_json:
        sink = CollectingSink()
    elif streamed and dry_run:
        sink = PlanTableSink(click.echo)
    started = False

    async def go() -> Any:
        from oci_pypi_sync.cli.progress import LogObserver, RichObserver, show_phases
        from oci_pypi_sync.index.client import IndexClient
        from oci_pypi_sync.state.journal import Journal, default_journal_path

        nonlocal collector, started

        store = (
            planning_store(parsed_target)
            if dry_run
            else open_store(
                parsed_target,
                timeout=settings.timeout,
                max_connections=connections,
                tls=tls,
                credentials=credentials,
            )
        )
        journal = None
        try:
            if not dry_run and not no_state:
                path = settings.state or default_journal_path(parsed_target)
                journal = Journal.open(path, target=parsed_target)
            async with IndexClient(
                location.url, timeout=settings.timeout, max_connections=connections
            ) as index:
                started = True
                if not quiet:
                    show_phases()
                target = store.display_name
                if show_progress and on_terminal:
                    with RichObserver(target=target, announce_bytes=announce_bytes) as observer:
                        collector = ReportCollector(observer, keep=not streamed)
                        return await run_job(
                            settings,
                            flags,
                            index,
                            store,
                            journal=journal,
                            observer=collector,
                            inputs=inputs,
                            sink=sink,
                        )
                phases = show_progress and not on_terminal
                collector = ReportCollector(
                    LogObserver(target, phases=phases, announce_bytes=announce_bytes),
                    keep=not streamed,
                )
                return await run_job(
                    settings,
                    flags,
                    index,
                    store,
                    journal=journal,
                    observer=collector,
                    inputs=inputs,
                    sink=sink,
                )
        finally:
            await store.aclose()
            if journal is not None:
                journal.close()

    def stopped(exc: BaseException) -> None:
        """A run that got as far as its plan still prints what it did, before the error."""
        if not started or isinstance(exc, UsageError):
            return
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc) or repr(exc)
        partial = collector.partial(str(parsed_target), reason, dry_run=dry_run)
        # The error line follows; a summary of nothing done would only repeat it.
        show(partial, summary=bool(partial.files or partial.releases))

    def show(report: SyncReport, *, summary: bool = True) -> None:
        if as_json_lines:
            # A streamed run wrote its records already: its summary is left.
            streamed = report.streamed is not None
            for line in [summary_json_line(report)] if streamed else report_json_lines(report):
                click.echo(line)
        elif as_json:
            click.echo(
                report_json(sink.attach(report) if isinstance(sink, CollectingSink) else report)
            )
        elif isinstance(sink, PlanTableSink):
            click.echo(sink.footer())
        elif dry_run and summary:
            click.echo(plan_table(report))
        if not quiet and summary:
            click.echo(summary_line(report), err=True)
            for project_error in report.project_errors:
                click.echo(f"error: {project_error.project}: {project_error.error}", err=True)
            for failed in report.files:
                if failed.action in ("failed", "replaced-upstream"):
                    click.echo(f"error: {failed.filename}: {failed.error}", err=True)
            for warning in report.warnings:
                click.echo(f"warning: {warning.message}", err=True)

    report = run(go, on_failure=stopped)
    show(report)
    sys.exit(EXIT_FAILURES if report.failed else EXIT_OK)
