"""``pki``: certificate commands (for now ``pki show``)."""

from __future__ import annotations

from pathlib import Path

import click

from etcdforge.cli.app import _console, main, output_option


@main.group()
def pki() -> None:
    """Certificates: inspect (more to come: check, renew, rotate-ca)."""


@pki.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_option
def pki_show(file: Path, output: str) -> None:
    """Print a certificate like `cfssl certinfo -cert FILE` (-o json) or as a table."""
    from etcdforge.pki import certinfo_json, describe, load_cert

    cert = load_cert(file)
    if output == "json":
        click.echo(certinfo_json(cert))
        return
    from rich.table import Table

    table = Table(show_header=False, title=str(file))
    table.add_column(style="bold")
    table.add_column()
    for k, v in describe(cert):
        table.add_row(k, v)
    _console().print(table)
