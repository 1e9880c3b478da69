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
    AddLearner,
    IssueCerts,
    MoveLeader,
    Plan,
    PromoteLearner,
    RemoveMember,
    Step,
    WaitHealthy,
)
from etcdforge.runtime import supervisor
from etcdforge.runtime.control import ControlFiles
from etcdforge.runtime.core import Runtime as CoreRuntime
from etcdforge.runtime.factory import open_runtime, placement
from etcdforge.spec import ClusterSpec, MemberSpec, MemberSsh
from etcdforge.verbs.backup.run import safety_steps
from etcdforge.verbs.member import steps as steps_mod
from etcdforge.verbs.member.plan import (
    decide_add,
    decide_remove,
    next_local_address,
    with_member,
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


async def _settled(
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
    view, decision = await _settled(spec, ws, view, lambda v: decide_add(spec, v, member))
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
    peer = topology.peer_url(new_spec, m)
    async with open_runtime(
        new_spec, ws, [m.name], accept_new_host_keys=accept_new_host_keys, etcd_bin=etcd_bin
    ) as runtime:
        hosts = runtime.hosts
        # a safety snapshot first, unless the change is under way already (a resumed add)
        first, safety_warnings = await safety_steps(
            spec, ws, skip=no_snapshot or steps_mod.read_record(ws) is not None or not decision.register
        )
        pki = steps_mod.pki_step(new_spec, ws)
        if pki is not None:
            first.append(pki)
        if record:
            first.append(
                steps_mod.record_step(
                    ws, ChangeRecord("member-add", m), "names the new member until etcd does (resumable)"
                )
            )
        if decision.register:
            first.append(
                Step("cluster/add-learner", "cluster", AddLearner(m.name, peer), "a learner: no quorum risk")
            )
        tail = [
            Step(f"{m.name}/promote", "cluster", PromoteLearner(m.name, peer, timeout), "once it is in sync"),
            *steps_mod.spec_steps(ws, new_spec, f"{m.name} joined"),
            steps_mod.clear_record_step(ws),
            Step(
                "cluster/wait-healthy",
                "cluster",
                WaitHealthy(
                    tuple(x.name for x in new_spec.members),
                    timeout,
                    need=topology.quorum(len(new_spec.members)),
                ),
                "a healthy quorum, the new member included",
            ),
        ]
        if not decision.promote:
            tail = tail[1:]  # already a voter: only the workspace and health remain

        issued: frozenset[str] = frozenset()
        if pki is not None and isinstance(pki.action, IssueCerts):
            issued = frozenset(n for n, _ in pki.action.items)
        deploy = (
            await steps_mod.deploy_steps(new_spec, ws, m, hosts, etcd_bin=etcd_bin, issued=issued)
            if decision.deploy
            else []
        )
        # one plan: the new member's certificates are issued by its first step and installed by later
        # ones as deferred values, so what --dry-run prints is what runs
        warnings = decision.warnings + safety_warnings
        plan = Plan("member-add", (*first, *deploy, *tail), warnings)
        if dry_run:
            return MemberResult(plan, warnings)
        try:
            await execute(plan, runtime, reporter)
        except EtcdforgeError as exc:
            if isinstance(exc, StepError) and exc.step_id in {s.id for s in first}:
                raise  # nothing of the new member runs yet: a re-run goes on from here
            if await _joined(new_spec, ws, m):
                raise  # it is a voter: nothing to roll back; a re-run finishes the rest
            try:
                await roll_back_add(new_spec, ws, m, runtime, reporter, clear_record=record)
            except EtcdforgeError as again:
                raise PlanError(
                    f"{m.name} did not join ({exc}), and rolling back failed too: {again}",
                    hint=f"check `etcdforge members`; remove it with `etcdforge member remove {m.name}`",
                ) from exc
            raise PlanError(
                f"{m.name} did not join: {exc}",
                hint="rolled back: removed from the cluster, stopped, its data wiped",
            ) from exc
        return MemberResult(plan, decision.warnings)


async def _joined(spec: ClusterSpec, ws: Workspace, member: MemberSpec) -> bool:
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
    _, decision = await _settled(
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
            steps += steps_mod.spec_steps(ws, decision.new_spec, f"{name} removed")
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
    """Remove a dead or corrupted member, wipe it, and add it back (as a learner, then promoted), under
    one lock. Works on a member that cannot start (corrupt data, missing data, host gone): only a healthy
    quorum of the others is needed. A re-run after an interruption resumes: the record names the member
    and the ID it had, so a removal already done is not done again."""
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
        removed: MemberResult | None = None
        after = spec
        view = await steps_mod.observe_view(spec, ws)
        # an interrupted replace: the old member is known by its ID (the new one has the same name);
        # once the cluster lists the new member's peer URL without the old ID, the add has begun and
        # the removal (stop, wipe) is done — it must never touch the new member's data
        old_id = resumed.old_id if resumed is not None else None
        old_gone = old_id is not None and not any(m.id == old_id for m in view.members)
        adding = old_gone and view.by_peer_url(topology.peer_url(spec, target)) is not None
        if not adding:
            removed, after = await _remove(
                spec, ws, name, keep_data=False, timeout=timeout, dry_run=dry_run,
                accept_new_host_keys=accept_new_host_keys, reporter=reporter, confirm=confirm,
                replace_with=target, old_id=old_id, no_snapshot=no_snapshot or resumed is not None,
            )  # fmt: skip
        if dry_run:
            steps = removed.plan.steps if removed else ()
            warnings = removed.warnings if removed else ()
            return MemberResult(
                Plan(verb="member-replace", steps=steps, warnings=warnings),
                warnings,
                f"then {name} is added back on {target.address} as a learner and promoted",
            )
        added = await _add(
            after, ws, name, address=target.address, dns_names=target.dns_names, ssh=target.ssh,
            etcd_bin=None, timeout=timeout, dry_run=False, accept_new_host_keys=accept_new_host_keys,
            reporter=reporter, record=False,
        )  # fmt: skip
        steps = (*(removed.plan.steps if removed else ()), *added.plan.steps)
        warnings = (removed.warnings if removed else ()) + added.warnings
        return MemberResult(Plan(verb="member-replace", steps=steps), warnings)
