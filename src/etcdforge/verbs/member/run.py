"""``member add``, ``member remove`` and ``member replace``: observe → plan → execute, in both modes.

The cluster itself is the record of a change in flight: a learner (or an added, never started member)
with the new member's peer URL is our own half-done ``add``; a spec member the cluster no longer lists is
our own half-done ``remove``. So a re-run after an interruption (even SIGKILL) resumes where the last run
stopped, and never starts a second change. The spec is written last.

If a new member never joins (bad port, bad certificate, dead host), ``add`` rolls back: it removes the
learner from the cluster, stops it and wipes its data, and says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from etcdforge import topology
from etcdforge.errors import EtcdforgeError, PlanError, StepError
from etcdforge.executor import Confirm, Reporter, execute
from etcdforge.observe.cluster import ClusterView
from etcdforge.plan import (
    MoveLeader,
    Plan,
    RemoveMember,
    Step,
    WaitHealthy,
)
from etcdforge.runtime import supervisor
from etcdforge.runtime.control import ControlFiles
from etcdforge.runtime.core import Runtime as CoreRuntime
from etcdforge.runtime.factory import connect_hosts, make_runtime, open_runtime, placement
from etcdforge.spec import ClusterSpec, MemberSpec, MemberSsh
from etcdforge.verbs.backup.run import safety_steps
from etcdforge.verbs.member import steps as steps_mod
from etcdforge.verbs.member.plan import (
    AddDecision,
    RemoveDecision,
    decide_add,
    decide_remove,
    next_local_address,
    with_member,
    without_member,
)
from etcdforge.verbs.member.steps import ChangeRecord
from etcdforge.verbs.up.run import locked_workspace, port_is_free
from etcdforge.workspace import Workspace

#: right after a member died (or the leader changed) the others hold an election, about one election
#: timeout, before linearizable reads — our health check — succeed again; a decision that fails only
#: because voters look unhealthy is asked again for this long before it is final
SETTLE_SECONDS = 10.0
SETTLE_POLL = 0.5

T = TypeVar("T")


async def settled(
    spec: ClusterSpec, ws: Workspace, view: ClusterView, decide: Callable[[ClusterView], T]
) -> tuple[ClusterView, T]:
    """``decide(view)``, re-observing while it refuses and some voter is unhealthy (a transient state),
    at most :data:`SETTLE_SECONDS`; then its last verdict stands."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            return view, decide(view)
        except PlanError:
            if not any(not m.healthy for m in view.voters) or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(SETTLE_POLL)
        view = await steps_mod.observe_view(spec, ws)


@dataclass(frozen=True)
class MemberResult:
    plan: Plan
    warnings: tuple[str, ...] = ()
    note: str = ""


async def add(
    directory: Path,
    name: str,
    *,
    address: str | None = None,
    dns_names: tuple[str, ...] = (),
    ssh: MemberSsh | None = None,
    etcd_bin: str | None = None,
    timeout: float = 120.0,
    dry_run: bool = False,
    accept_new_host_keys: bool = False,
    reporter: Reporter | None = None,
    no_snapshot: bool = False,
) -> MemberResult:
    with locked_workspace(directory) as (ws, spec):
        return await _add(
            spec, ws, name, address=address, dns_names=dns_names, ssh=ssh, etcd_bin=etcd_bin, timeout=timeout,
            dry_run=dry_run, accept_new_host_keys=accept_new_host_keys, reporter=reporter, record=True,
            no_snapshot=no_snapshot,
        )  # fmt: skip


