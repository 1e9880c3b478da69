"""``pki``: certificate commands: ``show``, ``check`` (monitoring exit codes), ``export-cfssl``, ``renew``,
``rotate-ca``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import click

from etcdforge.cli.app import (
    StepPrinter,
    dir_option,
    fail,
    main,
    make_console,
    no_snapshot_option,
    output_option,
    plain,
    run_async,
    workspace_dir,
)

#: ``pki check`` exit status when the check itself could not run (Nagios UNKNOWN)
UNKNOWN_EXIT = 3


@main.group()
def pki() -> None:
    """Certificates: inspect, check, renew, rotate the CA, cfssl import and export."""


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
        table.add_row(plain(k), plain(v))
    make_console().print(table)


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
    from etcdforge.pki.check import Thresholds, check_pki, exit_code, worst
    from etcdforge.verbs.pki_check import gather_hosts, gather_local
    from etcdforge.workspace import load_workspace

    try:
        ws, spec = load_workspace(workspace_dir(directory))
        if on_hosts:
            from etcdforge.runtime.factory import placement

            if placement(spec, ws).members_here:
                raise WorkspaceError(
                    f"--hosts needs a hosts-mode workspace; {ws.root} is a local one",
                    hint="drop --hosts: local members are always checked",
                )
            facts = run_async(gather_hosts(spec, ws))
        else:
            facts = gather_local(spec, ws)
    except EtcdforgeError as exc:
        if ctx.obj and ctx.obj.get("debug"):
            raise
        # 1 and 2 mean "warning" and "broken" to a monitor; a check that could not run is UNKNOWN.
        fail(str(exc), UNKNOWN_EXIT)
    thresholds = Thresholds(warn_days=warn_days, warn_group_readable=not group_readable_ok)
    findings = check_pki(facts, datetime.now(UTC), thresholds)
    code = exit_code(findings)
    if output == "json":
        doc = {"status": worst(findings), "exit_code": code, "findings": [f.to_json() for f in findings]}
        click.echo(json.dumps(doc, indent=2))
    else:
        from rich.table import Table

        style = {"ok": "green", "warning": "yellow", "broken": "bold red"}
        table = Table(title=f"PKI check of {ws.root}")
        for col in ("subject", "check", "status", "message"):
            table.add_column(col)
        for f in findings:
            table.add_row(
                plain(f.subject), f.check, f"[{style[f.severity]}]{f.severity}[/]", plain(f.message)
            )
        console = make_console()
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
    -profile server etcd1-server-csr.json | cfssljson -bare etcd1-server`. Peers have a CA of their own
    (peer-ca-csr.json): `cfssl gencert -ca pki/peer-ca.pem -ca-key pki/peer-ca-key.pem -config
    ca-config.json -profile peer etcd1-peer-csr.json | cfssljson -bare etcd1-peer`.
    """
    from etcdforge import certs
    from etcdforge.pki.export import cfssl_files, write_cfssl_files
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))
    settings = certs.ca_settings(spec, base_dir=ws.root)
    peer_ca = certs.peer_ca_settings(settings) if ws.separate_peers else None
    files = cfssl_files(settings, certs.cert_requests(spec, base_dir=ws.root), peer_ca)
    target = out_dir if out_dir is not None else ws.root / "cfssl"
    for path in write_cfssl_files(files, target):
        click.echo(str(path))


def _window(text: str) -> Any:
    """``--within``: days (``30d``) or a Go duration (``720h``)."""
    from datetime import timedelta

    from etcdforge.durations import parse_go_duration
    from etcdforge.errors import EtcdforgeError

    stripped = text.strip()
    try:
        if stripped.endswith("d") and stripped[:-1].isdigit():
            return timedelta(days=int(stripped[:-1]))
        return parse_go_duration(stripped)
    except EtcdforgeError as exc:
        raise click.BadParameter(f"{text!r}: use days like 30d or a duration like 720h ({exc})") from None


