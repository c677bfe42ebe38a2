"""``oci-pypi login`` and ``logout``: registry credentials in the docker config."""

from __future__ import annotations

import sys

import click

from oci_pypi_sync.cli.common import (
    EXIT_FATAL,
    prompt,
    read_password,
    registry_access,
    run,
)
from oci_pypi_sync.errors import OciPypiError, UsageError


@click.command()
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
    from oci_pypi_sync.stores.targets import is_loopback_host, refuse_credentials

    try:
        refuse_credentials(host, "registry")
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    bare = host.removeprefix("https://").removeprefix("http://").rstrip("/")
    plain = plain_http or host.startswith("http://") or is_loopback_host(bare)
    user = username or prompt("Username")
    credentials = Credentials(username=user, password=read_password(password_stdin))
    tls, _ = registry_access([bare], ca_bundle, client_cert, client_key, None, False)
    run(lambda: check_login(bare, credentials, plain_http=plain, tls=tls))
    try:
        path = save_login(bare, credentials)
    except OciPypiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FATAL)
    click.echo(f"Login Succeeded (credentials for {bare} saved in {path})")


@click.command()
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
