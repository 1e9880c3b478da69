"""Diagnosis and monitoring: ``metrics`` (the key figures of each member's /metrics), ``doctor``,
``monitoring --prometheus DIR`` (scrape config and alert rules) and ``exporter`` (etcdforge's own metrics)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from etcdforge.cli.app import (
    dir_option,
    fail,
    main,
    make_console,
    output_option,
    plain,
    run_async,
    workspace_dir,
)


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f} ms"


def _count(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def _bytes(value: float | None) -> str:
    from etcdforge.cli.query import size_text

    return "" if value is None else size_text(int(value))


@main.command()
@dir_option
@output_option
@click.option("--member", "member_name", help="Only this member.")
@click.option("--raw", is_flag=True, help="Print the member's whole /metrics page (needs --member).")
def metrics(directory: Path | None, output: str, member_name: str | None, raw: bool) -> None:
    """Each member's key figures from its /metrics: leader, proposals, disk latency (p99 since the member
    started), database size, peers' round trip, file descriptors."""
    import http.client

    from etcdforge.observe import metrics as scraping
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))
    if raw and member_name is None:
        fail("--raw needs --member NAME")
    chosen = spec.members
    if member_name is not None:
        if member_name not in {m.name for m in spec.members}:
            fail(f"no member named {member_name!r} in the spec")
        chosen = (spec.member(member_name),)
    if raw:
        url = scraping.metrics_source(spec, chosen[0])
        try:
            sys.stdout.write(run_async(scraping.fetch_text(url, ws)))
        except (OSError, ValueError, http.client.HTTPException) as exc:
            fail(f"cannot read {url}: {getattr(exc, 'reason', None) or exc}")
        return
    scrapes = run_async(scraping.scrape_all(spec, ws, chosen))
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "member": s.member,
                        "url": s.url,
                        "error": s.error,
                        "figures": None if s.figures is None else s.figures.to_json(),
                    }
                    for s in scrapes
                ],
                indent=2,
            )
        )
    else:
        make_console().print(_figures_table(spec.name, scrapes))
    if any(s.error for s in scrapes):
        sys.exit(1)


def _figures_table(name: str, scrapes: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"cluster {name}: metrics (counts and p99 since each member started)")
    for col in (
        "member", "version", "has leader", "leader changes",
        "proposals committed / applied / pending / failed", "db size / in use", "wal fsync p99",
        "backend commit p99", "peer rtt p99", "heartbeat failures", "fds",
    ):  # fmt: skip
        table.add_column(col)
    for s in scrapes:
        f = s.figures
        if f is None:
            table.add_row(s.member, *([""] * 9), f"[red]{plain(s.error)}[/]")
            continue
        leader = "" if f.has_leader is None else "yes" if f.has_leader else "[red]none[/]"
        proposals = " / ".join(
            _count(v)
            for v in (f.proposals_committed, f.proposals_applied, f.proposals_pending, f.proposals_failed)
        )
        table.add_row(
            s.member,
            plain(f.version or ""),
            leader,
            _count(f.leader_changes),
            proposals,
            f"{_bytes(f.db_size)} / {_bytes(f.db_in_use)}",
            _ms(f.wal_fsync_p99),
            _ms(f.backend_commit_p99),
            _ms(f.peer_rtt_p99),
            _count(f.heartbeat_send_failures),
            f"{_count(f.open_fds)} of {_count(f.max_fds)}",
        )
    return table


