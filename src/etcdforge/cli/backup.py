"""``backup``: take (``now``), ``list``, ``verify`` and ``prune`` backups; ``restore`` lives beside it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
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
    output_option,
    plain,
    print_plan,
    run_async,
    workspace_dir,
    yes_option,
)

target_option = click.option(
    "--target", default=None, help="A backup target's name from the spec (default: the first one)."
)
identity_option = click.option(
    "--identity",
    "-i",
    "identities",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="age identity file that decrypts the backup (as `age-keygen` writes it); repeatable.",
)


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def _age(when: datetime) -> str:
    seconds = int((datetime.now(UTC) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


@main.group()
def backup() -> None:
    """Backups: take one now, list, verify, prune (restore: `etcdforge restore`)."""


@backup.command("now")
@dir_option
@click.option(
    "--target",
    "targets",
    multiple=True,
    help="A target's name from the spec (repeatable; default: the first).",
)
@click.option("--all-targets", is_flag=True, help="Store the backup in every target of the spec.")
@click.option("--member", default=None, help="Read this member (default: a caught-up follower).")
@click.option(
    "--include-pki",
    is_flag=True,
    help="Also store the workspace's PKI, CA key included, age-encrypted (needs backup.encrypt_to).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@output_option
def backup_now(
    directory: Path | None,
    targets: tuple[str, ...],
    all_targets: bool,
    member: str | None,
    include_pki: bool,
    dry_run: bool,
    output: str,
) -> None:
    """Take a snapshot from a healthy voting member, check it (etcd's hash, the bbolt structure,
    `snapshot status`), compress it (zstd), encrypt it if the spec names age recipients, and store it
    with a manifest in the target. Exit 0 only when the backup is stored and verified."""
    from etcdforge.verbs.backup import run as backup_run

    d = workspace_dir(directory)
    target: tuple[str, ...] | str | None = () if all_targets else (targets or None)
    if dry_run:
        result = run_async(
            backup_run.backup_now(d, target=target, member=member, dry_run=True, include_pki=include_pki)
        )
        print_plan(result.plan, output)
        return
    progress = StepPrinter(make_console(stderr=output == "json"))
    result = run_async(
        backup_run.backup_now(d, target=target, member=member, reporter=progress, include_pki=include_pki)
    )
    m = result.manifest
    assert m is not None
    if output == "json":
        click.echo(json.dumps({"id": m.id, "target": result.target, "manifest": m.model_dump(mode="json")}))
        return
    keys = f", {m.check.total_keys} keys" if m.check.total_keys is not None else ""
    make_console().print(
        f"backup {plain(m.id)} in {plain(result.target)}: revision {m.restore_revision}{keys}, "
        f"{_mib(m.db_size)} -> {_mib(m.stored.size)}"
        + (" (encrypted)" if m.stored.encrypted else "")
        + f", from {plain(m.source_member)}; verified",
        markup=True,
    )


@backup.command("list")
@dir_option
@target_option
@output_option
def backup_list(directory: Path | None, target: str | None, output: str) -> None:
    """Every backup in every target (or one): age, revision, size, and whether it is whole."""
    from etcdforge.verbs.backup import run as backup_run
    from etcdforge.workspace import load_workspace

    d = workspace_dir(directory)
    listings = run_async(backup_run.list_backups(d, target))
    ws, spec = load_workspace(d)
    on_members = run_async(backup_run.member_backups(spec, ws)) if target is None else ()
    if output == "json":
        doc: list[dict[str, Any]] = []
        for t in listings:
            doc.append(
                {
                    "target": t.target,
                    "where": t.where,
                    "error": t.error,
                    "backups": [
                        {
                            "id": e.backup_id,
                            "taken": e.taken.isoformat(),
                            "ok": e.ok,
                            "problem": e.problem,
                            "size": e.size,
                            "revision": e.manifest.restore_revision if e.manifest else None,
                            "encrypted": e.manifest.stored.encrypted if e.manifest else None,
                        }
                        for e in t.entries
                    ],
                }
            )
        for mb in on_members:
            doc.append(
                {"target": f"member:{mb.member}", "where": mb.where, "error": mb.error,
                 "files": list(mb.files), "last_run": mb.last_run}
            )  # fmt: skip
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    console = make_console()
    failed = False
    for mb in on_members:
        last = mb.last_run or {}
        state = (
            f"[red]{plain(mb.error)}[/]"
            if mb.error
            else "no run yet"
            if not last
            else f"last run {plain(last.get('time'))}: "
            + ("[green]verified[/]" if last.get("ok") else f"[red]failed: {plain(last.get('detail'))}[/]")
        )
        console.print(f"on {plain(mb.where)}: {len(mb.files)} snapshot(s); {state}")
    for t in listings:
        if t.error:
            failed = True
            console.print(f"[red]{plain(t.target)}: {plain(t.error)}[/]")
            continue
        table = Table(title=f"{t.target} ({t.where})", title_justify="left")
        for col in ("id", "age", "revision", "keys", "stored", "source", "state"):
            table.add_column(col)
        for e in reversed(t.entries):
            m = e.manifest
            table.add_row(
                e.backup_id,
                _age(e.taken),
                str(m.restore_revision) if m else "-",
                str(m.check.total_keys) if m and m.check.total_keys is not None else "-",
                _mib(e.size) + (" age" if m and m.stored.encrypted else ""),
                plain(m.source_member) if m else "-",
                "verified when taken" if e.ok else f"[red]{plain(e.problem)}[/]",
            )
        if not t.entries:
            console.print(f"{plain(t.target)} ({plain(t.where)}): no backups")
        else:
            console.print(table)
    if failed:
        raise SystemExit(1)


@backup.command("verify")
@click.argument("backup_id", metavar="ID|latest", default="latest")
@dir_option
@target_option
@identity_option
@output_option
def backup_verify(
    backup_id: str, directory: Path | None, target: str | None, identities: tuple[Path, ...], output: str
) -> None:
    """Fetch a backup and check it as a restore would: the stored file's hash, decryption, decompression,
    the snapshot's hash, the bbolt structure and `snapshot status`. Changes nothing."""
    from etcdforge.verbs.backup import run as backup_run

    result = run_async(
        backup_run.verify_backup(workspace_dir(directory), backup_id, target=target, identities=identities)
    )
    if output == "json":
        click.echo(json.dumps({"id": result.backup_id, "target": result.target, "ok": True,
                               "checks": list(result.checks)}))  # fmt: skip
        return
    console = make_console()
    for line in result.checks:
        console.print(f"[green]✓[/] {plain(line)}")
    console.print(f"backup {plain(result.backup_id)} in {plain(result.target)} is good")