async def _add(
    spec: ClusterSpec,
    ws: Workspace,
    name: str,
    *,
    address: str | None,
    dns_names: tuple[str, ...],
    ssh: MemberSsh | None,
    etcd_bin: str | None,
    timeout: float,
    dry_run: bool,
    accept_new_host_keys: bool,
    reporter: Reporter | None,
    record: bool,
    no_snapshot: bool = True,
) -> MemberResult:
    """``member add`` under the caller's lock. ``record``: keep its own record of the change in flight
    (``replace`` keeps its own instead, and only the clearing at the end is shared)."""
    view = await steps_mod.observe_view(spec, ws)
    existing = next((m for m in spec.members if m.name == name), None)
    if existing is not None:
        member = existing
    else:
        if address is None:
            if not placement(spec, ws).picks_addresses:
                raise PlanError("hosts mode needs --address for the new member")
            address = steps_mod.pending_address(ws, name) or next_local_address(
                spec, [steps_mod.host_of(u) for m in view.members for u in m.peer_urls], port_is_free
            )
        member = MemberSpec(name=name, address=address, dns_names=dns_names, ssh=ssh, joined=True)
    view, decision = await settled(spec, ws, view, lambda v: decide_add(spec, v, member))
    if decision.done:
        steps = (
            [] if existing is not None else steps_mod.spec_steps(ws, decision.new_spec, f"{name} is a member")
        )
        if steps_mod.read_record(ws) is not None:
            steps.append(steps_mod.clear_record_step(ws))
        plan = Plan(verb="member-add", steps=tuple(steps))
        if not dry_run:
            await execute(plan, ControlFiles(), reporter)
        return MemberResult(plan, decision.warnings, f"{name} is already a voting member; nothing to do")
    new_spec, m = decision.new_spec, decision.member
    async with open_runtime(
        new_spec, ws, [m.name], accept_new_host_keys=accept_new_host_keys, etcd_bin=etcd_bin
    ) as runtime:
        # a safety snapshot first, unless the change is under way already (a resumed add)
        safety, safety_warnings = await safety_steps(
            spec, ws, skip=no_snapshot or steps_mod.read_record(ws) is not None or not decision.register
        )
        record_steps = (
            [
                steps_mod.record_step(
                    ws, ChangeRecord("member-add", m), "names the new member until etcd does (resumable)"
                )
            ]
            if record
            else []
        )
        first, deploy, tail = await steps_mod.add_steps(
            ws, decision, runtime.hosts, etcd_bin=etcd_bin, timeout=timeout, before=record_steps
        )
        warnings = decision.warnings + safety_warnings
        plan = Plan("member-add", (*safety, *first, *deploy, *tail), warnings)
        if dry_run:
            return MemberResult(plan, warnings)
        await execute_add(
            plan, runtime, new_spec, ws, m, {s.id for s in (*safety, *first)}, reporter, clear_record=record
        )
        return MemberResult(plan, decision.warnings)


async def execute_add(
    plan: Plan,
    runtime: CoreRuntime,
    new_spec: ClusterSpec,
    ws: Workspace,
    m: MemberSpec,
    before_member: set[str],
    reporter: Reporter | None,
    *,
    clear_record: bool,
    confirm: Confirm | None = None,
) -> None:
    """Run a plan that adds ``m``; if it fails once the new member is registered and before it is a
    voter, roll the new member back (``before_member``: the steps before anything of it exists)."""
    try:
        await execute(plan, runtime, reporter, confirm=confirm)
    except EtcdforgeError as exc:
        if isinstance(exc, StepError) and exc.step_id in before_member:
            raise  # nothing of the new member runs yet: a re-run goes on from here
        if not isinstance(exc, StepError) or await joined(new_spec, ws, m):
            raise  # it is a voter (or nothing ran): nothing to roll back; a re-run finishes the rest
        try:
            await roll_back_add(new_spec, ws, m, runtime, reporter, clear_record=clear_record)
        except EtcdforgeError as again:
            raise PlanError(
                f"{m.name} did not join ({exc}), and rolling back failed too: {again}",
                hint=f"check `etcdforge members`; remove it with `etcdforge member remove {m.name}`",
            ) from exc
        raise PlanError(
            f"{m.name} did not join: {exc}",
            hint="rolled back: removed from the cluster, stopped, its data wiped",
        ) from exc


