"""``oci-pypi serve``: the mirror as a simple repository."""

from __future__ import annotations

import sys

import click

from oci_pypi_sync.cli.common import (
    EXIT_FATAL,
    configure_logging,
    registry_options,
    require_mirror,
    run,
    target_access,
    verbose_option,
)


@click.command()
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
    from oci_pypi_sync.serve.server import listen
    from oci_pypi_sync.serve.server import serve as run_server

    configure_logging(max(verbose, 1))
    access = target_access(
        target, plain_http, ca_bundle, client_cert, client_key, username, password_stdin
    )
    parsed = access.target
    require_mirror(access, target, "--from TARGET")
    try:
        sock = listen(host, port)
    except OSError as exc:
        click.echo(
            f"error: cannot listen on {host} port {port}: {exc.strerror or exc}; "
            "choose another --port or --host",
            err=True,
        )
        sys.exit(EXIT_FATAL)

    async def go() -> None:
        store = access.open()
        try:
            await run_server(store, ttl=ttl, sockets=[sock])
        finally:
            await store.aclose()

    shown = f"[{host}]" if ":" in host else host
    bound = sock.getsockname()[1]  # the port listened on (a free one for --port 0)
    click.echo(f"serving {parsed} on http://{shown}:{bound}/simple/", err=True)
    run(go, interrupt_stops=True)
