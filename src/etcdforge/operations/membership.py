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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdforge import certs, render, topology
from etcdforge.errors import EtcdError, EtcdforgeError, PlanError
from etcdforge.execute import Reporter, Runtime, execute
from etcdforge.hosts.base import Host
from etcdforge.hosts.errors import HostError
from etcdforge.operations import remote_layout as layout
from etcdforge.operations.lifecycle import port_is_free, resolve_binary, workspace_lock
from etcdforge.operations.local import member_pki_files
from etcdforge.operations.membership_plan import (
    ClusterView,
    MemberView,
    decide_add,
    decide_remove,
    next_local_address,
)
from etcdforge.plan import (
    AddLearner,
    HostCommand,
    InstallMemberPki,
    IssueCerts,
    MoveLeader,
    Plan,
    PromoteLearner,
    RemoveMember,
    StartMember,
    Step,
    StopMember,
    WaitHealthy,
    WipeData,
    WriteFile,
)
from etcdforge.spec import ClusterSpec, MemberSpec, MemberSsh, dump_spec, expiry
from etcdforge.workspace import Workspace, admin_client, load_workspace


async def observe_view(spec: ClusterSpec, ws: Workspace) -> ClusterView:
    """Members as etcd lists them, with real health: voters answer a linearizable read, learners a status."""
    async with admin_client(spec, ws, timeout=3.0) as client:
        try:
            members = await client.member_list()
        except EtcdError as exc:
            raise PlanError(
                f"the cluster does not answer: {exc}", hint="`etcdforge health` shows why"
            ) from None
        statuses = await client.status_all()
        leader_ids = {s.leader for s in statuses if not isinstance(s, EtcdError) and s.leader}
        leader = leader_ids.pop() if len(leader_ids) == 1 else None

        async def healthy(urls: Sequence[str], learner: bool) -> bool:
            if not urls:
                return False
            if learner:
                try:
                    await client.status(urls[0])
                    return True
                except EtcdError:
                    return False
            return (await client.health(urls[0])).healthy

        health = await asyncio.gather(*(healthy(m.client_urls, m.is_learner) for m in members))
    return ClusterView(
        tuple(
            MemberView(m.id, m.name, tuple(m.peer_urls), m.is_learner, ok, m.id == leader)
            for m, ok in zip(members, health, strict=True)
        )
    )


def _host_of(url: str) -> str:
    return url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")


PENDING_FILE = "pending-change.json"


