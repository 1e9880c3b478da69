"""``recover``: observe the survivors (no quorum needed: Status is served locally) → phase 1, one plan
(:mod:`~etcdforge.verbs.recover.plan`) → phase 2, ``member add`` of every other member, one at a
time. The record ``recover.json`` (the survivor) makes a re-run after an interruption resume: phase 1 is
done once its last step rewrote the record, and each add resumes from its own record.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdforge import topology
from etcdforge.errors import EtcdError, PlanError, StepError
from etcdforge.executor import Confirm, Reporter, execute
from etcdforge.hosts.base import Host
from etcdforge.observe.cluster import ClusterView, MemberView, observe_cluster
from etcdforge.plan import IssueCerts, Plan, RemoveFile, Step
from etcdforge.runtime.core import Runtime
from etcdforge.runtime.factory import open_runtime, placement
from etcdforge.spec import SAFETY_TARGET, ClusterSpec, MemberSpec
from etcdforge.verbs.backup import plan as backup_plan
from etcdforge.verbs.backup.run import Observed, backup_request
from etcdforge.verbs.member.run import settled
from etcdforge.verbs.recover.plan import Survivor, choose_survivor, plan_recover
from etcdforge.verbs.up.run import locked_workspace
from etcdforge.workspace import Workspace, admin_client

RECORD = "recover.json"


@dataclass(frozen=True)
class RecoverResult:
    plan: Plan
    survivor: str
    others: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    executed: bool = False
    replaced: tuple[str, ...] = field(default=())
    note: str = ""


async def observe_survivors(
    spec: ClusterSpec, ws: Workspace
) -> tuple[bool, bool, list[Survivor], Observed | None]:
    """(a quorum answers, every member answers, each member's survivor view, what a snapshot manifest
    needs from the best)."""
    async with admin_client(spec, ws, timeout=2.0) as client:
        urls = {m.name: topology.client_url(spec, m) for m in spec.members}

        async def one(name: str, url: str) -> tuple[Survivor, Any]:
            try:
                status = await client.status(url)
            except EtcdError:
                return Survivor(name, False, 0), None
            return Survivor(name, True, status.raft_applied_index, status.member_id), status

        found = await asyncio.gather(*(one(n, u) for n, u in urls.items()))
        healthy = await asyncio.gather(*(client.health(u) for u in urls.values()))
        quorum = any(h.healthy for h in healthy)
        everyone = all(h.healthy for h in healthy)
        survivors = [s for s, _ in found]
        observed = None
        alive = [(s, st) for s, st in found if st is not None]
        if alive:
            best, status = max(alive, key=lambda p: p[0].applied_index)
            try:
                members = await client.member_list(linearizable=False, endpoint=urls[best.name])
            except EtcdError:
                members = ()
            observed = Observed(
                status.cluster_id,
                (),
                tuple(
                    {
                        "name": m.name,
                        "id": f"{m.id:x}",
                        "peer_urls": list(m.peer_urls),
                        "learner": m.is_learner,
                    }
                    for m in members
                ),
            )
    return quorum, everyone, survivors, observed


async def recover(
    directory: Path,
    *,
    member: str | None = None,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    reporter: Reporter | None = None,
    timeout: float = 120.0,
    etcd_bin: str | None = None,
) -> RecoverResult:
    with locked_workspace(directory) as (ws, spec):
        record_path = ws.root / RECORD
        saved = json.loads(record_path.read_text()) if record_path.is_file() else {}
        recorded: str | None = saved.get("survivor")
        quorum, everyone, survivors, observed = await observe_survivors(spec, ws)
        # a quorum that does not answer now may be electing a leader: recovery (which forces a new
        # cluster) goes on only once it has stayed lost for several election timeouts
        deadline = time.monotonic() + max(5.0, 5 * spec.etcd.election_timeout_ms / 1000)
        while not quorum and recorded is None and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            quorum, everyone, survivors, observed = await observe_survivors(spec, ws)
        if everyone and recorded is None:  # healthy, every member a voter: a finished recovery re-run
            return RecoverResult(
                Plan("recover", ()), "", (), note="every member is healthy: nothing to recover"
            )
        if quorum and recorded is None:
            raise PlanError(
                "a quorum is healthy: nothing to recover",
                hint="replace a broken member with `etcdforge member replace NAME`",
            )
        if recorded is not None:
            # a recovery under way goes on from its survivor, running or not (a kill may have stopped it)
            survivor = next((s for s in survivors if s.name == recorded), Survivor(recorded, False, 0))
        else:
            survivor = choose_survivor(survivors, member)
        others = tuple(
            m["name"]
            for m in saved.get("others", [m.model_dump() for m in spec.members if m.name != survivor.name])
        )
        phase1_done = saved.get("phase") == 2
        safety: tuple[Step, ...] = ()
        if not phase1_done and recorded is None and observed is not None:
            url = topology.client_url(spec, spec.member(survivor.name))
            source = backup_plan.Candidate(
                survivor.name, url, survivor.member_id, False, True, True, survivor.applied_index, 0, "", 0
            )
            when = datetime.now(UTC).replace(microsecond=0)
            req = backup_request(spec, ws, observed, source, (SAFETY_TARGET,), when, encrypt=False)
            safety = tuple(
                Step(s.id.replace("backup/", "safety/", 1), s.host, s.action, f"safety snapshot: {s.reason}")
                for s in backup_plan.plan_backup(req, source).steps
            )
        # the others' spec entries, to add them back with the same address, names and SSH settings
        entries = [m.model_dump(mode="json") for m in spec.members if m.name != survivor.name]
        if recorded is not None:
            entries = saved.get("others", entries)
        record = json.dumps({"survivor": survivor.name, "phase": 1, "others": entries}).encode() + b"\n"
        done_record = json.dumps({"survivor": survivor.name, "phase": 2, "others": entries}).encode() + b"\n"
        paths = (
            {m.name: ws.member_paths(m.name) for m in spec.members}
            if placement(spec, ws).members_here
            else None
        )
        first = (
            Plan("recover", ())
            if phase1_done
            else plan_recover(
                spec,
                survivor,
                record_path=str(record_path),
                record=record,
                done_record=done_record,
                spec_path=str(ws.spec_path),
                safety=safety,
                member_paths=paths,
                timeout=timeout,
            )
        )
        rejoining = [MemberSpec.model_validate(e) for e in entries]
        # every member's host: the survivor's and those of the members phase 2 adds back
        everyone_spec = spec.model_copy(
            update={
                "members": (
                    *spec.members,
                    *(m for m in rejoining if all(x.name != m.name for x in spec.members)),
                )
            }
        )
        async with open_runtime(everyone_spec, ws, required=False, etcd_bin=etcd_bin) as runtime:
            # phase 2 is planned against the cluster as phase 1 leaves it: the survivor alone, healthy
            if phase1_done:
                # (right after a kill the survivor may be electing itself: asked again for a while)
                view, _ = await settled(spec, ws, await observe_cluster(spec, ws), _voters_healthy)
                base = spec
            else:
                me = spec.member(survivor.name)
                alone = MemberView(
                    survivor.member_id,
                    me.name,
                    (topology.peer_url(spec, me),),
                    False,
                    True,
                    True,
                    serving=True,
                )
                view = ClusterView((alone,))
                base = spec.model_copy(update={"members": (me.model_copy(update={"joined": False}),)})
            # a host that is gone for good does not keep the others from coming back: it is left out
            gone = tuple(
                f"{m.name}'s host is unreachable: it is not added back; add it (or a new host) later "
                f"with `etcdforge member add {m.name} --address ADDRESS`"
                for m in rejoining
                if m.name not in runtime.hosts
            )
            reachable = [m for m in rejoining if m.name in runtime.hosts]
            rejoin, added = await rejoin_steps(
                base, ws, view, reachable, runtime.hosts, etcd_bin=etcd_bin, timeout=timeout,
                wiped=not phase1_done,
            )  # fmt: skip
            done = Step("recover/done", "local", RemoveFile(str(record_path)), "recovered")
            plan = Plan("recover", (*first.steps, *rejoin, done), first.warnings + gone)
            if dry_run:
                return RecoverResult(plan, survivor.name, others, plan.warnings)
            try:
                await execute(plan, runtime, reporter, confirm=confirm)
            except StepError as exc:
                await _roll_back_rejoin(exc, added, ws, runtime, reporter)
                raise
    return RecoverResult(plan, survivor.name, others, plan.warnings, True, tuple(m.name for _, m in added))


def _voters_healthy(view: ClusterView) -> None:
    sick = [m.name or f"{m.id:x}" for m in view.voters if not m.healthy]
    if sick:
        raise PlanError(f"the recovered cluster is not healthy ({', '.join(sick)})")


async def rejoin_steps(
    spec: ClusterSpec,
    ws: Workspace,
    view: ClusterView,
    members: list[MemberSpec],
    hosts: Mapping[str, Host],
    *,
    etcd_bin: str | None,
    timeout: float,
    wiped: bool,
) -> tuple[list[Step], list[tuple[ClusterSpec, MemberSpec]]]:
    """Phase 2: each other member added back as a learner and promoted, one after another — ``member
    add``'s own steps, each member's under ``rejoin-NAME.``, planned against the cluster as the earlier
    ones leave it (``wiped``: their hosts as phase 1 leaves them, etcd stopped and its data gone).
    Returns the steps and, for a rollback, each member's spec once it is added."""
    from etcdforge.verbs.member.plan import decide_add
    from etcdforge.verbs.member.steps import (
        ChangeRecord,
        add_steps,
        clear_record_step,
        pki_step,
        read_record,
        record_step,
        spec_steps,
        stopped_host,
    )

    final = spec
    for m in members:
        if not any(x.name == m.name for x in final.members):
            final = final.model_copy(
                update={"members": (*final.members, m.model_copy(update={"joined": True}))}
            )
    issue = pki_step(final, ws)  # certificates any of them lacks, issued once
    issued = (
        frozenset(n for n, _ in issue.action.items)
        if issue and isinstance(issue.action, IssueCerts)
        else frozenset()
    )
    steps: list[Step] = [issue] if issue is not None else []
    added: list[tuple[ClusterSpec, MemberSpec]] = []
    for m in members:
        decision = decide_add(spec, view, m)
        if decision.done:  # back already (a re-run): the spec and the record follow etcd
            done = (
                spec_steps(ws, decision.new_spec, f"{m.name} is a member")
                if decision.new_spec != spec
                else []
            )
            pending = read_record(ws)
            if pending is not None and pending.member.name == m.name:
                done.append(clear_record_step(ws))
            steps += [replace_fields(s, id=f"rejoin-{m.name}.{s.id}") for s in done]
            spec = decision.new_spec
            continue
        spec = decision.new_spec
        record = record_step(ws, ChangeRecord("member-add", decision.member), f"{m.name} rejoins (resumable)")
        first, deploy, tail = await add_steps(
            ws, decision, hosts, etcd_bin=etcd_bin, timeout=timeout, before=[record], pki=False,
            issued=issued, host_predicted=stopped_host if wiped else None,
        )  # fmt: skip
        steps += [replace_fields(s, id=f"rejoin-{m.name}.{s.id}") for s in (*first, *deploy, *tail)]
        added.append((spec, decision.member))
        peer = topology.peer_url(spec, decision.member)
        mine = MemberView(0, m.name, (peer,), False, True, False, serving=True)
        view = ClusterView((*(x for x in view.members if peer not in x.peer_urls), mine))
    return steps, added


async def _roll_back_rejoin(
    exc: StepError,
    added: list[tuple[ClusterSpec, MemberSpec]],
    ws: Workspace,
    runtime: Runtime,
    reporter: Reporter | None,
) -> None:
    """A member that failed to rejoin is taken out again (learner removed, stopped, wiped), as ``member
    add`` does; the record stays, so a re-run of ``recover`` adds it again."""
    from etcdforge.verbs.member.run import joined, roll_back_add

    for spec, m in added:
        if exc.step_id.startswith(f"rejoin-{m.name}.") and not await joined(spec, ws, m):
            await roll_back_add(spec, ws, m, runtime, reporter, clear_record=True)
