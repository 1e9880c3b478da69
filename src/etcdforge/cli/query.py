"""Read-only views of a running cluster (``status``, ``health``, ``members``) and etcdctl access.

``env`` prints shell exports for plain etcdctl; ``ctl`` runs etcdctl with the cluster's endpoints and
TLS flags.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from etcdforge.cli.app import dir_option, main, make_console, output_option, plain, run_async, workspace_dir


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


@main.command()
@dir_option
@output_option
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C (table output).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
def status(directory: Path | None, output: str, watch: bool, interval: float) -> None:
    """Per member: version, leader, raft term/index, DB size, quota use, free pages, alarms, learner,
    errors; and the last backup's age."""
    from etcdforge.verbs import query as query
    from etcdforge.workspace import load_workspace

    root = workspace_dir(directory)
    before = _spec_bytes(root)
    ws, spec = load_workspace(root)
    if before is not None and before == _spec_bytes(root):  # what `status -o json`'s quick path reads
        from etcdforge import statuscache, topology

        members = tuple((m.name, topology.client_url(spec, m)) for m in spec.members)
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs speed
            statuscache.remember(root, before, statuscache.StatusInputs(members, spec.quota_bytes))
    if watch and output != "json":
        _watch(spec, ws, interval)
        return
    rows = run_async(query.status(spec, ws))
    if output == "json":
        click.echo(json.dumps([_row_json(r) for r in rows], indent=2))
    else:
        console = make_console()
        console.print(_table(spec.name, rows))
        console.print(_last_backup(ws.root))
    if any(r.error for r in rows):
        sys.exit(1)


def _spec_bytes(root: Path) -> bytes | None:
    try:
        return (root / "cluster.yaml").read_bytes()
    except OSError:
        return None


def _row_json(r: Any) -> dict[str, Any]:
    from etcdforge.statuscache import json_row

    s = r.status
    if s is None:
        return {"member": r.member, "endpoint": r.endpoint, "error": r.error}
    return json_row(
        r.member,
        r.endpoint,
        member_id=s.member_id,
        version=s.version,
        leader=s.leader,
        raft_term=s.raft_term,
        raft_index=s.raft_index,
        raft_applied_index=s.raft_applied_index,
        db_size=s.db_size,
        db_size_in_use=s.db_size_in_use,
        quota=r.quota,
        alarms=list(r.alarms),
        is_learner=s.is_learner,
        revision=s.revision,
        errors=list(s.errors),
    )


def _table(name: str, rows: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"cluster {name}")
    for col in (
        "member", "endpoint", "id", "version", "leader", "raft term", "raft index", "db size",
        "quota use", "free pages", "alarms", "learner", "errors",
    ):  # fmt: skip
        table.add_column(col)
    for r in rows:
        s = r.status
        if s is None:
            table.add_row(r.member, r.endpoint, *([""] * 10), f"[red]{plain(r.error)}[/]")
            continue
        used = r.quota_used_pct or 0.0
        use_style = "red" if used >= 90 else "yellow" if used >= 75 else ""
        quota = f"{used:.0f}% of {size_text(r.quota)}"
        table.add_row(
            r.member,
            r.endpoint,
            f"{s.member_id:x}",
            plain(s.version),
            "[bold]yes[/]" if s.leader == s.member_id else "no",
            str(s.raft_term),
            str(s.raft_index),
            size_text(s.db_size),
            f"[{use_style}]{quota}[/]" if use_style else quota,
            f"{r.fragmented_pct or 0.0:.0f}%",
            f"[red]{plain(', '.join(r.alarms))}[/]" if r.alarms else "",
            "yes" if s.is_learner else "no",
            plain(", ".join(_own_errors(s.errors))),
        )
    return table


def _own_errors(errors: Any) -> list[str]:
    """etcd's status errors without its echo of active alarms ("memberID:… alarm:NOSPACE"): the alarms
    column already shows them."""
    return [e for e in errors if "alarm:" not in e]


def _watch(spec: Any, ws: Any, interval: float) -> None:
    """Redraw the table every ``interval`` seconds in place until Ctrl-C or SIGTERM (a member that stops
    answering shows as an error row, and the watch goes on). The signal only sets a flag: a status read
    under way finishes (it has its own timeout) instead of being cancelled inside gRPC."""
    import asyncio
    import signal

    from rich.console import Group
    from rich.live import Live
    from rich.markup import render

    from etcdforge.verbs import query as query

    async def loop() -> None:
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(sig, stop.set)
        console = make_console()
        # on a terminal the view is redrawn in place; into a pipe or file, each refresh is printed
        live = Live(console=console, auto_refresh=False) if console.is_terminal else None
        with live or contextlib.nullcontext():
            while not stop.is_set():
                rows = await query.status(spec, ws)
                view = Group(_table(spec.name, rows), render(_last_backup(ws.root)))
                if live is not None:
                    live.update(view, refresh=True)
                else:
                    console.print(view)
                    sys.stdout.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)

    run_async(loop())