def _pending_address(ws: Workspace, name: str) -> str | None:
    """The address an interrupted ``member add NAME`` chose, so a re-run without --address resumes it.

    The record is written before the learner is registered and removed when the add ends (joined or
    rolled back). An added member has no name in etcd until it starts, so only this record ties an
    unstarted learner to a name.
    """
    import json

    try:
        record = json.loads((ws.root / PENDING_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return str(record["address"]) if record.get("name") == name and record.get("address") else None


def _set_pending(ws: Workspace, member: MemberSpec | None) -> None:
    import json

    from etcdforge.fsutil import atomic_write

    path = ws.root / PENDING_FILE
    if member is None:
        path.unlink(missing_ok=True)
    else:
        record = {"op": "member-add", "name": member.name, "address": member.address}
        atomic_write(path, json.dumps(record).encode(), 0o644)


@dataclass(frozen=True)
class MemberResult:
    plan: Plan
    warnings: tuple[str, ...] = ()
    note: str = ""


def _spec_steps(ws: Workspace, spec: ClusterSpec, why: str) -> list[Step]:
    """The spec, the etcdctl environment (its endpoints) and, in local mode, the other members' configs
    (only their initial-cluster changes: written, never a restart) — the workspace's view of the new
    membership."""
    steps = [
        Step("workspace/write-spec", "local", WriteFile(str(ws.spec_path), dump_spec(spec).encode()), why),
        Step(
            "workspace/write-env",
            "local",
            WriteFile(str(ws.env_path), render.etcdctl_env(topology.client_urls(spec), ws.client_paths())),
            "endpoints changed",
        ),
    ]
    if spec.mode == "local":
        for m in spec.members:
            paths = ws.member_paths(m.name)
            content = render.etcd_config(spec, m, paths)
            current = Path(paths.config).read_bytes() if Path(paths.config).is_file() else None
            if current is not None and current != content:
                steps.append(
                    Step(
                        f"{m.name}/write-config",
                        m.name,
                        WriteFile(paths.config, content),
                        "initial-cluster only",
                    )
                )
    return steps


def _pki_step(spec: ClusterSpec, ws: Workspace) -> Step | None:
    """Issue what the new spec needs — only the new member's certificates; nobody else's change."""
    from etcdforge.pki import observe_pki, plan_pki

    external = certs.external_ca(spec, base_dir=ws.root)
    plan = plan_pki(
        certs.ca_settings(spec, base_dir=ws.root),
        certs.cert_requests(spec, base_dir=ws.root),
        observe_pki(ws.pki_dir, external),
        datetime.now(UTC),
        external_ca=external,
        renew_before=expiry(spec.pki.renew_before),
    )
    items = tuple((c.name, c.reason) for c in plan.changes)
    if not items:
        return None
    return Step("pki/issue", "local", IssueCerts(items, plan), "; ".join(f"{n}: {r}" for n, r in items))


@asynccontextmanager
async def _runtime(
    spec: ClusterSpec,
    ws: Workspace,
    members: Sequence[str],
    *,
    accept_new_host_keys: bool,
    required: bool = True,
) -> AsyncIterator[tuple[Runtime, dict[str, Host]]]:
    """The runtime for ``spec``'s mode; in hosts mode with connections to ``members``' hosts.

    With ``required=False`` an unreachable host is left out (removing a dead member must still work).
    """
    if spec.mode == "local":
        from etcdforge.services.local_runtime import LocalRuntime

        yield LocalRuntime(spec, ws), {}
        return
    from etcdforge.hosts.ssh import connect
    from etcdforge.operations.deploy import _resolve, ssh_target
    from etcdforge.services.remote_runtime import RemoteRuntime

    known = _resolve(ws, spec.ssh.known_hosts)
    hosts: dict[str, Host] = {}
    try:
        for name in members:
            try:
                hosts[name] = await connect(
                    name,
                    ssh_target(spec, ws, name),
                    known_hosts=known,
                    accept_new_host_keys=accept_new_host_keys,
                )
            except HostError:
                if required:
                    raise
        yield RemoteRuntime(spec, ws, hosts), hosts
    finally:
        await asyncio.gather(*(h.close() for h in hosts.values()), return_exceptions=True)


async def _deploy_steps(
    spec: ClusterSpec, ws: Workspace, member: MemberSpec, hosts: dict[str, Host], *, etcd_bin: str | None
) -> list[Step]:
    """Files and start for one (joining) member: local process, or its host under systemd."""
    if spec.mode == "local":
        binary, _ = resolve_binary(spec, etcd_bin)
        paths = ws.member_paths(member.name)
        return [
            Step(
                f"{member.name}/install-pki",
                member.name,
                InstallMemberPki(member.name, member_pki_files(ws, member.name)),
                "its own key pairs and the CA certificate",
            ),
            Step(
                f"{member.name}/write-config",
                member.name,
                WriteFile(paths.config, render.etcd_config(spec, member, paths)),
                "initial-cluster-state: existing",
            ),
            Step(
                f"{member.name}/start",
                member.name,
                StartMember(member.name, (str(binary.path), "--config-file", paths.config)),
                "joins as a learner",
            ),
        ]
    from etcdforge.operations.deploy import _desired, binary_source, observe_hosts
    from etcdforge.operations.remote_observe import ClusterObserved
    from etcdforge.operations.remote_plan import plan_apply

    sub = spec.model_copy(update={"members": (member,)})
    observed = await observe_hosts(sub, {member.name: hosts[member.name]})
    desired, pending = _desired(spec, ws, set())
    cluster = ClusterObserved(
        reachable=True, members=((0, member.name, (topology.peer_url(spec, member),), True),)
    )
    plan = plan_apply(
        spec,
        {member.name: desired[member.name]},
        observed,
        cluster,
        binary_source(spec),
        pending_paths={member.name: pending[member.name]},
        only=[member.name],
    )
    # a learner does not serve linearizable reads: health is checked once it is promoted
    return [s for s in plan.steps if not isinstance(s.action, WaitHealthy)]


def _stop_steps(spec: ClusterSpec, name: str, *, keep_data: bool, reachable: bool) -> list[Step]:
    steps: list[Step] = []
    if spec.mode == "local":
        steps.append(Step(f"{name}/stop", name, StopMember(name), "stop it"))
    elif reachable:
        steps.append(
            Step(
                f"{name}/disable",
                name,
                HostCommand(name, ("systemctl", "disable", "--now", "--quiet", layout.UNIT_NAME)),
                "stop and disable its unit so it does not restart in a loop",
            )
        )
    if not keep_data and (spec.mode == "local" or reachable):
        steps.append(
            Step(f"{name}/wipe-data", name, WipeData(name), "a removed member's data must never rejoin")
        )
    return steps


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
        view = await observe_view(spec, ws)
        existing = next((m for m in spec.members if m.name == name), None)
        if existing is not None:
            member = existing
        else:
            if address is None:
                if spec.mode != "local":
                    raise PlanError("hosts mode needs --address for the new member")
                address = _pending_address(ws, name) or next_local_address(
                    spec, [_host_of(u) for m in view.members for u in m.peer_urls], port_is_free
                )
            member = MemberSpec(name=name, address=address, dns_names=dns_names, ssh=ssh, joined=True)
        decision = decide_add(spec, view, member)
        if decision.done:
            steps = (
                []
                if existing is not None
                else _spec_steps(ws, decision.new_spec, f"{name} is already a member")
            )
            plan = Plan(verb="member-add", steps=tuple(steps))
            if not dry_run:
                await execute(plan, _LocalFiles(), reporter)
            return MemberResult(plan, decision.warnings, f"{name} is already a voting member")
        new_spec, m = decision.new_spec, decision.member
        peer = topology.peer_url(new_spec, m)
        async with _runtime(new_spec, ws, [m.name], accept_new_host_keys=accept_new_host_keys) as (
            runtime,
            hosts,
        ):
            first: list[Step] = []
            pki = _pki_step(new_spec, ws)
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
                *_spec_steps(ws, new_spec, f"{m.name} joined"),
            ]
            if not decision.promote:
                tail = tail[1:]  # already a voter: only health and the workspace remain

            async def deploy() -> list[Step]:
                if not decision.deploy:
                    return []
                return await _deploy_steps(new_spec, ws, m, hosts, etcd_bin=etcd_bin)

            if dry_run:
                planned = (*first, *(await deploy()), *tail)
                return MemberResult(Plan("member-add", planned, decision.warnings), decision.warnings)
            # the deploy steps need the new certificates, so they are planned once these ran
            _set_pending(ws, m)
            await execute(Plan("member-add", tuple(first)), runtime, reporter)
            try:
                rest = (*(await deploy()), *tail)
                await execute(Plan("member-add", rest), runtime, reporter)
            except EtcdforgeError as exc:
                try:
                    await _roll_back(new_spec, ws, m, runtime, hosts, reporter)
                    _set_pending(ws, None)
                except EtcdforgeError as again:
                    raise PlanError(
                        f"{m.name} did not join ({exc}), and rolling back failed too: {again}",
                        hint=f"check `etcdforge members`; remove it with `etcdforge member remove {m.name}`",
                    ) from exc
                raise PlanError(
                    f"{m.name} did not join: {exc}",
                    hint="rolled back: removed from the cluster, stopped, its data wiped",
                ) from exc
            _set_pending(ws, None)
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
    steps += _stop_steps(
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
    view = await observe_view(spec, ws)
    decision = decide_remove(spec, view, name, replacing=replacing)
    in_spec = any(m.name == name for m in spec.members)
    async with _runtime(
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
            steps += _stop_steps(spec, name, keep_data=keep_data, reachable=reachable)
        remaining = tuple(m.name for m in decision.new_spec.members if m.name != name)
        if remaining:
            steps.append(
                Step(
                    "cluster/wait-healthy", "cluster", WaitHealthy(remaining, timeout), "the rest is healthy"
                )
            )
        if decision.new_spec != spec:
            steps += _spec_steps(ws, decision.new_spec, f"{name} removed")
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