async def joined(spec: ClusterSpec, ws: Workspace, member: MemberSpec) -> bool:
    """True if the cluster lists ``member`` as a started voter (so a failure after that is no reason
    to take it out again)."""
    try:
        view = await steps_mod.observe_view(spec, ws)
    except EtcdforgeError:
        return False
    mine = view.by_peer_url(topology.peer_url(spec, member))
    return mine is not None and mine.started and not mine.is_learner


async def roll_back_add(
    spec: ClusterSpec,
    ws: Workspace,
    member: MemberSpec,
    runtime: CoreRuntime,
    reporter: Reporter | None,
    *,
    clear_record: bool,
) -> Plan:
    """Take a member that never joined out again: remove it from the cluster, stop it, wipe its data
    (one plan, through ``runtime``'s cluster port and services). A ``replace``'s record stays
    (``clear_record`` False), so re-running the replace adds it again. Returns the plan it ran."""
    from etcdforge.runtime.cluster_ops import find_by_peer_url

    steps: list[Step] = []
    async with runtime.cluster(5.0) as client:
        registered = await find_by_peer_url(client, topology.peer_url(spec, member))
    if registered is not None:
        steps.append(
            Step(
                f"{member.name}/roll-back",
                "cluster",
                RemoveMember(member.name, registered.id),
                "it never joined",
            )
        )
    steps += steps_mod.stop_steps(
        spec, ws, member.name, keep_data=False, reachable=member.name in runtime.hosts, ask=False
    )
    if clear_record:
        steps.append(steps_mod.clear_record_step(ws))
    plan = Plan(verb="member-remove", steps=tuple(steps))
    await execute(plan, runtime, reporter)
    return plan


async def remove(
    directory: Path,
    name: str,
    *,
    keep_data: bool = False,
    timeout: float = 120.0,
    dry_run: bool = False,
    accept_new_host_keys: bool = False,
    reporter: Reporter | None = None,
    confirm: Confirm | None = None,
    no_snapshot: bool = False,
) -> MemberResult:
    """Remove NAME. Wiping its data is destructive: ``confirm`` must say yes (or pass ``keep_data``)."""
    with locked_workspace(directory) as (ws, spec):
        result, _ = await _remove(
            spec, ws, name, keep_data=keep_data, timeout=timeout, dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys, reporter=reporter, confirm=confirm,
            no_snapshot=no_snapshot,
        )  # fmt: skip
        return result


