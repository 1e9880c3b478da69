"""``defrag``, ``compact``, ``alarms list|disarm``, ``space recover``, ``check-data``: maintenance through
etcd's API (no SSH), each one plan shown by ``--dry-run`` and refused in one line when the cluster is
not healthy enough for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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

dry_run_option = click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")


def _reporter(dry_run: bool) -> StepPrinter | None:
    return None if dry_run else StepPrinter(make_console())


def _finish(result: Any, dry_run: bool, output: str, done: str) -> None:
    err = make_console(stderr=True)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {plain(note)}")
    if dry_run or output == "json":
        print_plan(result.plan, output)
        return
    make_console().print(done if result.executed else "nothing to do")


@main.command("defrag")
@dir_option
@click.option("--member", default=None, help="Only this member (default: every member, the leader last).")
@click.option(
    "--if-fragmented",
    "pct",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="Skip members whose database has less than PCT percent free pages.",
)
@dry_run_option
@output_option
def defrag(directory: Path | None, member: str | None, pct: float, dry_run: bool, output: str) -> None:
    """Defragment members one at a time: followers first, the leader last after handing leadership
    over, every member serving linearizable reads before the next one starts."""
    from etcdforge.verbs.maintenance import run

    d = workspace_dir(directory)
    result = run_async(
        run.defrag(d, member=member, if_fragmented=pct, dry_run=dry_run, reporter=_reporter(dry_run))
    )
    _finish(result, dry_run, output, "defragmented")


@main.command("compact")
@dir_option
@click.option(
    "--revision", type=click.IntRange(min=1), default=None, help="Drop history before this revision."
)
@click.option(
    "--keep",
    default=None,
    metavar="DURATION",
    help="Keep this much history (Go duration, e.g. 24h): compacts to the revision of the newest "
    "backup at least that old.",
)
@dry_run_option
@output_option
def compact(
    directory: Path | None, revision: int | None, keep: str | None, dry_run: bool, output: str
) -> None:
    """Compact the keyspace's history (then `etcdforge defrag` gives the space back to the disk)."""
    from etcdforge.durations import parse_go_duration
    from etcdforge.verbs.maintenance import run

    try:
        kept = parse_go_duration(keep) if keep is not None else None
    except ValueError as exc:
        fail(f"--keep {keep}: {exc}")
    d = workspace_dir(directory)
    result = run_async(
        run.compact(d, revision=revision, keep=kept, dry_run=dry_run, reporter=_reporter(dry_run))
    )
    _finish(result, dry_run, output, "compacted")


@main.group("alarms", invoke_without_command=True)
@dir_option
@click.option("--check-data", is_flag=True, help="Also compare every member's data (HashKV at one revision).")
@output_option
@click.pass_context
def alarms(ctx: click.Context, directory: Path | None, check_data: bool, output: str) -> None:
    """etcd's alarms: NOSPACE (the database hit its quota: `space recover`) and CORRUPT. Without a
    subcommand: `alarms list`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(alarms_list, directory=directory, check_data=check_data, output=output)


@alarms.command("list")
@dir_option
@click.option("--check-data", is_flag=True, help="Also compare every member's data (HashKV at one revision).")
@output_option
def alarms_list(directory: Path | None = None, check_data: bool = False, output: str = "table") -> None:
    """Active alarms, by member; with a CORRUPT alarm, which member's data differs from the others."""
    from etcdforge.verbs.maintenance import run

    view, report = run_async(run.alarms(workspace_dir(directory), check_data=check_data))
    if output == "json":
        doc: dict[str, Any] = {"alarms": [{"member": m, "alarm": a} for m, a in view.alarms]}
        if report is not None:
            doc["data"] = {
                "revision": report.revision,
                "hashes": {n: {"hash": h, "compact_revision": c} for n, (h, c) in report.hashes.items()},
                "differs": report.odd_ones(),
                "verdict": report.verdict(),
            }
        click.echo(json.dumps(doc, indent=2))
    else:
        console = make_console()
        if not view.alarms:
            console.print("no alarm is active")
        for member, alarm in view.alarms:
            console.print(f"[bold red]{plain(alarm)}[/] on {plain(member)}")
        if report is not None:
            console.print(plain(report.verdict()))
    if view.alarms or (report is not None and not report.agree()):
        raise SystemExit(2)


