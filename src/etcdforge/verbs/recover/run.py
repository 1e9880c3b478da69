"""``recover``: observe the survivors (no quorum needed: Status is served locally) → phase 1, one plan
(:mod:`~etcdforge.verbs.recover.plan`) → phase 2, ``member add`` of every other member, one at a
time. The record ``recover.json`` (the survivor) makes a re-run after an interruption resume: phase 1 is
done once its last step rewrote the record, and each add resumes from its own record.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from etcdforge import topology
from etcdforge.errors import EtcdError, PlanError
from etcdforge.executor import Confirm, Reporter, execute
from etcdforge.plan import Plan, RemoveFile, Step
from etcdforge.runtime.factory import make_runtime, open_runtime, placement
from etcdforge.spec import SAFETY_TARGET, ClusterSpec, MemberSpec
from etcdforge.verbs.backup import plan as backup_plan
from etcdforge.verbs.backup.run import Observed, backup_request
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
    add: Callable[..., Any] | None = None,
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
        plan = (
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
        if dry_run:
            return RecoverResult(plan, survivor.name, others, plan.warnings)
        if not phase1_done:
            async with open_runtime(spec, ws, required=False, etcd_bin=etcd_bin) as runtime:
                await execute(plan, runtime, reporter, confirm=confirm)
    # phase 2: every other member is added back by `member add` (its own lock, plan and record)
    if add is None:
        from etcdforge.verbs.member.run import add as member_add

        add = member_add
    entries = json.loads((Path(directory) / RECORD).read_text())["others"]
    replaced = []
    for entry in entries:
        m = MemberSpec.model_validate(entry)
        await add(
            directory, m.name, address=m.address, dns_names=m.dns_names, ssh=m.ssh, etcd_bin=etcd_bin,
            timeout=timeout, reporter=reporter, no_snapshot=True,
        )  # fmt: skip
        replaced.append(m.name)
    ws2 = Workspace(directory)
    await execute(
        Plan("recover", (Step("recover/done", "local", RemoveFile(str(ws2.root / RECORD)), "recovered"),)),
        make_runtime(spec, ws2, {}),
        reporter,
    )
    return RecoverResult(plan, survivor.name, others, plan.warnings, True, tuple(replaced))
