"""Taking over what was built by hand: ``pki import-cfssl`` (a cfssl PKI) and ``adopt`` (a running cluster)."""

from __future__ import annotations

from pathlib import Path

import click

from etcdforge.cli.app import _console, _dir, dir_option
from etcdforge.cli.pki import pki


@pki.command("import-cfssl")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@dir_option
def pki_import_cfssl(source: Path, directory: Path | None) -> None:
    """Import a cfssl PKI directory (the guide's etcd-ca.pem, etcd-ca-key.pem, JSON configs).

    The CA goes into DIR/pki (ca.pem, ca-key.pem 0600), the JSON into DIR/pki/cfssl/, and cluster.yaml's
    pki section (if there is one) points at them; the guide's leaf certificates are checked, not reused.
    """
    from rich.markup import escape

    from etcdforge.operations.pki_import import import_cfssl

    d = _dir(directory)
    result = import_cfssl(d, source)
    console = _console()
    for line in result.imported.report():
        style = "yellow" if line.startswith("warning:") else ""
        console.print(f"[{style}]{escape(line)}[/]" if style else escape(line))
    if result.spec_updated:
        console.print(f"updated {d / 'cluster.yaml'}: pki now uses the imported CA and cfssl configs")
    else:
        console.print(
            f"imported into {d / 'pki'}; next: `etcdforge init --dir {d} …` (or `etcdforge adopt`), "
            f"then run `etcdforge pki import-cfssl {source} --dir {d}` again to point cluster.yaml at it"
        )
