"""The ``oci-pypi`` command line: parse arguments, call the library, render the result.

Exit codes: 0 when everything asked for is mirrored, 1 when the run
finished but some files or projects failed (or a requirement matched no
file), 2 for usage errors (bad options, an invalid requirement or target),
3 when the run could not proceed at all (index or registry unreachable,
credentials refused, the target refusing writes), 130 when interrupted.
"""

from __future__ import annotations

import click

from oci_pypi_sync import __version__
from oci_pypi_sync.cli import (
    completion as completion_command,
)
from oci_pypi_sync.cli import (
    copy as copy_command,
)
from oci_pypi_sync.cli import (
    login as login_command,
)
from oci_pypi_sync.cli import (
    ls as ls_command,
)
from oci_pypi_sync.cli import (
    projects as projects_command,
)
from oci_pypi_sync.cli import (
    serve as serve_command,
)
from oci_pypi_sync.cli import (
    status as status_command,
)
from oci_pypi_sync.cli import (
    sync as sync_command,
)
from oci_pypi_sync.cli import (
    verify as verify_command,
)
from oci_pypi_sync.cli.common import Commands


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
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


main.add_command(completion_command.completion)
main.add_command(sync_command.sync)
main.add_command(ls_command.ls)
main.add_command(copy_command.copy)
main.add_command(verify_command.verify)
main.add_command(serve_command.serve)
main.add_command(login_command.login)
main.add_command(status_command.status)
main.add_command(projects_command.projects)
main.add_command(login_command.logout)