def _print_renew(result: Any, output: str) -> None:
    if output == "json":
        import json

        doc = {
            "executed": result.executed,
            "certificates": [
                {
                    "name": c.name,
                    "renewed": c.renewed,
                    "reason": c.reason,
                    "old_serial": f"{c.old_serial:x}" if c.old_serial is not None else None,
                    "new_serial": f"{c.new_serial:x}" if c.new_serial is not None else None,
                    "not_after": c.not_after.isoformat() if c.not_after else None,
                }
                for c in result.certs
            ],
            "plan": result.plan.to_json(),
        }
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    table = Table(title="pki renew" + ("" if result.executed else " (plan)"))
    for col in ("certificate", "action", "serial", "valid until", "why"):
        table.add_column(col)
    for c in result.certs:
        serial = f"{c.old_serial:x}" if c.old_serial is not None else "-"
        if c.new_serial is not None:
            serial = f"{serial} → {c.new_serial:x}"
        until = f"{c.not_after:%Y-%m-%d}" if c.not_after else "-"
        action = "[green]renewed[/]" if c.renewed and result.executed else "renew" if c.renewed else "keep"
        table.add_row(c.name, action, serial, until, plain(c.reason))
    console = make_console()
    console.print(table)
    if not result.renewed and not result.plan.steps:
        console.print("nothing to renew")


@pki.command("renew")
@dir_option
@click.option("--member", "members", multiple=True, help="Renew this member's server and peer certificates.")
@click.option("--client", "clients", multiple=True, help="Renew this client certificate (e.g. admin).")
@click.option(
    "--within",
    default=None,
    help="Renew what expires within this window: 30d or 720h (default: the spec's pki.renew_before).",
)
@click.option("--force", is_flag=True, help="Renew the selected certificates even if they are not due.")
@click.option("--new-key", "new_keys", is_flag=True, help="Generate new private keys (default: keep them).")
@click.option("--yes", "-y", is_flag=True, help="Renew without asking.")
@click.option("--dry-run", is_flag=True, help="Show what would be renewed and installed; change nothing.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record unknown host keys (never changed ones).")
@output_option
def pki_renew(
    directory: Path | None,
    members: tuple[str, ...],
    clients: tuple[str, ...],
    within: str | None,
    force: bool,
    new_keys: bool,
    yes: bool,
    dry_run: bool,
    accept_new_host_keys: bool,
    output: str,
) -> None:
    """Reissue leaf certificates from the same CA and install them without restarting etcd.

    etcd reads its certificate and key on every new handshake, so members switch over at once; each
    running member is then checked with a new handshake that must present the new serial. Renewing the
    admin client certificate renews what `etcdforge env` points at. Without --member/--client every
    certificate is considered; only those due (or all selected, with --force) are renewed.
    """
    import sys

    from etcdforge.spec import expiry
    from etcdforge.verbs.renew import run as renew_op
    from etcdforge.workspace import load_workspace

    d = workspace_dir(directory)
    _, spec = load_workspace(d)
    window = _window(within) if within is not None else expiry(spec.pki.renew_before)
    kwargs: dict[str, Any] = dict(
        members=members, clients=clients, within=window, force=force, new_keys=new_keys
    )
    if output == "json" and not (yes or dry_run):
        fail("-o json prints one document: pass --dry-run (the plan) or --yes (the result)")
    if dry_run or not yes:
        preview = run_async(
            renew_op.renew(d, dry_run=True, accept_new_host_keys=accept_new_host_keys, **kwargs)
        )
        _print_renew(preview, output)
        if dry_run or not preview.plan.steps:
            return
        if not sys.stdin.isatty():
            fail("pki renew changes certificates on the members; pass --yes to confirm")
        click.confirm("Renew these certificates?", abort=True)
    # with -o json, progress goes to stderr so stdout holds exactly the one JSON document
    progress = StepPrinter(make_console(stderr=output == "json"))
    result = run_async(
        renew_op.renew(d, accept_new_host_keys=accept_new_host_keys, reporter=progress, **kwargs)
    )
    _print_renew(result, output)


_PHASE_HELP = {
    "trust-both": "members and clients trust the old and the new CA (rolling restart)",
    "reissue": "every certificate is reissued from the new CA and installed without restart",
    "trust-new": "members trust only the new CA (rolling restart); old-CA certificates are refused",
    "finish": "the old CA is archived under pki/retired/, the rotation files are removed",
}
_PEER_PHASE_HELP = {
    "trust-both": "peer listeners trust the old and the new peers' CA (rolling restart)",
    "reissue": "every peer certificate is reissued from the new peers' CA and installed without restart",
    "trust-new": "peer listeners trust only the new peers' CA (rolling restart); nothing else is a peer",
    "finish": "a replaced peers' CA is archived under pki/retired/, the rotation files are removed",
}


