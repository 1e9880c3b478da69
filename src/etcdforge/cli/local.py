"""Local mode lifecycle: ``up``, ``down`` and ``destroy`` a cluster of etcd processes on this machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from etcdforge.cli.app import (
    StepPrinter,
    dir_option,
    fail,
    main,
    make_console,
    output_option,
    plain,
    print_plan,
    run_async,
    workspace_dir,
)


@main.command()
@dir_option
@click.option("--members", "-n", type=int, default=None, help="Members for a new cluster (default 3).")
@click.option("--etcd-bin", type=str, default=None, help="etcd binary to use.")
@click.option("--name", type=str, default=None, help="Cluster name for a new workspace (default: local).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for health.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@output_option
def up(
    directory: Path | None,
    members: int | None,
    etcd_bin: str | None,
    name: str | None,
    timeout: float,
    dry_run: bool,
    output: str,
) -> None:
    """Create (or start) a local mutual-TLS cluster; never wipes data."""
    from etcdforge import topology
    from etcdforge.verbs.up import run as lifecycle

    d = workspace_dir(directory)
    console = make_console()
    reporter = None if (dry_run or output == "json") else StepPrinter(console)
    result = run_async(
        lifecycle.up(
            d,
            members=members,
            etcd_bin=etcd_bin,
            name=name,
            timeout=timeout,
            dry_run=dry_run,
            reporter=reporter,
        )
    )
    for warning in result.warnings:
        make_console(stderr=True).print(f"[yellow]warning:[/] {plain(warning)}")
    if dry_run:
        print_plan(result.plan, output)
        return
    spec = result.spec
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "dir": str(d.resolve()),
                    "etcd": {"path": str(result.binary.path), "version": result.binary.version_str},
                    "endpoints": list(topology.client_urls(spec)),
                    "changes": len(result.plan.steps),
                },
                indent=2,
            )
        )
        return
    if result.plan.empty:
        console.print("cluster already up; nothing to do")
    console.print(
        f"[bold green]{len(spec.members)}-member cluster {spec.name!r} is healthy[/] "
        f"(etcd {result.binary.version_str}, {d})"
    )
    console.print("endpoints: " + ",".join(topology.client_urls(spec)))
    flag = "" if directory is None else f" --dir {d}"
    console.print(f'use etcdctl:  eval "$(etcdforge env{flag})" && etcdctl endpoint health')


@main.command()
@dir_option
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
def down(directory: Path | None, dry_run: bool) -> None:
    """Stop the local members, keeping all data."""
    from etcdforge.verbs.up import run as lifecycle

    console = make_console()
    plan = run_async(
        lifecycle.down(
            workspace_dir(directory), dry_run=dry_run, reporter=None if dry_run else StepPrinter(console)
        )
    )
    if dry_run:
        print_plan(plan, "table")
    elif plan.empty:
        console.print("no member was running")
    else:
        console.print("stopped; data kept (run `etcdforge up` to start again)")


@main.command()
@dir_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
def destroy(directory: Path | None, yes: bool, dry_run: bool) -> None:
    """Stop the local members and delete the workspace (data, PKI, spec)."""
    from etcdforge.verbs.up import run as lifecycle

    d = workspace_dir(directory)
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            fail(f"destroy deletes {d} with all data; pass --yes to confirm")
        click.confirm(f"Delete {d} with all its data and certificates?", abort=True)
    reporter = None if dry_run else StepPrinter(make_console())
    # asked above (the question names the directory); the executor's own check is satisfied here
    plan = run_async(lifecycle.destroy(d, dry_run=dry_run, reporter=reporter, confirm=lambda steps: True))
    if dry_run:
        print_plan(plan, "table")
    elif plan.empty:
        make_console().print(f"no workspace at {plain(d)}; nothing to destroy")
    else:
        make_console().print(f"destroyed {plain(d)}")