@backup.command("prune")
@dir_option
@target_option
@click.option("--dry-run", is_flag=True, help="Print what would be deleted and why; delete nothing.")
@yes_option
@output_option
def backup_prune(directory: Path | None, target: str | None, dry_run: bool, yes: bool, output: str) -> None:
    """Delete the backups the spec's retention does not keep (last N; hourly, daily, weekly, monthly);
    the newest verified backup is always kept."""
    from etcdforge.verbs.backup import run as backup_run

    d = workspace_dir(directory)
    progress = StepPrinter(make_console(stderr=output == "json"))
    result = run_async(
        backup_run.prune(d, target=target, dry_run=dry_run, confirm=confirmer(yes), reporter=progress)
    )
    if output == "json":
        click.echo(json.dumps({"target": result.target, "executed": result.executed,
                               "keep": result.keep, **result.plan.to_json()}))  # fmt: skip
        return
    console = make_console()
    if dry_run or not result.executed:
        print_plan(result.plan, output)
    for backup_id, why in sorted(result.keep.items()):
        console.print(f"keep {plain(backup_id)}: {plain(', '.join(why))}")


@main.command("restore")
@click.argument("backup_id", metavar="ID|latest", default="latest")
@dir_option
@target_option
@identity_option
@click.option("--etcd-bin", default=None, help="Local mode: the etcd binary (its etcdutl/etcdctl restores).")
@click.option("--dry-run", is_flag=True, help="Verify nothing, change nothing: print the plan.")
@yes_option
@no_snapshot_option
@output_option
def restore(
    backup_id: str,
    directory: Path | None,
    target: str | None,
    identities: tuple[Path, ...],
    etcd_bin: str | None,
    dry_run: bool,
    yes: bool,
    no_snapshot: bool,
    output: str,
) -> None:
    """Restore the whole cluster from a backup: verify it, stop every member, move each data dir aside
    (never deleted), restore the snapshot with a new cluster token, start, check. A re-run after an
    interruption resumes the same restore."""
    from etcdforge.verbs.restore import run as restore_run

    d = workspace_dir(directory)
    kwargs: dict[str, Any] = dict(
        target=target, identities=identities, etcd_bin=etcd_bin, no_snapshot=no_snapshot
    )
    console = make_console(stderr=output == "json")
    if dry_run:
        result = run_async(restore_run.restore(d, backup_id, dry_run=True, **kwargs))
        print_plan(result.plan, output)
        for w in result.warnings:
            make_console(stderr=True).print(f"[yellow]warning:[/] {plain(w)}")
        return
    progress = StepPrinter(console)
    result = run_async(restore_run.restore(d, backup_id, confirm=confirmer(yes), reporter=progress, **kwargs))
    m = result.manifest
    if output == "json":
        click.echo(
            json.dumps({"restored": m.id, "revision": m.restore_revision, "warnings": list(result.warnings)})
        )
    else:
        console.print(f"restored {plain(m.id)} (revision {m.restore_revision}); the cluster is healthy")
    for w in result.warnings:
        make_console(stderr=True).print(f"[yellow]warning:[/] {plain(w)}")


