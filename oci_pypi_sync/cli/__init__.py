"""The ``oci-pypi`` command line: parse arguments, call the library, render the result.

Exit codes: 0 when everything asked for is mirrored, 1 when the run
finished but some files or projects failed, 2 for usage errors (bad
options, an invalid requirement or target), 3 when the run could not
proceed at all (index or registry unreachable, credentials refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import click

from oci_pypi_sync import __version__
from oci_pypi_sync.errors import OciPypiError, UsageError

# httpx imports its own command-line client (rich, pygments) along with the
# library, a tenth of a no-op sync's time; a None entry makes that import fail
# at once, and httpx then goes on without it, as it does when they are missing.
# (This module imports httpx only inside commands, so the entry comes first.)
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

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


def registry_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The TLS and credential flags every command that talks to a registry takes."""
    path = click.Path(exists=True, dir_okay=False)
    options = [
        click.option(
            "--ca-bundle",
            type=path,
            help="CA certificates to trust for registries (env OCI_PYPI_CA_BUNDLE).",
        ),
        click.option("--client-cert", type=path, help="Client certificate for registries."),
        click.option("--client-key", type=path, help="Key of the client certificate."),
        click.option("--username", "-u", help="Registry user name (with --password-stdin)."),
        click.option(
            "--password-stdin", is_flag=True, help="Read the registry password from stdin."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _registry_access(
    hosts: list[str],
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    username: str | None,
    password_stdin: bool,
) -> tuple[Any, Any]:
    """The TLS options and credentials the registry flags ask for (``None``: the defaults)."""
    from pathlib import Path

    from oci_pypi_sync.stores.credentials import Credentials, CredentialStore
    from oci_pypi_sync.stores.tls import TlsOptions

    tls = TlsOptions(
        ca_bundle=Path(ca_bundle) if ca_bundle else None,
        client_cert=Path(client_cert) if client_cert else None,
        client_key=Path(client_key) if client_key else None,
    )
    if password_stdin and not username:
        raise click.UsageError("--password-stdin needs --username")
    credentials = None
    if username:
        password = _read_password(password_stdin)
        explicit = dict.fromkeys(hosts, Credentials(username=username, password=password))
        credentials = CredentialStore(explicit=explicit)
    return tls, credentials


@dataclass(frozen=True)
class _TargetAccess:
    """A parsed target with the TLS options and credentials its commands open it with."""

    target: Any
    tls: Any
    credentials: Any

    def open(self, *, create: bool = False, **options: Any) -> Any:
        from oci_pypi_sync.stores.targets import open_store

        return open_store(
            self.target, create=create, tls=self.tls, credentials=self.credentials, **options
        )


def _target_access(
    target: str | None,
    plain_http: bool,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    username: str | None,
    password_stdin: bool,
) -> _TargetAccess:
    """Parse ``--to``/``--from`` and the registry flags; usage errors become click's."""
    from oci_pypi_sync.stores.targets import parse_target

    try:
        parsed = parse_target(target, plain_http=plain_http)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    tls, credentials = _registry_access(
        _registry_hosts(parsed), ca_bundle, client_cert, client_key, username, password_stdin
    )
    return _TargetAccess(parsed, tls, credentials)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.read().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True))


