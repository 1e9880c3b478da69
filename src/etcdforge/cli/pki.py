"""``pki``: certificate commands: ``show``, ``check`` (monitoring exit codes), ``export-cfssl``."""

from __future__ import annotations

from pathlib import Path

import click

from etcdforge.cli.app import _console, _dir, _fail, _run, dir_option, main, output_option

#: ``pki check`` exit status when the check itself could not run (Nagios UNKNOWN)
UNKNOWN_EXIT = 3


@main.group()
def pki() -> None:
    """Certificates: inspect, check, export for cfssl."""


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


@pki.command("check")
@dir_option
@output_option
@click.option(
    "--warn-days",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Warn about certificates that expire within this many days.",
)
@click.option(
    "--group-readable-ok",
    is_flag=True,
    help="Accept keys readable by their group (0640) instead of warning.",
)
@click.option(
    "--hosts",
    "on_hosts",
    is_flag=True,
    help="Hosts mode: also read every member's installed files over SSH.",
)
@click.pass_context
def pki_check(
    ctx: click.Context,
    directory: Path | None,
    output: str,
    warn_days: int,
    group_readable_ok: bool,
    on_hosts: bool,
) -> None:
    """Check every certificate and key: expiry, chain, key match, usages, SANs, modes, CA key placement.

    Exit status for monitoring (Nagios-style): 0 all fine, 1 something in the warning window (expires
    within --warn-days, group-readable key), 2 something expired or broken, 3 the check could not run
    (no workspace, SSH failure).
    """
    import json
    from datetime import UTC, datetime

    from etcdforge.errors import EtcdforgeError, WorkspaceError
    from etcdforge.operations.pki_check import gather_hosts, gather_local
    from etcdforge.pki.check import Thresholds, check_pki, exit_code, worst
    from etcdforge.workspace import load_workspace

    try:
        ws, spec = load_workspace(_dir(directory))
        if on_hosts:
            if spec.mode != "hosts":
                raise WorkspaceError(
                    f"--hosts needs a hosts-mode workspace; {ws.root} is in {spec.mode} mode",
                    hint="drop --hosts: local members are always checked",
                )
            facts = _run(gather_hosts(spec, ws))
        else:
            facts = gather_local(spec, ws)
    except EtcdforgeError as exc:
        if ctx.obj and ctx.obj.get("debug"):
            raise
        # 1 and 2 mean "warning" and "broken" to a monitor; a check that could not run is UNKNOWN.
        _fail(str(exc), UNKNOWN_EXIT)
    thresholds = Thresholds(warn_days=warn_days, warn_group_readable=not group_readable_ok)
    findings = check_pki(facts, datetime.now(UTC), thresholds)
    code = exit_code(findings)
    if output == "json":
        doc = {"status": worst(findings), "exit_code": code, "findings": [f.to_json() for f in findings]}
        click.echo(json.dumps(doc, indent=2))
    else:
        from rich.markup import escape
        from rich.table import Table

        style = {"ok": "green", "warning": "yellow", "broken": "bold red"}
        table = Table(title=f"PKI check of {ws.root}")
        for col in ("subject", "check", "status", "message"):
            table.add_column(col)
        for f in findings:
            table.add_row(f.subject, f.check, f"[{style[f.severity]}]{f.severity}[/]", escape(f.message))
        console = _console()
        console.print(table)
        counts = {sev: sum(1 for f in findings if f.severity == sev) for sev in style}
        console.print(
            f"[{style[worst(findings)]}]{worst(findings)}[/]: {counts['ok']} ok, "
            f"{counts['warning']} warning(s), {counts['broken']} broken"
        )
    ctx.exit(code)


@pki.command("export-cfssl")
@dir_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the JSON files (default: DIR/cfssl).",
)
def pki_export_cfssl(directory: Path | None, out_dir: Path | None) -> None:
    """Write ca-config.json, ca-csr.json and one NAME-csr.json per certificate, so cfssl can reproduce them.

    Then e.g. `cfssl gencert -ca pki/ca.pem -ca-key pki/ca-key.pem -config ca-config.json
    -profile server etcd1-server-csr.json | cfssljson -bare etcd1-server`.
    """
    from etcdforge import certs
    from etcdforge.pki.export import cfssl_files, write_cfssl_files
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(_dir(directory))
    files = cfssl_files(
        certs.ca_settings(spec, base_dir=ws.root), certs.cert_requests(spec, base_dir=ws.root)
    )
    target = out_dir if out_dir is not None else ws.root / "cfssl"
    for path in write_cfssl_files(files, target):
        click.echo(str(path))
