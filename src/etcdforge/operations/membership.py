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
from typing import TypeVar

from etcdforge import topology
from etcdforge.errors import EtcdforgeError, PlanError
from etcdforge.execute import Reporter, Runtime, execute
from etcdforge.hosts.base import Host
from etcdforge.operations import membership_steps as steps_mod
from etcdforge.operations.lifecycle import port_is_free, workspace_lock
from etcdforge.operations.membership_plan import (
    ClusterView,
    decide_add,
    decide_remove,
    next_local_address,
)
from etcdforge.plan import (
    AddLearner,
    MoveLeader,
    Plan,
    PromoteLearner,
    RemoveMember,
    Step,
    WaitHealthy,
    WriteFile,
)
from etcdforge.spec import ClusterSpec, MemberSpec, MemberSsh, dump_spec
from etcdforge.workspace import Workspace, admin_client, load_workspace

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
) -> MemberResult:
    ws, spec = load_workspace(directory)
    with workspace_lock(ws):
        view = await steps_mod.observe_view(spec, ws)
        existing = next((m for m in spec.members if m.name == name), None)
        if existing is not None:
            member = existing
        else:
            if address is None:
                if spec.mode != "local":
                    raise PlanError("hosts mode needs --address for the new member")
                address = steps_mod.pending_address(ws, name) or next_local_address(
                    spec, [steps_mod.host_of(u) for m in view.members for u in m.peer_urls], port_is_free
                )
            member = MemberSpec(name=name, address=address, dns_names=dns_names, ssh=ssh, joined=True)
        view, decision = await _settled(spec, ws, view, lambda v: decide_add(spec, v, member))
        if decision.done:
            steps = (
                []
                if existing is not None
                else steps_mod.spec_steps(ws, decision.new_spec, f"{name} is already a member")
            )
            plan = Plan(verb="member-add", steps=tuple(steps))
            if not dry_run:
                await execute(plan, _LocalFiles(), reporter)
            return MemberResult(plan, decision.warnings, f"{name} is already a voting member")
        new_spec, m = decision.new_spec, decision.member
        peer = topology.peer_url(new_spec, m)
        async with steps_mod.runtime_for(
            new_spec, ws, [m.name], accept_new_host_keys=accept_new_host_keys
        ) as (
            runtime,
            hosts,
        ):
            first: list[Step] = []
            pki = steps_mod.pki_step(new_spec, ws)
            if pki is not None:
                first.append(pki)
            if decision.register:
                first.append(
                    Step(
                        "cluster/add-learner",
                        "cluster",
                        AddLearner(m.name, peer),
                        "a learner: no quorum risk",
                    )
                )
            tail = [
                Step(
                    f"{m.name}/promote",
                    "cluster",
                    PromoteLearner(m.name, peer, timeout),
                    "once it is in sync",
                ),
                Step(
                    "cluster/wait-healthy",
                    "cluster",
                    WaitHealthy(tuple(x.name for x in new_spec.members), timeout),
                    "every member healthy",
                ),
                *steps_mod.spec_steps(ws, new_spec, f"{m.name} joined"),
            ]
            if not decision.promote:
                tail = tail[1:]  # already a voter: only health and the workspace remain

            async def deploy() -> list[Step]:
                if not decision.deploy:
                    return []
                return await steps_mod.deploy_steps(new_spec, ws, m, hosts, etcd_bin=etcd_bin)

            if dry_run:
                planned = (*first, *(await deploy()), *tail)
                return MemberResult(Plan("member-add", planned, decision.warnings), decision.warnings)
            # the deploy steps need the new certificates, so they are planned once these ran
            steps_mod.set_pending(ws, m)
            await execute(Plan("member-add", tuple(first)), runtime, reporter)
            try:
                rest = (*(await deploy()), *tail)
                await execute(Plan("member-add", rest), runtime, reporter)
            except EtcdforgeError as exc:
                try:
                    await _roll_back(new_spec, ws, m, runtime, hosts, reporter)
                    steps_mod.set_pending(ws, None)
                except EtcdforgeError as again:
                    raise PlanError(
                        f"{m.name} did not join ({exc}), and rolling back failed too: {again}",
                        hint=f"check `etcdforge members`; remove it with `etcdforge member remove {m.name}`",
                    ) from exc
                raise PlanError(
                    f"{m.name} did not join: {exc}",
                    hint="rolled back: removed from the cluster, stopped, its data wiped",
                ) from exc
            steps_mod.set_pending(ws, None)
            return MemberResult(Plan("member-add", (*first, *rest), decision.warnings), decision.warnings)


