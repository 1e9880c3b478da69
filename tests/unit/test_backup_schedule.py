"""`backup schedule`: the systemd units (checked by `systemd-analyze verify`), the crontab line, and the
plan that installs them (written, then daemon-reload and enable only where systemd runs)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from specs import HOSTS3

from etcdforge.errors import SpecError
from etcdforge.plan import LocalCommand
from etcdforge.spec import DirTarget, S3Target, dump_spec
from etcdforge.verbs.backup import schedule as sched

SPEC = HOSTS3.model_copy(
    update={
        "backup": HOSTS3.backup.model_copy(
            update={
                "targets": (
                    DirTarget(name="local", kind="dir", path="/srv/backups"),
                    S3Target(name="offsite", kind="s3", bucket="etcd-backups"),
                )
            }
        )
    }
)


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "my cluster"  # a space: quoting must hold
    ws.mkdir()
    (ws / "cluster.yaml").write_text(dump_spec(SPEC))
    return ws


def test_units_back_up_to_every_target_then_prune_each(tmp_path: Path) -> None:
    units = sched.render_units(SPEC, tmp_path / "my cluster", "/usr/bin/python3", timedelta(hours=1))
    service = units.service.decode()
    assert (
        f"ExecStart=/usr/bin/python3 -m etcdforge backup now --dir '{tmp_path}/my cluster' --all-targets"
        in service
    )
    assert service.count("ExecStartPost=") == 2 and "--target offsite --yes" in service
    assert "Type=oneshot" in service and "UMask=0077" in service
    timer = units.timer.decode()
    assert (
        "OnUnitActiveSec=3600s" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    )
    assert units.cron.startswith("0 */1 * * * ") and " && " in units.cron


@pytest.mark.parametrize(
    ("every", "cron"), [("15m", "*/15 * * * *"), ("6h", "0 */6 * * *"), ("24h", "0 3 * * *")]
)
def test_cron_line_matches_the_interval(every: str, cron: str) -> None:
    units = sched.render_units(SPEC, Path("/ws"), "python3", sched.parse_every(every))
    assert units.cron.startswith(cron + " ")


@pytest.mark.parametrize("every", ["1m", "soon", "-1h"])
def test_bad_intervals_are_refused(every: str) -> None:
    with pytest.raises(SpecError):
        sched.parse_every(every)


def test_install_writes_units_that_systemd_accepts(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    unit_dir = tmp_path / "units"
    units, plan = asyncio.run(sched.schedule(ws, every="30m", install=True, unit_dir=unit_dir, user=False))
    service, timer = unit_dir / f"{units.name}.service", unit_dir / f"{units.name}.timer"
    assert service.read_bytes() == units.service and timer.read_bytes() == units.timer
    # not the machine's unit directory: nothing is started, and the plan says so
    assert not any(isinstance(s.action, LocalCommand) for s in plan.steps)
    assert plan.warnings and "crontab" in plan.warnings[0]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(service), str(timer)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if units.name in line and "Failed to" not in line  # no systemd running here: it cannot load deps
    ]
    assert not problems, problems
    assert sys.executable in service.read_text()


def test_where_systemd_runs_the_plan_reloads_and_enables_the_timer() -> None:
    units = sched.render_units(SPEC, Path("/ws"), "python3", timedelta(hours=1))
    plan = sched.plan_schedule(units, Path("/etc/systemd/system"), systemd_runs=True, user=False)
    commands = [s.action.argv for s in plan.steps if isinstance(s.action, LocalCommand)]
    assert commands == [
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "--now", f"{units.name}.timer"),
    ]
    user = sched.plan_schedule(units, Path("/home/u/.config/systemd/user"), systemd_runs=True, user=True)
    assert all(
        s.action.argv[:2] == ("systemctl", "--user") for s in user.steps if isinstance(s.action, LocalCommand)
    )