@backup.command("schedule")
@dir_option
@click.option("--every", default="1h", show_default=True, help="How often: a duration, e.g. 15m, 1h, 24h.")
@click.option("--install", is_flag=True, help="Write the units (and start the timer where systemd runs).")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the units here (default: /etc/systemd/system, or ~/.config/systemd/user for a user).",
)
@click.option("--user/--system", "user", default=None, help="A user timer or a system one (default: by uid).")
def backup_schedule(
    directory: Path | None, every: str, install: bool, unit_dir: Path | None, user: bool | None
) -> None:
    """A timer on this machine that runs `backup now` to every target, then prunes each. Without
    --install: print the units and the equivalent crontab line."""
    from etcdforge.verbs.backup import schedule as sched

    progress = StepPrinter(make_console()) if install else None
    units, plan = run_async(
        sched.schedule(
            workspace_dir(directory),
            every=every,
            install=install,
            unit_dir=unit_dir,
            user=user,
            reporter=progress,
        )
    )
    console = make_console()
    if not install:
        console.print(f"# {units.name}.service", markup=False)
        console.print(units.service.decode(), markup=False)
        console.print(f"# {units.name}.timer", markup=False)
        console.print(units.timer.decode(), markup=False)
        console.print("# or, as a crontab line:", markup=False)
        console.print(units.cron, markup=False)
        return
    for w in plan.warnings:
        make_console(stderr=True).print(f"[yellow]warning:[/] {plain(w)}")
    console.print(f"{plain(units.name)}.timer installed: a backup every {plain(every)}")


@main.command("recover")
@dir_option
@click.option("--member", default=None, help="Recover from this member (default: the highest applied index).")
@click.option("--etcd-bin", default=None, help="Local mode: the etcd binary the members run.")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--dry-run", is_flag=True, help="Show the survivor and the plan; change nothing.")
@yes_option
def recover(
    directory: Path | None, member: str | None, etcd_bin: str | None, timeout: float, dry_run: bool, yes: bool
) -> None:
    """A lost quorum without a usable backup: run the surviving member with the highest applied index
    as a one-member cluster (force-new-cluster), then wipe and re-add every other member as a learner
    and promote it. Refused while a quorum is healthy. A re-run after an interruption resumes."""
    from etcdforge.verbs.recover import run as recover_run

    d = workspace_dir(directory)
    console = make_console()
    if dry_run:
        result = run_async(recover_run.recover(d, member=member, dry_run=True, etcd_bin=etcd_bin))
        if result.note:
            console.print(plain(result.note))
            return
        console.print(f"survivor: [bold]{plain(result.survivor)}[/]")
        print_plan(result.plan, "table")
        for w in result.warnings:
            make_console(stderr=True).print(f"[yellow]warning:[/] {plain(w)}")
        return
    result = run_async(
        recover_run.recover(
            d, member=member, confirm=confirmer(yes), reporter=StepPrinter(console), timeout=timeout,
            etcd_bin=etcd_bin,
        )
    )  # fmt: skip
    if result.note:
        console.print(plain(result.note))
        return
    console.print(
        f"recovered from {plain(result.survivor)}; re-added: {plain(', '.join(result.replaced) or 'none')}"
    )


@backup.command("drill")
@click.argument("backup_id", metavar="ID|latest", default="latest")
@dir_option
@target_option
@identity_option
@click.option("--etcd-bin", default=None, help="The etcd binary of the throwaway cluster.")
@output_option
def backup_drill(
    backup_id: str,
    directory: Path | None,
    target: str | None,
    identities: tuple[Path, ...],
    etcd_bin: str | None,
    output: str,
) -> None:
    """Restore a backup into a throwaway 3-member local cluster on free 127.0.0.x addresses, check it,
    tear it down, and print what came back. The cluster the backup is of is not touched."""
    from etcdforge.verbs.backup import drill as drill_mod

    console = make_console(stderr=output == "json")
    result = run_async(
        drill_mod.drill(
            workspace_dir(directory), backup_id, target=target, identities=identities, etcd_bin=etcd_bin,
            reporter=StepPrinter(console),
        )
    )  # fmt: skip
    if output == "json":
        doc = {
            "id": result.backup_id,
            "target": result.target,
            "revision": result.revision,
            "keys": result.keys,
            "restore_seconds": round(result.restore_seconds, 2),
            "addresses": list(result.addresses),
            "warnings": list(result.checks),
        }
        click.echo(json.dumps(doc))
        return
    make_console().print(
        f"drill of {plain(result.backup_id)} from {plain(result.target)}: restored into "
        f"{plain(', '.join(result.addresses))} in {result.restore_seconds:.1f}s; revision {result.revision}, "
        f"{result.keys} keys; the throwaway cluster is destroyed"
    )