async def _roll_back(
    spec: ClusterSpec,
    ws: Workspace,
    member: MemberSpec,
    runtime: Runtime,
    hosts: dict[str, Host],
    reporter: Reporter | None,
) -> None:
    """Take a member that never joined out again: remove it from the cluster, stop it, wipe its data."""
    from etcdforge.services.cluster_ops import find_by_peer_url

    steps: list[Step] = []
    async with admin_client(spec, ws, timeout=5.0) as client:
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
        spec, member.name, keep_data=False, reachable=member.name in hosts or spec.mode == "local"
    )
    await execute(Plan(verb="member-remove", steps=tuple(steps)), runtime, reporter)


async def remove(
    directory: Path,
    name: str,
    *,
    keep_data: bool = False,
    timeout: float = 120.0,
    dry_run: bool = False,
    accept_new_host_keys: bool = False,
    reporter: Reporter | None = None,
    replacing: bool = False,
) -> MemberResult:
    ws, spec = load_workspace(directory)
    with workspace_lock(ws):
        return await _remove(
            spec, ws, name, keep_data=keep_data, timeout=timeout, dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys, reporter=reporter, replacing=replacing,
        )  # fmt: skip


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
    replacing: bool,
) -> MemberResult:
    _, decision = await _settled(
        spec,
        ws,
        await steps_mod.observe_view(spec, ws),
        lambda v: decide_remove(spec, v, name, replacing=replacing),
    )
    in_spec = any(m.name == name for m in spec.members)
    async with steps_mod.runtime_for(
        spec, ws, [name] if in_spec else [], accept_new_host_keys=accept_new_host_keys, required=False
    ) as (runtime, hosts):
        reachable = spec.mode == "local" or name in hosts
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
        if in_spec:
            steps += steps_mod.stop_steps(spec, name, keep_data=keep_data, reachable=reachable)
        remaining = tuple(m.name for m in decision.new_spec.members if m.name != name)
        if remaining:
            steps.append(
                Step(
                    "cluster/wait-healthy", "cluster", WaitHealthy(remaining, timeout), "the rest is healthy"
                )
            )
        if decision.new_spec != spec:
            steps += steps_mod.spec_steps(ws, decision.new_spec, f"{name} removed")
        warnings = (
            ()
            if reachable
            else (f"{name}'s host is unreachable: stop and wipe it by hand before reusing it",)
        )
        plan = Plan(verb="member-remove", steps=tuple(steps), warnings=warnings)
        if not dry_run:
            await execute(plan, runtime, reporter)
        return MemberResult(plan, warnings)


async def replace(
    directory: Path,
    name: str,
    *,
    address: str | None = None,
    timeout: float = 120.0,
    dry_run: bool = False,
    accept_new_host_keys: bool = False,
    reporter: Reporter | None = None,
) -> MemberResult:
    """Remove a dead or corrupted member, wipe it, and add it back (as a learner, then promoted)."""
    ws, spec = load_workspace(directory)
    old = spec.member(name)
    with workspace_lock(ws):
        removed = await _remove(
            spec, ws, name, keep_data=False, timeout=timeout, dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys, reporter=reporter, replacing=True,
        )  # fmt: skip
    target = old.model_copy(update={"address": address or old.address, "joined": True})
    new_spec = spec.model_copy(
        update={"members": tuple(target if m.name == name else m for m in spec.members)}
    )
    if dry_run:
        return MemberResult(
            Plan(verb="member-replace", steps=removed.plan.steps, warnings=removed.warnings),
            removed.warnings,
            f"then {name} is added back on {target.address} as a learner and promoted",
        )
    # the spec keeps the member (by name) while it is re-added: write it out of the spec first, so the
    # add below is an ordinary, resumable add
    others = new_spec.model_copy(update={"members": tuple(m for m in new_spec.members if m.name != name)})
    from etcdforge.fsutil import atomic_write

    atomic_write(ws.spec_path, dump_spec(others).encode(), 0o644)
    added = await add(
        directory, name, address=target.address, dns_names=target.dns_names, ssh=target.ssh, timeout=timeout,
        accept_new_host_keys=accept_new_host_keys, reporter=reporter,
    )  # fmt: skip
    return MemberResult(
        Plan(verb="member-replace", steps=(*removed.plan.steps, *added.plan.steps)),
        removed.warnings + added.warnings,
    )


class _LocalFiles:
    """A runtime for plans that only write control-machine files (the spec)."""

    async def perform(self, action: object) -> str:
        from etcdforge.fsutil import atomic_write

        if isinstance(action, WriteFile):
            atomic_write(Path(action.path), action.content, action.mode)
            return "written"
        raise TypeError(f"cannot perform {type(action).__name__} here")