@main.command()
@dir_option
@output_option
@click.option(
    "--hosts", "read_hosts", is_flag=True, help="Also read every member's host over SSH (hosts mode)."
)
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a threshold, e.g. wal_fsync_p99_ms=5 (repeatable; an unknown name lists them).",
)
def doctor(directory: Path | None, output: str, read_hosts: bool, thresholds: tuple[str, ...]) -> None:
    """What is wrong with the cluster and the command that fixes it: certificates, configuration,
    membership, space, disk latency, leader changes, hosts (--hosts), backups. Exit 0 fine, 1 warnings,
    2 problems."""
    import shlex

    from etcdforge.diagnosis.findings import Thresholds, exit_code
    from etcdforge.diagnosis.rules import diagnose
    from etcdforge.verbs.doctor.gather import gather
    from etcdforge.workspace import load_workspace

    root = workspace_dir(directory)
    pairs: dict[str, str] = {}
    for item in thresholds:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--threshold {item!r}: use NAME=VALUE")
        pairs[name.strip()] = value.strip()
    try:
        limits = Thresholds().override(pairs)
    except ValueError as exc:
        fail(str(exc))
    ws, spec = load_workspace(root)
    dir_arg = "" if directory is None else f" --dir {shlex.quote(str(directory))}"
    facts = run_async(gather(spec, ws, hosts=read_hosts, dir_arg=dir_arg))
    findings = diagnose(facts, limits)
    code = exit_code(findings)
    if output == "json":
        click.echo(json.dumps({"exit": code, "findings": [f.to_json() for f in findings]}, indent=2))
        sys.exit(code)
    console = make_console()
    for f in findings:
        style = "red" if f.severity == "problem" else "yellow"
        console.print(
            f"[{style}]{f.severity}[/] [bold]{plain(f.subject)}[/] {plain(f.message)} [dim]({f.rule})[/]"
        )
        if f.evidence:
            console.print(f"    evidence: {plain(f.evidence)}")
        console.print(f"    fix: {plain(f.fix)}")
    problems = sum(f.severity == "problem" for f in findings)
    warnings = len(findings) - problems
    if not findings:
        console.print(f"[green]cluster {plain(spec.name)}: no findings[/]")
    else:
        console.print(f"cluster {plain(spec.name)}: {problems} problem(s), {warnings} warning(s)")
    if spec.on_own_hosts and not read_hosts:
        console.print("[dim]hosts were not read: --hosts adds configuration, logs, clocks and host checks[/]")
    sys.exit(code)


@main.command()
@dir_option
@click.option(
    "--prometheus",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Write prometheus.yml, the alert rules and the exporter's unit into this directory.",
)
@click.option(
    "--exporter", "exporter_at", default="127.0.0.1:9479", show_default=True, help="The exporter's address."
)
@click.option("--remote-write", default=None, help="Hosts mode: where each host's Prometheus agent sends to.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@output_option
def monitoring(
    directory: Path | None,
    out_dir: Path,
    exporter_at: str,
    remote_write: str | None,
    dry_run: bool,
    output: str,
) -> None:
    """Scrape config, alert rules (checked with promtool) and a systemd unit for `etcdforge exporter`."""
    from etcdforge.cli.app import StepPrinter, print_plan
    from etcdforge.verbs.doctor import monitoring as mon
    from etcdforge.verbs.doctor.exporter import parse_listen
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))
    parse_listen(exporter_at)
    plan = mon.plan_monitoring(
        spec,
        ws,
        out_dir,
        exporter=exporter_at,
        remote_write=remote_write,
        etcdforge=mon.etcdforge_executable(),
    )
    if dry_run or output == "json":
        print_plan(plan, output)
        if dry_run:
            return
    reporter = None if output == "json" else StepPrinter(make_console())
    run_async(mon.write(plan, reporter, dry_run))
    if output != "json":
        make_console().print(
            f"wrote {len(plan.steps)} files to {plain(out_dir)}: check them with "
            f"`promtool check config {plain(out_dir / 'prometheus.yml')}`"
        )


@main.command()
@dir_option
@click.option(
    "--listen", default="127.0.0.1:9479", show_default=True, help="ADDRESS:PORT to serve /metrics on."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=5),
    default=60.0,
    show_default=True,
    help="Seconds between refreshes of the figures.",
)
def exporter(directory: Path | None, listen: str, interval: float) -> None:
    """Serve what etcd does not export (certificate expiry, backup age, learner lag, version skew, drift
    from the spec, doctor's findings) as Prometheus metrics, until SIGINT or SIGTERM."""
    import asyncio
    import signal

    from etcdforge.verbs.doctor.exporter import serve
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(workspace_dir(directory))

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(address: str, port: int) -> None:
            make_console().print(f"serving http://{address}:{port}/metrics (cluster {plain(spec.name)})")
            sys.stdout.flush()

        def failed(exc: Exception) -> None:
            make_console(stderr=True).print(f"[yellow]refresh failed:[/] {plain(exc)}")

        await serve(spec, ws, listen, interval=interval, stop=stop, on_ready=ready, on_error=failed)

    run_async(main_loop())
