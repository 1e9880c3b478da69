"""Real hosts over SSH: ``init`` writes a spec, ``plan`` previews the changes, ``apply`` makes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from etcdforge.cli.app import (
    StepPrinter,
    dir_option,
    fail,
    hosts_options,
    main,
    make_console,
    output_option,
    plain,
    run_async,
    workspace_dir,
)

if TYPE_CHECKING:
    from etcdforge.plan import Plan


def _print_host_plan(plan: Plan) -> None:
    """The plan grouped by host, with diffs of changed text files (secrets are never shown)."""
    from rich.markup import escape

    from etcdforge.plan import PutFile

    console = make_console()
    if plan.empty:
        console.print("[green]no changes[/]: the cluster matches the spec")
        return
    by_host: dict[str, list[Any]] = {}
    for step in plan.steps:
        by_host.setdefault(step.host, []).append(step)
    for host, steps in by_host.items():
        console.print(f"[bold]{escape(host)}[/]")
        for step in steps:
            console.print(f"  [yellow]~[/] {escape(step.id)}  [dim]{escape(step.reason)}[/]")
            action = step.action
            if isinstance(action, PutFile) and action.diff and not action.secret:
                for line in action.diff.splitlines():
                    style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
                    console.print(f"      [{style}]{escape(line)}[/]")
    console.print(f"{len(plan.steps)} change(s)")


@main.command("plan")
@dir_option
@click.option("--accept-new-host-keys", is_flag=True, help="Record unknown host keys (never changed ones).")
@click.option("--force", is_flag=True, help="Go on although a member's data dir is unknown to the cluster.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0: no changes, 2: changes, 1: error.")
@output_option
def plan_cmd(
    directory: Path | None, accept_new_host_keys: bool, force: bool, detailed_exitcode: bool, output: str
) -> None:
    """Show what `apply` would change on the hosts; changes nothing."""
    from etcdforge.verbs.apply import run as deploy

    plan = run_async(
        deploy.make_plan(workspace_dir(directory), accept_new_host_keys=accept_new_host_keys, force=force)
    )
    for warning in plan.warnings:
        make_console(stderr=True).print(f"[yellow]warning:[/] {plain(warning)}")
    if output == "json":
        click.echo(json.dumps(plan.to_json(), indent=2))
    else:
        _print_host_plan(plan)
    if detailed_exitcode and not plan.empty:
        sys.exit(2)


@main.command()
@dir_option
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record unknown host keys (never changed ones).")
@click.option("--force", is_flag=True, help="Go on although a member's data dir is unknown to the cluster.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds per health gate.")
def apply(directory: Path | None, yes: bool, accept_new_host_keys: bool, force: bool, timeout: float) -> None:
    """Converge the hosts to the spec: prepare, install, start or roll-restart, health-gated."""
    from etcdforge.verbs.apply import run as deploy

    d = workspace_dir(directory)
    preview = None
    if not yes:
        preview = run_async(
            deploy.make_plan(d, accept_new_host_keys=accept_new_host_keys, force=force, timeout=timeout)
        )
        _print_host_plan(preview)
        if preview.empty:
            return
        if not sys.stdin.isatty():
            fail("apply changes hosts; pass --yes to confirm")
        click.confirm("Apply these changes?", abort=True)
        accept_new_host_keys = False  # recorded by the preview already
    console = make_console()
    plan = run_async(
        deploy.apply(
            d,
            accept_new_host_keys=accept_new_host_keys,
            force=force,
            timeout=timeout,
            reporter=StepPrinter(console),
            confirmed=preview,
        )
    )
    if plan.empty:
        console.print("[green]no changes[/]: the cluster matches the spec")
    else:
        console.print(f"[bold green]applied {len(plan.steps)} change(s)[/]; cluster healthy")


@main.command()
@dir_option
@hosts_options
@click.option(
    "--etcd-binary",
    default="system",
    show_default=True,
    help="system (already on the hosts), a local PATH to upload, or a VERSION to download.",
)
@click.option("--etcd-sha256", default=None, help="SHA-256 of the release tarball (with a VERSION).")
@click.option("--force", is_flag=True, help="Overwrite an existing cluster.yaml.")
def init(
    directory: Path | None,
    members: tuple[str, ...],
    name: str | None,
    ssh_user: str,
    ssh_port: int,
    ssh_key: Path | None,
    known_hosts: Path | None,
    sudo: bool,
    etcd_binary: str,
    etcd_sha256: str | None,
    force: bool,
) -> None:
    """Write a commented cluster.yaml for your own hosts: --member etcd1=192.168.10.80 …"""
    from etcdforge.verbs import init as init_op

    d = workspace_dir(directory)
    path = init_op.write_spec(
        d,
        members=members,
        name=name,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        sudo=sudo,
        etcd_binary=etcd_binary,
        etcd_sha256=etcd_sha256,
        force=force,
    )
    make_console().print(f"wrote {path}; next: etcdforge plan --dir {d}, then etcdforge apply --dir {d}")
