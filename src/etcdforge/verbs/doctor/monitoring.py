"""``etcdforge monitoring --prometheus DIR``: one plan of file writes (the rendering is
:mod:`etcdforge.monitoring`), shown by ``--dry-run`` and run by the one executor."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from etcdforge import monitoring
from etcdforge.executor import Reporter
from etcdforge.plan import Plan, Step, WriteFile
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace

RULES_FILE = "etcdforge-rules.yml"


def etcdforge_executable() -> tuple[str, ...]:
    """The etcdforge command the exporter's unit runs: the one on PATH, else this interpreter's module."""
    found = shutil.which("etcdforge")
    return (str(Path(found).resolve()),) if found else (sys.executable, "-m", "etcdforge")


def _owner(path: Path) -> str:
    import pwd

    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError):
        return "root"


def plan_monitoring(
    spec: ClusterSpec,
    ws: Workspace,
    out: Path,
    *,
    exporter: str,
    remote_write: str | None,
    etcdforge: tuple[str, ...],
) -> Plan:
    out = out.resolve()
    files: list[tuple[str, bytes, str]] = [
        ("prometheus.yml", monitoring.scrape_config(spec, exporter, rules_file=RULES_FILE), "scrape config"),
        (RULES_FILE, monitoring.alert_rules(), "alert rules"),
        (
            "etcdforge-exporter.service",
            monitoring.exporter_unit(etcdforge, str(ws.root.resolve()), exporter, _owner(ws.root)),
            "the exporter's systemd unit",
        ),
    ]
    if spec.on_own_hosts:
        files += [
            (f"agent-{m.name}.yml", monitoring.agent_config(spec, m, remote_write), f"agent on {m.name}")
            for m in spec.members
        ]
    steps = tuple(
        Step(f"monitoring/{name}", "local", WriteFile(str(out / name), data, 0o644), why)
        for name, data, why in files
    )
    return Plan("monitoring", steps)


async def write(plan: Plan, reporter: Reporter | None, dry_run: bool) -> bool:
    """Run the plan (files on this machine only) through the one executor; whether it ran."""
    from etcdforge.executor import execute
    from etcdforge.runtime.control import ControlFiles

    if dry_run or plan.empty:
        return False
    await execute(plan, ControlFiles(), reporter)
    return True