async def _remove(
    spec: ClusterSpec,
    ws: Workspace,
    name: str,
    *,
    keep_data: bool,
    timeout: float,
    dry_run: bool,
    accept_new_host_keys: bool,
    reporter: Reporter | None,
    confirm: Confirm | None,
    replace_with: MemberSpec | None = None,
    old_id: int | None = None,
    no_snapshot: bool = True,
) -> tuple[MemberResult, ClusterSpec]:
    """``member remove`` under the caller's lock; also the first half of ``replace`` (``replace_with``:
    the member added back, recorded so an interrupted replace resumes). Returns the spec after it.

    Order: record, hand over leadership, remove in etcd, write the spec (it follows etcd at once), stop
    and wipe the member, clear the record, then gate on a healthy quorum of the rest. A re-run after a
    kill at any point finds the member gone from etcd or the spec and finishes what is left.
    """
    record = steps_mod.read_record(ws)
    in_spec = any(m.name == name for m in spec.members)
    recorded = record.member if record is not None and record.member.name == name else None
    known = spec.member(name) if in_spec else recorded
    # a local member the spec and etcd no longer list, but whose process or data is still here
    leftover = placement(spec, ws).members_here and (
        supervisor.running_pid(ws.member_pid(name)) is not None
        or Path(ws.member_paths(name).data_dir).exists()
    )
    _, decision = await settled(
        spec,
        ws,
        await steps_mod.observe_view(spec, ws),
        lambda v: decide_remove(
            spec, v, name, replacing=replace_with is not None, known=known, only_id=old_id
        ),
    )
    if decision.member_id is None and known is None and not leftover:
        plan = Plan(verb="member-remove", steps=())
        return MemberResult(plan, note=f"{name} is not a member; nothing to do"), spec
    # the runtime reaches the member's host through the spec: a recorded member is added back for it
    rt_spec = spec if in_spec or known is None else with_member(spec, known)
    async with open_runtime(
        rt_spec,
        ws,
        [name] if known is not None or leftover else [],
        accept_new_host_keys=accept_new_host_keys,
        required=False,
    ) as runtime:
        hosts = runtime.hosts
        reachable = name in hosts
        # a safety snapshot first, unless the change is under way already (a resumed removal)
        steps, safety_warnings = await safety_steps(
            spec, ws, skip=no_snapshot or record is not None or decision.member_id is None
        )
        if known is not None:
            op: Literal["member-remove", "member-replace"] = (
                "member-replace" if replace_with else "member-remove"
            )
            change = ChangeRecord(op, known, replace_with, decision.member_id or old_id or 0)
            steps.append(steps_mod.record_step(ws, change, "an interrupted removal finishes from it"))
        steps += _removal_steps(spec, ws, decision)
        steps += steps_mod.stop_steps(rt_spec, ws, name, keep_data=keep_data, reachable=reachable)
        if replace_with is None and (known is not None or record is not None):
            steps.append(steps_mod.clear_record_step(ws))
        remaining = tuple(m.name for m in decision.new_spec.members if m.name != name)
        if remaining:
            steps.append(
                Step(
                    "cluster/wait-healthy",
                    "cluster",
                    WaitHealthy(remaining, timeout, need=topology.quorum(len(remaining))),
                    "a healthy quorum of the rest",
                )
            )
        warnings = (
            decision.warnings
            + safety_warnings
            + (
                ()
                if reachable
                else (f"{name}'s host is unreachable: stop and wipe it by hand before reusing it",)
            )
        )
        plan = Plan(verb="member-remove", steps=tuple(steps), warnings=warnings)
        if not dry_run:
            await execute(plan, runtime, reporter, confirm=confirm)
        return MemberResult(plan, warnings), decision.new_spec


def _removal_steps(spec: ClusterSpec, ws: Workspace, decision: RemoveDecision, tag: str = "") -> list[Step]:
    """Hand leadership over (if it leads), remove it in etcd, and make the spec follow etcd at once."""
    name = decision.member
    steps: list[Step] = []
    if decision.move_leader_to is not None:
        steps.append(
            Step(
                f"{name}/move-leader",
                name,
                MoveLeader(decision.move_leader_to),
                f"{name} leads; hand over first",
            )
        )
    if decision.member_id is not None:
        steps.append(
            Step(f"{name}/remove", "cluster", RemoveMember(name, decision.member_id), "quorum is kept")
        )
    if decision.new_spec != spec:
        steps += steps_mod.spec_steps(ws, decision.new_spec, f"{name} removed", tag=tag)
    return steps