def _last_backup(root: Path) -> str:
    """One line: the age of the last verified backup `backup now` recorded (or that there is none)."""
    from datetime import UTC, datetime

    from etcdforge.backup.manifest import taken_at
    from etcdforge.verbs.backup.run import LAST_BACKUP, LAST_FAILURE

    failed = ""
    try:
        failure = json.loads((root / LAST_FAILURE).read_text())
        failed = f"\n[red]the last backup run ({plain(failure['id'])}) failed:[/] {plain(failure['error'])}"
    except (OSError, ValueError, KeyError):
        pass
    try:
        record = json.loads((root / LAST_BACKUP).read_text())
        taken = taken_at(str(record["id"]))
    except (OSError, ValueError, KeyError):
        return (
            "[yellow]no backup recorded[/]: `etcdforge backup now` (or `backup schedule --install`)" + failed
        )
    hours = (datetime.now(UTC) - taken).total_seconds() / 3600
    age = (
        f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.0f} days"
    )
    style = "green" if hours < 25 else "yellow"
    targets = ", ".join(plain(t) for t in record.get("targets", []))
    return f"last verified backup: [{style}]{age} ago[/] ({plain(record['id'])} in {targets})" + failed


@main.command()
@dir_option
@output_option
def health(directory: Path | None, output: str) -> None:
    """Like `etcdctl endpoint health`; exits non-zero if any member is unhealthy."""
    from etcdforge import topology
    from etcdforge.verbs import query as query
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))
    results = run_async(query.health(spec, ws))
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "member": n,
                        "endpoint": h.endpoint,
                        "healthy": h.healthy,
                        "took": h.took,
                        "error": h.error,
                    }
                    for n, h in results
                ],
                indent=2,
            )
        )
    else:
        console = make_console()
        for name, h in results:
            url = topology.client_url(spec, spec.member(name))
            if h.healthy:
                console.print(
                    f"[green]{url} is healthy[/]: successfully committed proposal: "
                    f"took = {h.took * 1000:.1f}ms ({name})"
                )
            else:
                console.print(f"[red]{url} is unhealthy[/]: {plain(h.error)} ({name})", markup=True)
    if not all(h.healthy for _, h in results):
        sys.exit(1)


@main.command()
@dir_option
@output_option
def members(directory: Path | None, output: str) -> None:
    """The cluster's member list (as etcd itself reports it)."""
    from etcdforge.verbs import query as query
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))
    listed = run_async(query.members(spec, ws))
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "id": f"{m.id:x}",
                        "name": m.name,
                        "peer_urls": list(m.peer_urls),
                        "client_urls": list(m.client_urls),
                        "is_learner": m.is_learner,
                    }
                    for m in listed
                ],
                indent=2,
            )
        )
        return
    from rich.table import Table

    table = Table()
    for col in ("id", "status", "name", "peer urls", "client urls", "learner"):
        table.add_column(col)
    for m in listed:
        table.add_row(
            f"{m.id:x}",
            "started" if m.name else "unstarted",
            m.name,
            ",".join(m.peer_urls),
            ",".join(m.client_urls),
            "yes" if m.is_learner else "no",
        )
    make_console().print(table)


@main.command()
@dir_option
def env(directory: Path | None) -> None:
    """Shell exports for plain etcdctl: eval "$(etcdforge env)"."""
    from etcdforge import render, topology
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))
    sys.stdout.write(render.etcdctl_env(topology.client_urls(spec), ws.client_paths()).decode())


def _etcdctl_argv(directory: Path | None) -> list[str]:
    from etcdforge import binaries, render, topology
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))
    explicit = spec.etcd.binary
    ctl = binaries.sibling_tool(Path(explicit), "etcdctl") if explicit else binaries.find_tool("etcdctl")
    return [str(ctl), *render.etcdctl_tls_args(topology.client_urls(spec), ws.client_paths())]


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@dir_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctl(directory: Path | None, args: tuple[str, ...]) -> None:
    """Run etcdctl with the cluster's endpoints and TLS flags: etcdforge ctl -- member list -w table."""
    argv = _etcdctl_argv(directory) + list(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    sys.stdout.flush()
    os.execve(argv[0], argv, env)
