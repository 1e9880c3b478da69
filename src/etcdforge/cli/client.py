"""``client add|remove|list|show|config``: applications' certificates, their etcd users and roles (least
privilege once ``auth.enabled`` is on), revocation, and ready-made configuration for each consumer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click

from etcdforge.cli.app import (
    StepPrinter,
    dir_option,
    fail,
    main,
    make_console,
    one_line,
    output_option,
    plain,
    print_plan,
    run_async,
    workspace_dir,
)

dry_run_option = click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")


@main.group()
def client() -> None:
    """Application clients: a certificate each (CN = name), an etcd user and role confined to its key
    prefixes once auth is on (`auth.enabled: true` in the spec), revocation, ready-made config."""


def _warn(warnings: Any) -> None:
    err = make_console(stderr=True)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {plain(one_line(warning))}")


def _done(result: Any, dry_run: bool, output: str, done: str) -> None:
    _warn(result.plan.warnings)
    if dry_run or output == "json":
        print_plan(result.plan, output)
        return
    make_console().print(done if result.executed else "nothing to do")


@client.command("add")
@dir_option
@click.argument("name")
@click.option("--prefix", "prefixes", multiple=True, help="A key prefix it may use (repeatable), e.g. /app/.")
@click.option("--read-only", is_flag=True, help="Read its prefixes, never write them.")
@click.option("--root", "is_root", is_flag=True, help="An administrator: etcd's root role (everything).")
@click.option("--expiry", default=None, help="Certificate lifetime (Go duration, e.g. 2160h).")
@dry_run_option
@output_option
def client_add(
    directory: Path | None,
    name: str,
    prefixes: tuple[str, ...],
    read_only: bool,
    is_root: bool,
    expiry: str | None,
    dry_run: bool,
    output: str,
) -> None:
    """Issue NAME's client certificate and make its etcd user (no password: the certificate's CN) with a
    role holding its prefixes; NAME is added to the spec's clients:."""
    from pydantic import ValidationError

    from etcdforge.spec import ClientAccess, ClientSpec
    from etcdforge.verbs.client import run

    if is_root and (prefixes or read_only):
        fail("--root has every right: give either --root or --prefix")
    mode: Literal["read", "readwrite"] = "read" if read_only else "readwrite"
    try:
        access = tuple(ClientAccess(prefix=p, mode=mode) for p in prefixes)
        new = ClientSpec(name=name, root=is_root, access=access, expiry=expiry)
    except ValidationError as exc:
        fail("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))
    d = workspace_dir(directory)
    reporter = None if dry_run else StepPrinter(make_console())
    result = run_async(run.add(d, new, dry_run=dry_run, reporter=reporter))
    _done(result, dry_run, output, f"client {name} added")


@client.command("remove")
@dir_option
@click.argument("name")
@dry_run_option
@output_option
def client_remove(directory: Path | None, name: str, dry_run: bool, output: str) -> None:
    """Revoke NAME: its etcd user is deleted at once (with auth on its certificate is refused from that
    moment, although still valid), its serial is recorded for `pki check`, its files are removed."""
    from etcdforge.verbs.client import run

    d = workspace_dir(directory)
    reporter = None if dry_run else StepPrinter(make_console())
    result = run_async(run.remove(d, name, dry_run=dry_run, reporter=reporter))
    _done(
        result,
        dry_run,
        output,
        f"client {name} removed: its etcd user is gone and its serial recorded as revoked",
    )


def _print_clients(report: Any) -> None:
    from rich.table import Table

    console = make_console()
    if report.auth_enabled is None:
        state = "auth: unknown (the cluster does not answer)"
    else:
        state = "auth: on" if report.auth_enabled else "auth: off (every certificate has full access)"
    console.print(state)
    table = Table(box=None, pad_edge=False)
    for col in ("CLIENT", "KIND", "ACCESS", "CERT EXPIRES", "ETCD USER"):
        table.add_column(col)
    for c in report.clients:
        if c.user_roles is None:
            user = "-" if report.auth_enabled is None else "no user"
        else:
            user = "roles " + (", ".join(c.user_roles) or "(none)")
            if c.in_sync is False:
                user += " (differs from the spec: `apply`/`up` repairs it)"
        table.add_row(c.name, c.kind, "; ".join(c.access), c.not_after or "no certificate", user)
    console.print(table)
    if report.revoked:
        console.print("revoked: " + ", ".join(f"{r['name']} (serial {r['serial']})" for r in report.revoked))


@client.command("list")
@dir_option
@output_option
def client_list(directory: Path | None, output: str) -> None:
    """Every client certificate: what it may access, when it expires, its etcd user."""
    from etcdforge.verbs.client import run

    report = run_async(run.report(workspace_dir(directory)))
    if output == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    _print_clients(report)


@client.command("show")
@dir_option
@click.argument("name")
@output_option
def client_show(directory: Path | None, name: str, output: str) -> None:
    """One client: certificate serial and expiry, its roles and key ranges in the spec and in etcd."""
    from etcdforge.verbs.client import run

    report = run_async(run.report(workspace_dir(directory), only=name))
    info = report.clients[0]
    if output == "json":
        click.echo(json.dumps({**info.to_json(), "auth_enabled": report.auth_enabled}, indent=2))
        return
    console = make_console()
    rows = [
        ("client", info.name),
        ("kind", info.kind),
        ("access", "; ".join(info.access)),
        ("certificate", f"serial {info.serial}, expires {info.not_after}" if info.serial else "not issued"),
        (
            "auth",
            {None: "unknown (the cluster does not answer)", True: "on", False: "off"}[report.auth_enabled],
        ),
        (
            "etcd user",
            "none" if info.user_roles is None else "roles " + (", ".join(info.user_roles) or "(none)"),
        ),
    ]
    if info.in_sync is not None:
        rows.append(
            (
                "in etcd",
                "as the spec says" if info.in_sync else "differs from the spec: `apply`/`up` repairs it",
            )
        )
    for key, value in rows:
        console.print(f"{key:<12} {plain(value)}", markup=False)


@client.command("config")
@dir_option
@click.argument("name")
@click.option(
    "--for",
    "consumer",
    type=click.Choice(["etcdctl", "env", "kube-apiserver", "patroni", "apisix", "coredns", "python"]),
    default="etcdctl",
    show_default=True,
    help="The consumer whose configuration to print.",
)
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the certificate, key (0600) and CA into this directory; the output names those copies.",
)
@click.option("--dry-run", is_flag=True, help="With --bundle: show the plan; write nothing.")
def client_config(
    directory: Path | None, name: str, consumer: str, bundle: Path | None, dry_run: bool
) -> None:
    """Print what CONSUMER needs to connect as NAME: flags, environment or a YAML block with the paths."""
    from etcdforge.verbs.client import run

    if dry_run and bundle is None:
        fail("--dry-run goes with --bundle (without it nothing is written)")
    reporter = StepPrinter(make_console(stderr=True)) if bundle is not None and not dry_run else None
    text, plan = run_async(
        run.config(
            workspace_dir(directory), name, consumer, bundle=bundle, reporter=reporter, dry_run=dry_run
        )
    )
    if dry_run and plan is not None:
        print_plan(plan, "table")
        return
    click.echo(text, nl=False)
