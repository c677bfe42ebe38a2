"""``oci-pypi completion``: the shell completion script."""

from __future__ import annotations

import click


@click.command()
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
    from oci_pypi_sync.cli import main

    script = completion_class(main, {}, "oci-pypi", "_OCI_PYPI_COMPLETE").source()
    click.echo(script)
