"""What every command shares: logging, exit codes, error handling, registry flags."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from oci_pypi_sync.errors import OciPypiError, UsageError, unexpected_error
from oci_pypi_sync.redact import RedactingFilter

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

INTERRUPTED = (
    "interrupted; what was finished is kept and partial downloads are removed "
    "(run the same command again to go on)"
)

T = TypeVar("T")

log = logging.getLogger("oci_pypi_sync")


def configure_logging(verbosity: int) -> None:
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
    # every record, ours and the HTTP client's, loses its secrets before it is written
    handler.addFilter(RedactingFilter())
    root = logging.getLogger("oci_pypi_sync")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def run(
    coro_factory: Callable[[], Coroutine[Any, Any, T]],
    *,
    on_failure: Callable[[BaseException], None] | None = None,
    interrupt_stops: bool = False,
) -> T:
    """Run a coroutine; an error that ends it becomes one ``error:`` line and an exit code.

    ``on_failure`` hears the error first (a command that got far enough
    prints its partial report there). With ``interrupt_stops``, Ctrl-C is
    the way the command ends (a server): exit 0, nothing said.
    """
    try:
        with asyncio.Runner() as runner:
            runner.get_loop().set_exception_handler(_quiet_loop_errors)
            return runner.run(coro_factory())
    except (Exception, KeyboardInterrupt) as exc:
        if interrupt_stops and isinstance(exc, KeyboardInterrupt):
            sys.exit(EXIT_OK)
        if on_failure is not None:
            on_failure(exc)
        fail(exc)


def _quiet_loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What the event loop reports on its own (a task nobody awaited, a generator closed
    late) comes after the error that caused it: logged at -vv, never a traceback on stderr."""
    log.debug("event loop: %s", context.get("message"), exc_info=context.get("exception"))


def fail(exc: BaseException) -> NoReturn:
    """Print the one ``error:`` line for ``exc`` and exit with its code; never a traceback.

    Ours name the thing at fault; an :class:`OSError` names its file; anything
    else is said in one line, its traceback logged at ``-vv`` only.
    """
    if isinstance(exc, KeyboardInterrupt):
        click.echo(f"error: {INTERRUPTED}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(exc, UsageError):
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if isinstance(exc, OciPypiError):
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FATAL)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(EXIT_FATAL)
    log.debug("unexpected error", exc_info=exc)
    click.echo(f"error: {unexpected_error(exc)}", err=True)
    sys.exit(EXIT_FATAL)


_SUGGESTION = re.compile(r"\.?\s+\(?Did you mean([^)]*?)\)?$")


def usage_error_line(exc: click.UsageError) -> str:
    """Click's usage error as one ``error:`` line: what is wrong, and where the help is.

    Click's own text names the thing at fault (an option, an argument, a
    value); its first letter is lowered to read as the rest of our lines,
    and the command's ``--help`` is named for what to do.
    """
    message = " ".join(exc.format_message().split())
    # "... '--fro'. (Did you mean one of: '--from', '--to'?)" (or without the brackets)
    message = _SUGGESTION.sub(r" (did you mean\1)", message).rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    where = exc.ctx.command_path if exc.ctx is not None else "oci-pypi"
    return f"error: {message}; see '{where} --help'"


class Commands(click.Group):
    """The command group: whatever a command lets escape still ends as one ``error:`` line.

    Click's own usage errors too (an unknown option, a missing argument, a
    bad value): :meth:`main` prints them as one ``error:`` line instead of
    click's usage block, exit code 2, for every command.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # no command at all: the help says what there is
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            click.echo(usage_error_line(exc), err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:  # Ctrl-C (or end of input) at a prompt
            click.echo(err=True)  # after the ^C the terminal shows
            click.echo("error: interrupted at a prompt; nothing was changed", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(result if isinstance(result, int) else EXIT_OK)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            name = ctx.invoked_subcommand
            command = self.get_command(ctx, name) if exc.ctx is None and name else None
            if command is not None:  # an option's own error: say whose help to read
                exc.ctx = click.Context(command, info_name=name, parent=ctx)
            raise
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            fail(exc)


verbose_option = click.option(
    "-v", "--verbose", count=True, help="Say more (-vv for HTTP requests)."
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print errors only.")


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


def registry_access(
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
        password = read_password(password_stdin)
        explicit = dict.fromkeys(hosts, Credentials(username=username, password=password))
        credentials = CredentialStore(explicit=explicit)
    return tls, credentials


@dataclass(frozen=True)
class TargetAccess:
    """A parsed target with the TLS options and credentials its commands open it with."""

    target: Any
    tls: Any
    credentials: Any

    def open(self, *, create: bool = False, **options: Any) -> Any:
        from oci_pypi_sync.stores.targets import open_store

        return open_store(
            self.target, create=create, tls=self.tls, credentials=self.credentials, **options
        )


def target_access(
    target: str | None,
    plain_http: bool,
    ca_bundle: str | None,
    client_cert: str | None,
    client_key: str | None,
    username: str | None,
    password_stdin: bool,
) -> TargetAccess:
    """Parse ``--to``/``--from`` and the registry flags; usage errors become click's."""
    from oci_pypi_sync.stores.targets import parse_target

    try:
        parsed = parse_target(target, plain_http=plain_http)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    tls, credentials = registry_access(
        registry_hosts(parsed), ca_bundle, client_cert, client_key, username, password_stdin
    )
    return TargetAccess(parsed, tls, credentials)


def require_mirror(access: TargetAccess, given: str | None, how: str) -> None:
    """A command that reads the default layout, where there is none: one line naming ``how``
    to name a mirror (exit 3), rather than a layout error about a path never typed."""
    from oci_pypi_sync.stores.layout import LAYOUT_FILE
    from oci_pypi_sync.stores.targets import LayoutTarget

    parsed = access.target
    if given is not None or not isinstance(parsed, LayoutTarget):
        return
    if (parsed.path / LAYOUT_FILE).is_file():
        return
    click.echo(
        f"error: there is no mirror in ./{parsed.path} (the default); name one with "
        f"{how} (oci:PATH for a layout, HOST[:PORT]/PREFIX for a registry)",
        err=True,
    )
    sys.exit(EXIT_FATAL)


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.read().rstrip("\r\n")
    return prompt("Password", hide_input=True)


def prompt(text: str, *, hide_input: bool = False) -> str:
    """Ask on the terminal; without one, a usage error naming the options that answer."""
    if sys.stdin is None or not sys.stdin.isatty():
        raise click.UsageError(
            f"{text.lower()} needed and stdin is not a terminal to ask on; "
            "give -u USER and --password-stdin"
        )
    return str(click.prompt(text, hide_input=hide_input))


def registry_hosts(*targets: Any) -> list[str]:
    from oci_pypi_sync.stores.targets import RegistryTarget

    return [t.host for t in targets if isinstance(t, RegistryTarget)]
