"""The maintenance verbs: observe (every member's status, a linearizable read through each, the
alarms) → one plan (:mod:`~etcdforge.verbs.maintenance.plan`) → the one executor. No SSH is needed:
everything goes through etcd's API with the admin certificate."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from etcdforge.errors import EtcdError, PlanError
from etcdforge.executor import Reporter, execute
from etcdforge.observe.cluster import ClusterView, MemberView, observe_cluster
from etcdforge.plan import Plan
from etcdforge.runtime.factory import make_runtime
from etcdforge.spec import ClusterSpec
from etcdforge.verbs.maintenance.plan import (
    HashReport,
    plan_compact,
    plan_defrag,
    plan_disarm,
    plan_space_recover,
    require_quorum,
)
from etcdforge.verbs.up.run import locked_workspace
from etcdforge.workspace import Workspace, admin_client, load_workspace


async def observe(spec: ClusterSpec, ws: Workspace) -> ClusterView:
    """The one observation of the cluster (members, health, leader, versions, sizes, alarms)."""
    return await observe_cluster(spec, ws)


@dataclass(frozen=True)
class MaintenanceResult:
    plan: Plan
    view: ClusterView
    notes: tuple[str, ...] = ()
    executed: bool = False


async def run_plan(
    spec: ClusterSpec, ws: Workspace, plan: Plan, reporter: Reporter | None, dry_run: bool
) -> bool:
    """Run a plan of cluster API steps through the one executor (not for a dry run or an empty plan);
    whether it ran."""
    if dry_run or plan.empty:
        return False
    await execute(plan, make_runtime(spec, ws, {}), reporter)
    return True


async def defrag(
    directory: Path,
    *,
    member: str | None = None,
    if_fragmented: float = 0.0,
    dry_run: bool = False,
    reporter: Reporter | None = None,
) -> MaintenanceResult:
    """Defragment every member (or one), followers first, the leader last, gated on health."""
    with locked_workspace(directory) as (ws, spec):
        view = await observe(spec, ws)
        plan, skipped = plan_defrag(view, only=member, min_pct=if_fragmented)
        executed = await run_plan(spec, ws, plan, reporter, dry_run)
        return MaintenanceResult(plan, view, tuple(f"skipped {s}" for s in skipped), executed)


async def compact(
    directory: Path,
    *,
    revision: int | None = None,
    keep: timedelta | None = None,
    dry_run: bool = False,
    reporter: Reporter | None = None,
    now: datetime | None = None,
) -> MaintenanceResult:
    """Compact history up to ``revision``, or keep ``keep`` of it: up to the revision of the newest
    verified backup at least that old (etcd keeps no clock per revision; a backup's manifest does)."""
    if (revision is None) == (keep is None):
        raise PlanError("give one of --revision N or --keep DURATION")
    with locked_workspace(directory) as (ws, spec):
        view = await observe(spec, ws)
        notes: tuple[str, ...] = ()
        if keep is not None:
            require_quorum(view, "a compaction")
            revision, note = await _revision_before(directory, view, keep, now or datetime.now(UTC))
            notes = (note,)
        assert revision is not None
        plan = plan_compact(view, revision)
        executed = await run_plan(spec, ws, plan, reporter, dry_run)
        return MaintenanceResult(plan, view, notes, executed)


async def _revision_before(
    directory: Path, view: ClusterView, keep: timedelta, now: datetime
) -> tuple[int, str]:
    from etcdforge.verbs.backup.run import list_backups

    cluster_id = f"{view.cluster_id:x}"
    cutoff = now - keep
    found = [
        e.manifest
        for listing in await list_backups(directory)
        for e in listing.entries
        if e.ok and e.manifest is not None and e.manifest.cluster_id == cluster_id and e.taken <= cutoff
    ]
    if not found:
        raise PlanError(
            f"no backup of this cluster is at least {keep} old, so no revision marks that time "
            "(etcd keeps no clock per revision)",
            hint="compact with --revision N, or take backups (`etcdforge backup now`) and try later",
        )
    best = max(found, key=lambda m: m.taken)
    return (
        best.revision,
        f"revision {best.revision} is backup {best.id}'s, taken {best.taken:%Y-%m-%d %H:%M}Z",
    )


async def alarms(directory: Path, *, check_data: bool = False) -> tuple[ClusterView, HashReport | None]:
    """The active alarms; with a CORRUPT alarm (or ``check_data``) every member's data compared too."""
    ws, spec = load_workspace(directory)
    view = await observe(spec, ws)
    report = None
    if check_data or any(a == "CORRUPT" for _, a in view.alarms):
        report = await compare_data(spec, ws, view)
    return view, report


async def compare_data(spec: ClusterSpec, ws: Workspace, view: ClusterView | None = None) -> HashReport:
    """HashKV of every member at one revision: the revision every answering member has applied."""
    view = view or await observe(spec, ws)
    answering = [m for m in view.members if m.revision > 0]
    if not answering:
        return HashReport(0, {})
    revision = min(m.revision for m in answering)
    async with admin_client(spec, ws, timeout=30.0) as client:

        async def one(m: MemberView) -> tuple[str, tuple[int, int]] | None:
            try:
                h = await client.hash_kv(m.url, revision)
            except EtcdError:
                return None
            return m.name, (h.hash, h.compact_revision)

        found = await asyncio.gather(*(one(m) for m in answering))
    return HashReport(revision, dict(f for f in found if f is not None))


async def disarm(
    directory: Path,
    *,
    kinds: tuple[str, ...] = ("NOSPACE",),
    dry_run: bool = False,
    reporter: Reporter | None = None,
) -> MaintenanceResult:
    """Disarm alarms. CORRUPT only when every member's data agrees (else the corrupt one is named)."""
    with locked_workspace(directory) as (ws, spec):
        view = await observe(spec, ws)
        notes: tuple[str, ...] = ()
        if "CORRUPT" in kinds and any(a == "CORRUPT" for _, a in view.alarms):
            report = await compare_data(spec, ws, view)
            if not report.agree() or len(report.hashes) < len(spec.members):
                raise PlanError(
                    f"not disarming CORRUPT: {report.verdict()}",
                    hint="replace the member named, then disarm",
                )
            notes = (report.verdict(),)
        plan = plan_disarm(view, kinds)
        executed = await run_plan(spec, ws, plan, reporter, dry_run)
        return MaintenanceResult(plan, view, notes, executed)


async def space_recover(
    directory: Path, *, dry_run: bool = False, reporter: Reporter | None = None
) -> MaintenanceResult:
    """NOSPACE: compact, defragment every member, disarm, prove that writes work again."""
    with locked_workspace(directory) as (ws, spec):
        view = await observe(spec, ws)
        plan, warnings = plan_space_recover(view)
        executed = await run_plan(spec, ws, plan, reporter, dry_run)
        return MaintenanceResult(plan, view, tuple(warnings), executed)
