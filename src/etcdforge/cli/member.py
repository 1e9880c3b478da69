"""``member add|remove|replace``: one quorum-safe membership change at a time, local mode or real hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from etcdforge.cli.app import (
    StepPrinter,
    confirmer,
    dir_option,
    main,
    make_console,
    no_snapshot_option,
    one_line,
    output_option,
    print_plan,
    run_async,
    workspace_dir,
    yes_option,
)


@main.group()
def member() -> None:
    """Membership changes: add (learner, then promote), remove, replace — one at a time, quorum-safe."""


def _print_member_result(result: Any, dry_run: bool, output: str, done: str) -> None:
    from rich.markup import escape

    err = make_console(stderr=True)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(one_line(warning))}")
    if dry_run:
        print_plan(result.plan, output)
        if result.note:
            make_console().print(result.note)
        return
    if output == "json":
        click.echo(json.dumps(result.plan.to_json(), indent=2))
        return
    make_console().print(result.note or done)


@member.command("add")
@dir_option
@click.argument("name")
@click.option("--address", default=None, help="The member's IP (local mode: the next free 127.0.0.x).")
@click.option("--dns-name", "dns_names", multiple=True, help="Extra DNS names for its certificates.")
@click.option("--ssh-host", default=None, help="Where to connect (default: the address).")
@click.option("--ssh-port", type=int, default=None)
@click.option("--ssh-user", default=None)
@click.option("--ssh-key", default=None, help="Private key file for this host.")
@click.option("--sudo/--no-sudo", default=None)
@click.option("--etcd-bin", default=None, help="Local mode: etcd binary for the new member.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to join and catch up.")
@click.option("--accept-new-host-keys", is_flag=True)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@no_snapshot_option
@output_option
def member_add(
    directory: Path | None,
    name: str,
    address: str | None,
    dns_names: tuple[str, ...],
    ssh_host: str | None,
    ssh_port: int | None,
    ssh_user: str | None,
    ssh_key: str | None,
    sudo: bool | None,
    etcd_bin: str | None,
    timeout: float,
    accept_new_host_keys: bool,
    dry_run: bool,
    no_snapshot: bool,
    output: str,
) -> None:
    """Add NAME as a learner, start it, promote it once in sync; roll back if it never joins."""
    from etcdforge.spec import MemberSsh
    from etcdforge.verbs.member import run as membership

    ssh = None
    if any(v is not None for v in (ssh_host, ssh_port, ssh_user, ssh_key, sudo)):
        ssh = MemberSsh(host=ssh_host, port=ssh_port, user=ssh_user, identity_file=ssh_key, sudo=sudo)
    reporter = None if (dry_run or output == "json") else StepPrinter(make_console())
    result = run_async(
        membership.add(
            workspace_dir(directory), name, address=address, dns_names=dns_names, ssh=ssh, etcd_bin=etcd_bin,
            timeout=timeout, dry_run=dry_run, accept_new_host_keys=accept_new_host_keys, reporter=reporter,
            no_snapshot=no_snapshot,
        )
    )  # fmt: skip
    _print_member_result(result, dry_run, output, f"[bold green]{name} joined[/] as a voting member")


@member.command("remove")
@dir_option
@click.argument("name")
@click.option("--keep-data", is_flag=True, help="Do not wipe the removed member's data dir.")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--accept-new-host-keys", is_flag=True)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@yes_option
@no_snapshot_option
@output_option
def member_remove(
    directory: Path | None,
    name: str,
    keep_data: bool,
    timeout: float,
    accept_new_host_keys: bool,
    dry_run: bool,
    yes: bool,
    no_snapshot: bool,
    output: str,
) -> None:
    """Remove NAME (never below quorum; the leader hands over first); stop it and wipe its data."""
    from etcdforge.verbs.member import run as membership

    reporter = None if (dry_run or output == "json") else StepPrinter(make_console())
    result = run_async(
        membership.remove(
            workspace_dir(directory), name, keep_data=keep_data, timeout=timeout, dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys, reporter=reporter, confirm=confirmer(yes),
            no_snapshot=no_snapshot,
        )
    )  # fmt: skip
    _print_member_result(result, dry_run, output, f"[bold green]{name} removed[/]")


@member.command("replace")
@dir_option
@click.argument("name")
@click.option("--address", default=None, help="A new address (default: the same).")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--accept-new-host-keys", is_flag=True)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@yes_option
@no_snapshot_option
@output_option
def member_replace(
    directory: Path | None, name: str, address: str | None, timeout: float, accept_new_host_keys: bool,
    dry_run: bool, yes: bool, no_snapshot: bool, output: str,
) -> None:  # fmt: skip
    """Replace a dead or corrupted member: remove, wipe, add back as a learner, promote."""
    from etcdforge.verbs.member import run as membership

    reporter = None if (dry_run or output == "json") else StepPrinter(make_console())
    result = run_async(
        membership.replace(
            workspace_dir(directory), name, address=address, timeout=timeout, dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys, reporter=reporter, confirm=confirmer(yes),
            no_snapshot=no_snapshot,
        )
    )  # fmt: skip
    _print_member_result(result, dry_run, output, f"[bold green]{name} replaced[/]")
