"""``oci-pypi ls``: what a mirror holds."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import click

from oci_pypi_sync.cli.common import (
    EXIT_FAILURES,
    registry_options,
    require_mirror,
    run,
    target_access,
)


@click.command(name="ls")
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

    access = target_access(
        target, plain_http, ca_bundle, client_cert, client_key, username, password_stdin
    )
    parsed = access.target
    require_mirror(access, target, "--from TARGET")

    async def go() -> Any:
        store = access.open()
        try:
            if project is None:
                return await list_projects(store)
            return await list_releases(store, project)
        finally:
            await store.aclose()

    result = run(go)
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