@alarms.command("disarm")
@dir_option
@click.option(
    "--alarm",
    "kinds",
    type=click.Choice(["NOSPACE", "CORRUPT"]),
    multiple=True,
    default=("NOSPACE",),
    show_default=True,
    help="Which alarms (CORRUPT only once every member's data agrees).",
)
@dry_run_option
@output_option
def alarms_disarm(directory: Path | None, kinds: tuple[str, ...], dry_run: bool, output: str) -> None:
    """Disarm alarms. A NOSPACE alarm comes back at once while the database is over its quota: `space
    recover` frees the space first."""
    from etcdforge.verbs.maintenance import run

    d = workspace_dir(directory)
    result = run_async(run.disarm(d, kinds=kinds, dry_run=dry_run, reporter=_reporter(dry_run)))
    _finish(result, dry_run, output, "disarmed")


@main.group("space")
def space() -> None:
    """The database's space: recover from NOSPACE."""


@space.command("recover")
@dir_option
@dry_run_option
@output_option
def space_recover(directory: Path | None, dry_run: bool, output: str) -> None:
    """NOSPACE: compact to the current revision, defragment every member (the leader last), disarm the
    alarm, and prove with a write that the cluster takes writes again."""
    from etcdforge.verbs.maintenance import run

    result = run_async(
        run.space_recover(
            workspace_dir(directory),
            dry_run=dry_run,
            reporter=None if dry_run else StepPrinter(make_console()),
        )
    )
    _finish(result, dry_run, output, "space recovered: writes work again")


@main.command("check-data")
@dir_option
@output_option
def check_data(directory: Path | None, output: str) -> None:
    """Compare every member's data (HashKV at one revision): names a member whose data differs from the
    others and the `member replace` that rebuilds it. Exit 2 when they differ."""
    from etcdforge.verbs.maintenance import run
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))
    report = run_async(run.compare_data(spec, ws))
    if output == "json":
        click.echo(json.dumps({"revision": report.revision, "differs": report.odd_ones(),
                               "agree": report.agree(), "verdict": report.verdict()}, indent=2))  # fmt: skip
    else:
        make_console().print(plain(report.verdict()))
    if not report.agree() or not report.hashes:
        raise SystemExit(2)


@main.command("upgrade")
@dir_option
@click.option("--to", "to", required=True, metavar="VERSION", help="The etcd release to run, e.g. 3.5.17.")
@click.option("--etcd-bin", default=None, help="Local mode: the etcd binary of that release.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds per member.")
@click.option(
    "--allow-unsafe-version",
    is_flag=True,
    help="Allow a release with a known data-loss bug (3.5.0–3.5.2): for development and tests only.",
)
@click.option("--downgrade", is_flag=True, help="Move to an older release, where etcd supports it.")
@dry_run_option
@output_option
@click.option("--no-snapshot", is_flag=True, help="Skip the safety snapshot taken first.")
def upgrade(
    directory: Path | None,
    to: str,
    etcd_bin: str | None,
    timeout: float,
    allow_unsafe_version: bool,
    downgrade: bool,
    dry_run: bool,
    output: str,
    no_snapshot: bool,
) -> None:
    """Rolling upgrade: one minor at a time, a minimum patch first, known-bad releases refused; a safety
    snapshot, then each member (followers first, the leader last after handing over) switched to the new
    binary, health-gated, its version and a canary checked; a member that fails goes back to its previous
    binary. Resumable: a re-run after an interruption goes on where it stopped."""
    from etcdforge.verbs.upgrade import run

    result = run_async(
        run.upgrade(
            workspace_dir(directory), to=to, etcd_bin=etcd_bin, dry_run=dry_run,
            allow_unsafe=allow_unsafe_version, downgrade=downgrade, timeout=timeout, no_snapshot=no_snapshot,
            reporter=_reporter(dry_run),
        )
    )  # fmt: skip
    err = make_console(stderr=True)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {plain(warning)}")
    if dry_run or output == "json":
        print_plan(result.plan, output)
        if result.note:
            err.print(plain(result.note))
        return
    make_console().print(plain(result.note) if not result.executed else f"upgraded: {plain(result.note)}")
