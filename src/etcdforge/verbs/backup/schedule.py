"""``backup schedule``: a systemd timer (or a cron line) on the control machine that runs ``backup now``
to every target, then prunes each, so backups happen while nobody watches. Local mode uses this; hosts
mode can too (backups then need the control machine up).

Pure rendering (:func:`render_units`, :func:`cron_line`) and one plan (:func:`plan_schedule`): the unit
files, then — where systemd runs — ``daemon-reload`` and ``enable --now`` of the timer.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from etcdforge.durations import parse_go_duration
from etcdforge.errors import CfsslConfigError, SpecError
from etcdforge.executor import Reporter
from etcdforge.plan import LocalCommand, Plan, Step, WriteFile
from etcdforge.spec import ClusterSpec

MIN_EVERY = timedelta(minutes=5)


@dataclass(frozen=True)
class Schedule:
    name: str  # unit name without suffix
    service: bytes
    timer: bytes
    cron: str


def parse_every(text: str) -> timedelta:
    """A Go-style duration (``15m``, ``1h``, ``24h``) of at least 5 minutes."""
    try:
        every = parse_go_duration(text)
    except CfsslConfigError as exc:
        raise SpecError(f"--every {text!r}: {exc}") from None
    if every < MIN_EVERY:
        raise SpecError(f"--every {text!r}: at least {MIN_EVERY.seconds // 60} minutes between backups")
    return every


def _seconds(every: timedelta) -> str:
    return f"{int(every.total_seconds())}s"


def commands(python: str, directory: Path, spec: ClusterSpec) -> list[list[str]]:
    """``backup now`` to every target, then ``backup prune`` of each (retention from the spec)."""
    base = [python, "-m", "etcdforge"]
    out = [[*base, "backup", "now", "--dir", str(directory), "--all-targets"]]
    for target in spec.backup.all_targets():
        out.append([*base, "backup", "prune", "--dir", str(directory), "--target", target.name, "--yes"])
    return out


def _quote_systemd(argv: list[str]) -> str:
    # systemd's ExecStart= splits like a shell (quotes, backslashes); `%` must be doubled
    return " ".join(shlex.quote(a).replace("%", "%%") for a in argv)


def render_units(spec: ClusterSpec, directory: Path, python: str, every: timedelta) -> Schedule:
    name = f"etcdforge-backup-{spec.name}"
    argv = commands(python, directory, spec)
    service = "\n".join(
        [
            "[Unit]",
            f"Description=etcdforge backup of etcd cluster {spec.name} ({directory})",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart={_quote_systemd(argv[0])}",
            *(f"ExecStartPost={_quote_systemd(a)}" for a in argv[1:]),
            "Nice=10",
            "IOSchedulingClass=idle",
            "UMask=0077",
            "",
        ]
    )
    timer = "\n".join(
        [
            "[Unit]",
            f"Description=etcdforge backup of etcd cluster {spec.name}, every {every}",
            "",
            "[Timer]",
            "OnBootSec=5min",
            f"OnUnitActiveSec={_seconds(every)}",
            "RandomizedDelaySec=60",
            "Persistent=true",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return Schedule(name, service.encode(), timer.encode(), cron_line(argv, every))


def cron_line(argv: list[list[str]], every: timedelta) -> str:
    minutes = int(every.total_seconds() // 60)
    if minutes < 60:
        when = f"*/{minutes} * * * *"
    elif minutes < 24 * 60:
        when = f"0 */{minutes // 60} * * *"
    else:
        when = "0 3 * * *"
    return f"{when} " + " && ".join(shlex.join(a) for a in argv)


def plan_schedule(schedule: Schedule, unit_dir: Path, *, systemd_runs: bool, user: bool) -> Plan:
    systemctl = ["systemctl", *(["--user"] if user else [])]
    steps = [
        Step(
            "schedule/service",
            "local",
            WriteFile(str(unit_dir / f"{schedule.name}.service"), schedule.service),
            "runs `backup now` to every target, then prunes each",
        ),
        Step(
            "schedule/timer",
            "local",
            WriteFile(str(unit_dir / f"{schedule.name}.timer"), schedule.timer),
            "when it runs",
        ),
    ]
    warnings: tuple[str, ...] = ()
    if systemd_runs:
        steps += [
            Step(
                "schedule/daemon-reload",
                "local",
                LocalCommand((*systemctl, "daemon-reload")),
                "units changed",
            ),
            Step(
                "schedule/enable",
                "local",
                LocalCommand((*systemctl, "enable", "--now", f"{schedule.name}.timer")),
                "start the timer, and at boot",
            ),
        ]
    else:
        warnings = (
            "systemd does not run on this machine: the units are written but not started; "
            f"use this crontab line instead: {schedule.cron}",
        )
    return Plan("backup-schedule", tuple(steps), warnings)


async def schedule(
    directory: Path,
    *,
    every: str = "1h",
    install: bool = False,
    unit_dir: Path | None = None,
    user: bool | None = None,
    python: str | None = None,
    reporter: Reporter | None = None,
) -> tuple[Schedule, Plan]:
    """Render the units (and with ``install``, write and start them through one plan)."""
    import os
    import sys

    from etcdforge.executor import execute
    from etcdforge.runtime.factory import make_runtime
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(directory)
    units = render_units(spec, ws.root.resolve(), python or sys.executable, parse_every(every))
    as_user = (os.geteuid() != 0) if user is None else user
    target_dir = unit_dir or (
        Path.home() / ".config/systemd/user" if as_user else Path("/etc/systemd/system")
    )
    systemd_runs = unit_dir is None and Path("/run/systemd/system").is_dir()
    plan = plan_schedule(units, target_dir, systemd_runs=systemd_runs, user=as_user)
    if install:
        await execute(plan, make_runtime(spec, ws, {}), reporter)
    return units, plan