@pki.command("rotate-ca")
@dir_option
@click.option(
    "--stop-after",
    type=click.Choice(["trust-both", "reissue", "trust-new"]),
    default=None,
    help="Stop after this phase (e.g. to give your own clients the bundle); run again to resume.",
)
@click.option(
    "--peer",
    is_flag=True,
    help="Rotate the peers' CA instead (in a workspace without one: give peers a CA of their own).",
)
@click.option("--new-key", "new_keys", is_flag=True, help="Also give every leaf a new private key.")
@click.option("--yes", "-y", is_flag=True, help="Rotate without asking.")
@click.option("--dry-run", is_flag=True, help="Show the phases still to run; change nothing.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds per health gate.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record unknown host keys (never changed ones).")
@no_snapshot_option
def pki_rotate_ca(
    directory: Path | None,
    stop_after: str | None,
    peer: bool,
    new_keys: bool,
    yes: bool,
    dry_run: bool,
    timeout: float,
    accept_new_host_keys: bool,
    no_snapshot: bool,
) -> None:
    """Replace the CA without downtime, in phases that survive interruption (run it again to resume).

    \b
    1 trust-both  members and clients trust old + new CA (rolling restart, one member at a time)
    2 reissue     every certificate is reissued from the new CA, installed hot (no restart)
    3 trust-new   members trust only the new CA (rolling restart); old-CA certificates are refused
    4 finish      the old CA is archived in pki/retired/

    Clients of your own: after phase 1, give them DIR/pki/trust.pem as their CA file; after phase 2,
    their new certificates (pki.clients); before phase 3 both must be in place.

    --peer rotates the peers' CA the same way (only peer listeners and peer certificates change; clients
    see nothing). In a workspace made before peers had a CA of their own, it gives them one: afterwards
    the peer listeners accept no client or server certificate.
    """
    import sys

    from etcdforge.pki.rotation import Phase
    from etcdforge.verbs.rotate_ca import run as op

    d = workspace_dir(directory)
    console = make_console()
    until = cast("Phase | None", stop_after)
    if dry_run or not yes:
        preview = run_async(
            op.rotate_ca(
                d,
                peer=peer,
                dry_run=True,
                stop_after=until,
                accept_new_host_keys=accept_new_host_keys,
                no_snapshot=no_snapshot,
            )
        )
        if preview.note:
            console.print(plain(preview.note))
        phases = _PEER_PHASE_HELP if peer else _PHASE_HELP
        for run in preview.runs:
            console.print(f"[bold]phase {run.phase}[/]: {phases[run.phase]}")
            for line in run.plan.lines():
                console.print("  " + line, markup=False)
        if dry_run or not preview.runs:
            return
        if not sys.stdin.isatty():
            fail("rotate-ca restarts members one at a time; pass --yes to confirm")
        click.confirm("Rotate the peers' CA?" if peer else "Rotate the CA?", abort=True)

    def announce(phase: str) -> None:
        console.print(f"[bold]phase {phase}[/]: {(_PEER_PHASE_HELP if peer else _PHASE_HELP)[phase]}")

    result = run_async(
        op.rotate_ca(
            d,
            peer=peer,
            stop_after=until,
            new_keys=new_keys,
            timeout=timeout,
            accept_new_host_keys=accept_new_host_keys,
            reporter=StepPrinter(console),
            on_phase=announce,
            no_snapshot=no_snapshot,
        )
    )
    if result.note:
        console.print(plain(result.note))
    elif result.state is None and peer:
        console.print(
            "[bold green]peers' CA rotated[/]: every peer listener trusts only the peers' CA, and every "
            "member presents a peer certificate it signed"
        )
    elif result.state is None:
        console.print("[bold green]CA rotated[/]: every member trusts and presents only the new CA")
    else:
        console.print(
            f"stopped before phase [bold]{result.state.phase}[/]; "
            f"run `etcdforge pki rotate-ca{' --peer' if peer else ''}` again to go on"
        )