def _registry_hosts(*targets: Any) -> list[str]:
    from oci_pypi_sync.stores.targets import RegistryTarget

    return [t.host for t in targets if isinstance(t, RegistryTarget)]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oci-pypi")
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colour and live displays on stderr; NO_COLOR in the environment means never.",
)
def main(color: str) -> None:
    """Mirror Python packages from a simple repository index into OCI registries and layouts.

    \b
    Start here:
      oci-pypi sync six                      # mirror into ./oci-pypi-mirror
      oci-pypi serve                         # install from it with pip or uv
      oci-pypi COMMAND --help                # every option, with examples
    """
    import os

    if color == "never" or (color == "auto" and os.environ.get("NO_COLOR")):
        os.environ["NO_COLOR"] = "1"  # rich and click honour it
        os.environ.pop("FORCE_COLOR", None)
    elif color == "always":
        os.environ.pop("NO_COLOR", None)
        os.environ["FORCE_COLOR"] = "1"


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    Examples:
      eval "$(oci-pypi completion bash)"          # in ~/.bashrc
      oci-pypi completion zsh > ~/.zfunc/_oci-pypi
      oci-pypi completion fish > ~/.config/fish/completions/oci-pypi.fish
    """
    from click.shell_completion import get_completion_class

    completion_class = get_completion_class(shell)
    if completion_class is None:  # pragma: no cover - click knows all three
        raise click.UsageError(f"no completion for {shell}")
    script = completion_class(main, {}, "oci-pypi", "_OCI_PYPI_COMPLETE").source()
    click.echo(script)


@main.command()
@click.argument("requirements", nargs=-1, metavar="[REQ]...")
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="OCI_PYPI_CONFIG",
    help="A TOML file declaring the sync ([sync] table); flags and OCI_PYPI_* win over it.",
)
@click.option(
    "--to",
    "target",
    metavar="TARGET",
    default=None,
    help="HOST[:PORT]/PREFIX for a registry, or oci:PATH for an OCI image layout "
    "(a PATH ending in .tar is a packed layout; default: oci:./oci-pypi-mirror).",
)
@index_url_option
@click.option(
    "-r",
    "--requirement",
    "requirement_files",
    multiple=True,
    metavar="FILE",
    help="A pip requirements file (-r/-c includes, hashes, markers); repeatable.",
)
@click.option(
    "--pylock", metavar="FILE", default=None, help="Mirror the files a pylock.toml names."
)
@click.option(
    "--python",
    "pythons",
    multiple=True,
    metavar="X.Y",
    help="Target Python version; repeatable. Needs --platform.",
)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="TAG",
    help="Target wheel platform tag (manylinux_2_28_x86_64, win_amd64...) or shorthand "
    "(linux/amd64, darwin/arm64...); repeatable.",
)
@click.option("--with-deps", is_flag=True, default=None, help="Add the dependency closure.")
@click.option("--all", "all_projects", is_flag=True, help="Every project of the index.")
@click.option("--latest", type=click.IntRange(1), default=None, help="Keep the N newest versions.")
@click.option("--allow", multiple=True, metavar="NAME|re:PATTERN", help="Only these projects.")
@click.option("--deny", multiple=True, metavar="NAME|re:PATTERN", help="Never these projects.")
@click.option("--pre", is_flag=True, default=None, help="Include pre-release versions.")
@click.option(
    "--include-yanked", is_flag=True, default=None, help="Include yanked files (PEP 592)."
)
@click.option("--only-binary", is_flag=True, default=None, help="Mirror wheels only, no sdists.")
@click.option("--dry-run", is_flag=True, help="Show what would be mirrored; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 256), default=None, help="Files at once (default 8)."
)
@click.option(
    "--state",
    "state_path",
    metavar="PATH",
    default=None,
    help="The state file (journal). Default: .oci-pypi-state.sqlite in a layout, "
    "or one per registry under $XDG_STATE_HOME/oci-pypi.",
)
@click.option("--no-state", is_flag=True, help="Keep no state file; the target alone is asked.")
@click.option(
    "--shard",
    metavar="K/N",
    default=None,
    help="Take only the projects of shard K (0-based) of N, by normalized name.",
)
@click.option(
    "--shards",
    type=click.IntRange(1),
    envvar="OCI_PYPI_SHARDS",
    default=None,
    help="Split into N shards and take the one JOB_COMPLETION_INDEX (Kubernetes Indexed "
    "Job) or CI_NODE_INDEX (GitLab parallel) names.",
)
@click.option(
    "--prune", is_flag=True, default=None, help="Take files the index dropped out of indexes."
)
@click.option(
    "--recheck", is_flag=True, help="Check every project against the target, even unchanged ones."
)
@click.option(
    "--retry-quarantined", is_flag=True, help="Try projects quarantined after repeated failures."
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=None,
    help="Retries of a step after a transient fault (default 4).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Network timeout for connecting and for each read or write.",
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
    help="Show a live progress display (default: when stderr is a terminal).",
)
@registry_options
@verbose_option
@quiet_option
def sync(
    requirements: tuple[str, ...],
    config_path: str | None,
    target: str | None,
    index_url: str | None,
    requirement_files: tuple[str, ...],
    pylock: str | None,
    pythons: tuple[str, ...],
    platforms: tuple[str, ...],
    with_deps: bool | None,
    all_projects: bool,
    latest: int | None,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    pre: bool | None,
    include_yanked: bool | None,
    only_binary: bool | None,
    dry_run: bool,
    as_json: bool,
    jobs: int | None,
    state_path: str | None,
    no_state: bool,
    shard: str | None,
    shards: int | None,
    prune: bool | None,
    recheck: bool,
    retry_quarantined: bool,
    retries: int | None,
    timeout: float | None,
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

    from oci_pypi_sync.cli.render import plan_table, report_json, summary_line
    from oci_pypi_sync.config import load_config, merge_settings
    from oci_pypi_sync.engine.job import JobFlags, run_job
    from oci_pypi_sync.index.location import resolve_index_url
    from oci_pypi_sync.plan.shard import shard_from_environment
    from oci_pypi_sync.stores.targets import open_store, parse_target, planning_store

    _configure_logging(-1 if quiet else verbose)
    try:
        if shards is not None and shard is None:
            shard = str(shard_from_environment(shards))
        config = load_config(config_path) if config_path else None
        settings = merge_settings(
            {
                "to": target,
                "index_url": index_url,
                "requirements": requirements,
                "requirement_files": requirement_files,
                "pylock": pylock,
                "python": pythons,
                "platform": platforms,
                "pre": pre,
                "include_yanked": include_yanked,
                "only_binary": only_binary,
                "latest": latest,
                "allow": allow,
                "deny": deny,
                "with_deps": with_deps,
                "jobs": jobs,
                "state": state_path,
                "shard": shard,
                "prune": prune,
                "retries": retries,
                "timeout": timeout,
            },
            os.environ,
            config,
        )
        parsed_target = parse_target(settings.to, plain_http=plain_http)
        tls, credentials = _registry_access(
            _registry_hosts(parsed_target),
            ca_bundle,
            client_cert,
            client_key,
            username,
            password_stdin,
        )
        location = resolve_index_url(settings.index_url)
        if not (settings.requirements or settings.requirement_files or settings.pylock) and not (
            all_projects
        ):
            raise UsageError(
                "nothing to sync: give requirements, -r FILE, --pylock FILE, --config FILE or --all"
            )
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    flags = JobFlags(
        dry_run=dry_run,
        all_projects=all_projects,
        recheck=recheck,
        retry_quarantined=retry_quarantined,
        probe_metadata=probe_metadata,
    )
    show_progress = progress if progress is not None else (sys.stderr.isatty() and not quiet)
    connections = settings.jobs * 2

    async def go() -> Any:
        from oci_pypi_sync.cli.progress import LogObserver, RichObserver
        from oci_pypi_sync.index.client import IndexClient
        from oci_pypi_sync.state.journal import Journal, default_journal_path

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
                if show_progress:
                    with RichObserver() as observer:
                        return await run_job(
                            settings, flags, index, store, journal=journal, observer=observer
                        )
                return await run_job(
                    settings, flags, index, store, journal=journal, observer=LogObserver()
                )
        finally:
            await store.aclose()
            if journal is not None:
                journal.close()

    report = _run(go)
    if as_json:
        click.echo(report_json(report))
    elif dry_run:
        click.echo(plan_table(report))
    if not quiet:
        click.echo(summary_line(report), err=True)
        for project_error in report.project_errors:
            click.echo(f"error: {project_error.project}: {project_error.error}", err=True)
        for failed in report.files:
            if failed.action == "failed":
                click.echo(f"error: {failed.filename}: {failed.error}", err=True)
    sys.exit(EXIT_FAILURES if report.failed else EXIT_OK)


@main.command(name="ls")
@click.argument("project", required=False)
@click.option(
    "--from",
    "--to",
    "target",
    metavar="TARGET",
    help="The mirror to list (default: oci:./oci-pypi-mirror).",
)
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a non-loopback registry.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@registry_options
def ls(
    project: str | None,
    target: str | None,
    plain_http: bool,
    as_json: bool,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    username: str | None,
    password_stdin: bool,
) -> None:
    """List the mirrored projects, or one PROJECT's versions and files.

    \b
    Examples:
      oci-pypi ls                                # projects in ./oci-pypi-mirror
      oci-pypi ls numpy --from registry.example.com/pypi
    """
    import json

    from oci_pypi_sync.ops.listing import list_projects, list_releases

    access = _target_access(
        target, plain_http, ca_bundle, client_cert, client_key, username, password_stdin
    )
    parsed = access.target

    async def go() -> Any:
        store = access.open()
        try:
            if project is None:
                return await list_projects(store)
            return await list_releases(store, project)
        finally:
            await store.aclose()

    result = _run(go)
    if project is None:
        projects, source = result
        if as_json:
            document = {"source": source, "projects": [asdict(p) for p in projects]}
            click.echo(json.dumps(document, indent=2))
            return
        for listing in projects:
            click.echo(f"{listing.name}\t{listing.versions}")
        if source != "catalog":
            click.echo("note: no catalog in this mirror; listed its repositories", err=True)
        return
    releases = result
    if not releases:
        click.echo(f"error: {project} is not in {parsed}", err=True)
        sys.exit(EXIT_FAILURES)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "version": r.version,
                        "tag": r.tag,
                        "digest": r.digest,
                        "files": [asdict(f) for f in r.files],
                    }
                    for r in releases
                ],
                indent=2,
            )
        )
        return
    for release in releases:
        click.echo(f"{release.version}  (tag {release.tag}, {release.digest})")
        for file in release.files:
            notes = ", ".join(file.platforms) or "any"
            yanked = "  [yanked]" if file.yanked else ""
            click.echo(f"  {file.filename}  {file.size or '?'} B  {notes}{yanked}")


@main.command()
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 256), default=8, show_default=True, help="Blobs at once."
)
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

    \b
    Examples:
      oci-pypi copy oci:./oci-pypi-mirror oci:mirror.tar      # pack for the air gap
      oci-pypi copy oci:mirror.tar registry.internal/pypi     # unpack inside
    """
    import json

    from oci_pypi_sync.ops.copy import copy as run_copy
    from oci_pypi_sync.stores.targets import open_store, parse_target

    _configure_logging(verbose)
    try:
        src_target = parse_target(source, plain_http=plain_http)
        dst_target = parse_target(destination, plain_http=plain_http)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    tls, credentials = _registry_access(
        _registry_hosts(src_target, dst_target),
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

    report = _run(go)
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


@main.command()
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

    _configure_logging(verbose)
    access = _target_access(
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

    report, mended = _run(go)
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


@main.command()
@click.option(
    "--from",
    "--to",
    "target",
    metavar="TARGET",
    help="The mirror to serve (default: oci:./oci-pypi-mirror).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--ttl",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds a project's tag list is cached before the mirror is asked again.",
)
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a non-loopback registry.")
@registry_options
@verbose_option
def serve(
    target: str | None,
    host: str,
    port: int,
    ttl: float,
    plain_http: bool,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    username: str | None,
    password_stdin: bool,
    verbose: int,
) -> None:
    """Serve the mirror as a simple repository (PEP 503 HTML, PEP 691 JSON, PEP 658 metadata).

    \b
    Examples:
      oci-pypi serve                             # ./oci-pypi-mirror on 127.0.0.1:8080
      oci-pypi serve --from registry.example.com/pypi --host 0.0.0.0
      pip install --index-url http://127.0.0.1:8080/simple/ requests
    """
    from oci_pypi_sync.serve.server import serve as run_server

    _configure_logging(max(verbose, 1))
    access = _target_access(
        target, plain_http, ca_bundle, client_cert, client_key, username, password_stdin
    )
    parsed = access.target

    async def go() -> None:
        store = access.open()
        try:
            await run_server(store, host=host, port=port, ttl=ttl)
        finally:
            await store.aclose()

    click.echo(f"serving {parsed} on http://{host}:{port}/simple/", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


@main.command()
@click.argument("host")
@click.option("--username", "-u", help="User name (prompted for when missing).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a non-loopback registry.")
@click.option(
    "--ca-bundle", type=click.Path(exists=True, dir_okay=False), help="CA certificates to trust."
)
@click.option("--client-cert", type=click.Path(exists=True, dir_okay=False))
@click.option("--client-key", type=click.Path(exists=True, dir_okay=False))
def login(
    host: str,
    username: str | None,
    password_stdin: bool,
    plain_http: bool,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
) -> None:
    """Check credentials against registry HOST and save them in the docker config.

    \b
    Examples:
      echo "$TOKEN" | oci-pypi login registry.example.com -u ci --password-stdin
      oci-pypi login 127.0.0.1:5000 -u admin
    """
    from oci_pypi_sync.ops.login import check_login
    from oci_pypi_sync.ops.login import login as save_login
    from oci_pypi_sync.stores.credentials import Credentials
    from oci_pypi_sync.stores.targets import is_loopback_host

    bare = host.removeprefix("https://").removeprefix("http://").rstrip("/")
    plain = plain_http or host.startswith("http://") or is_loopback_host(bare)
    user = username or str(click.prompt("Username"))
    credentials = Credentials(username=user, password=_read_password(password_stdin))
    tls, _ = _registry_access([bare], ca_bundle, client_cert, client_key, None, False)
    _run(lambda: check_login(bare, credentials, plain_http=plain, tls=tls))
    try:
        path = save_login(bare, credentials)
    except OciPypiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FATAL)
    click.echo(f"Login Succeeded (credentials for {bare} saved in {path})")


@main.command()
@click.argument("host")
def logout(host: str) -> None:
    """Remove the saved credentials of registry HOST from the docker config.

    \b
    Examples:
      oci-pypi logout registry.example.com
    """
    from oci_pypi_sync.ops.login import logout as forget

    bare = host.removeprefix("https://").removeprefix("http://").rstrip("/")
    if forget(bare):
        click.echo(f"Removed login credentials for {bare}")
    else:
        click.echo(f"Not logged in to {bare}")


@main.command()
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