async def replace(
    directory: Path,
    name: str,
    *,
    address: str | None = None,
    timeout: float = 120.0,
    dry_run: bool = False,
    accept_new_host_keys: bool = False,
    reporter: Reporter | None = None,
    confirm: Confirm | None = None,
    no_snapshot: bool = False,
) -> MemberResult:
    """Remove a dead or corrupted member, wipe it, and add it back (as a learner, then promoted): one
    plan, under one lock. Works on a member that cannot start (corrupt data, missing data, host gone):
    only a healthy quorum of the others is needed. A re-run after an interruption resumes: the record
    names the member and the ID it had, so a removal already done is not done again."""
    with locked_workspace(directory) as (ws, spec):
        record = steps_mod.read_record(ws)
        resumed = (
            record
            if record is not None and record.op == "member-replace" and record.member.name == name
            else None
        )
        if any(m.name == name for m in spec.members):
            old = spec.member(name)
        elif resumed is not None:
            old = resumed.member
        else:
            raise PlanError(f"no member named {name!r}", hint="`etcdforge status` lists them")
        target = (
            resumed.target if resumed and resumed.target and address is None else None
        ) or old.model_copy(update={"address": address or old.address, "joined": True})
        # an interrupted replace: the old member is known by its ID (the new one has the same name);
        # once the cluster lists the new member's peer URL without the old ID, the add has begun and
        # the removal (stop, wipe) is done — it must never touch the new member's data
        old_id = resumed.old_id if resumed is not None else None

        def decide(view: ClusterView) -> tuple[RemoveDecision | None, AddDecision]:
            old_gone = old_id is not None and not any(m.id == old_id for m in view.members)
            if old_gone and view.by_peer_url(topology.peer_url(spec, target)) is not None:
                listed = any(x.name == name and x.address == target.address for x in spec.members)
                return None, decide_add(spec if listed else without_member(spec, name), view, target)
            removal = decide_remove(spec, view, name, replacing=True, known=old, only_id=old_id)
            # the add is planned against the cluster as the removal leaves it
            after = ClusterView(tuple(m for m in view.members if m.id != removal.member_id), view.reachable)
            return removal, decide_add(removal.new_spec, after, target)

        _, (removal, addition) = await settled(spec, ws, await steps_mod.observe_view(spec, ws), decide)
        new_spec, m = addition.new_spec, addition.member
        here = placement(spec, ws).members_here
        # the old member's host, when the new one is another: its own key in the runtime's hosts
        moved = removal is not None and old.address != m.address and not here
        old_key = f"{name}@{old.address}" if moved else name
        async with (
            connect_hosts(new_spec, ws, [name], accept_new_host_keys=accept_new_host_keys) as new_hosts,
            connect_hosts(
                with_member(without_member(spec, name), old), ws, [name] if moved else [],
                accept_new_host_keys=accept_new_host_keys, required=False,
            ) as old_hosts,
        ):  # fmt: skip
            hosts = {**new_hosts, **({old_key: old_hosts[name]} if name in old_hosts else {})}
            runtime = make_runtime(new_spec, ws, hosts)
            steps: list[Step] = []
            warnings: tuple[str, ...] = ()
            if removal is not None:
                safety, safety_warnings = await safety_steps(
                    spec, ws, skip=no_snapshot or resumed is not None or removal.member_id is None
                )
                steps += safety
                change = ChangeRecord("member-replace", old, target, removal.member_id or old_id or 0)
                steps.append(steps_mod.record_step(ws, change, "an interrupted replace finishes from it"))
                steps += _removal_steps(spec, ws, removal, tag=":removed")
                # (a stop and wipe only on a host this run reaches: a host that is gone has nothing to stop)
                steps += steps_mod.stop_steps(
                    spec, ws, old_key, keep_data=False, reachable=old_key in runtime.hosts
                )
                warnings = removal.warnings + safety_warnings
                if old_key not in runtime.hosts:
                    warnings += (
                        f"{name}'s old host is unreachable: stop and wipe it by hand before reusing it",
                    )
            before = {s.id for s in steps}
            if addition.done:
                steps += [
                    *(steps_mod.spec_steps(ws, new_spec, f"{name} is a member") if new_spec != spec else []),
                    steps_mod.clear_record_step(ws),
                ]
                plan = Plan("member-replace", tuple(steps), warnings)
                if not dry_run:
                    await execute(plan, runtime, reporter, confirm=confirm)
                return MemberResult(
                    plan, warnings, f"{name} is already replaced and a voting member; nothing to do"
                )
            # the new member on the old one's host is deployed as that host will be once it is stopped
            predicted = steps_mod.stopped_host if removal is not None and not moved else None
            first, deploy, tail = await steps_mod.add_steps(
                ws, addition, runtime.hosts, etcd_bin=None, timeout=timeout, host_predicted=predicted
            )
            warnings += addition.warnings
            plan = Plan("member-replace", (*steps, *first, *deploy, *tail), warnings)
            if dry_run:
                return MemberResult(plan, warnings)
            await execute_add(
                plan, runtime, new_spec, ws, m, before | {s.id for s in first}, reporter,
                clear_record=False, confirm=confirm,
            )  # fmt: skip
            return MemberResult(plan, warnings)
