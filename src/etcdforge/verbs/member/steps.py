"""Building blocks of the membership verbs: observing the cluster's real membership and health, and the
steps that deploy, stop and record a member in either mode (see :mod:`etcdforge.verbs.member.run`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as replace_fields
from pathlib import Path
from typing import Literal

from etcdforge import render, topology
from etcdforge.hosts.base import Host
from etcdforge.observe.cluster import ClusterView, observe_cluster
from etcdforge.observe.hosts import HostObserved
from etcdforge.plan import (
    AddLearner,
    InstallMemberPki,
    IssueCerts,
    PromoteLearner,
    RemoveFile,
    StartMembers,
    Step,
    StopMember,
    WaitHealthy,
    WipeData,
    WriteFile,
)
from etcdforge.runtime.factory import placement
from etcdforge.runtime.processes import resolve_binary
from etcdforge.spec import ClusterSpec, MemberSpec, dump_spec
from etcdforge.verbs.member.plan import AddDecision
from etcdforge.verbs.up.plan import member_pki_files
from etcdforge.workspace import Workspace


async def observe_view(spec: ClusterSpec, ws: Workspace) -> ClusterView:
    """Members as etcd lists them, with real health (the cluster must answer)."""
    return await observe_cluster(spec, ws)


def host_of(url: str) -> str:
    return url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")


PENDING_FILE = "pending-change.json"


@dataclass(frozen=True)
class ChangeRecord:
    """A membership change in flight, kept in the workspace until the change is done.

    The cluster is the record of what etcd did; this record holds what etcd cannot: the name and host
    of a member that was added but never started (etcd knows only its peer URL), and the member a
    ``remove`` or ``replace`` takes out once the spec no longer lists it (to stop and wipe it after an
    interruption). ``old_id`` is the member ID a ``replace`` removes (0: nothing to remove); ``target``
    what it adds back.
    """

    op: Literal["member-add", "member-remove", "member-replace"]
    member: MemberSpec
    target: MemberSpec | None = None
    old_id: int = 0

    def to_bytes(self) -> bytes:
        data: dict[str, object] = {
            "op": self.op,
            "name": self.member.name,
            "address": self.member.address,
            "member": self.member.model_dump(mode="json", exclude_defaults=True),
        }
        if self.target is not None:
            data["target"] = self.target.model_dump(mode="json", exclude_defaults=True)
        if self.old_id:
            data["old_id"] = f"{self.old_id:x}"
        return json.dumps(data, indent=1).encode()


def read_record(ws: Workspace) -> ChangeRecord | None:
    """The change in flight, if any (an unreadable record counts as none: the cluster still tells)."""
    try:
        data = json.loads((ws.root / PENDING_FILE).read_text())
        member = data.get("member") or {"name": data["name"], "address": data["address"]}
        target = data.get("target")
        return ChangeRecord(
            op=data.get("op", "member-add"),
            member=MemberSpec.model_validate(member),
            target=MemberSpec.model_validate(target) if target else None,
            old_id=int(data.get("old_id", "0"), 16),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pending_address(ws: Workspace, name: str) -> str | None:
    """The address an interrupted ``member add NAME`` chose, so a re-run without --address resumes it."""
    record = read_record(ws)
    if record is None or record.member.name != name:
        return None
    return (record.target or record.member).address


def record_step(ws: Workspace, record: ChangeRecord, why: str) -> Step:
    return Step(
        "workspace/record-change", "local", WriteFile(str(ws.root / PENDING_FILE), record.to_bytes()), why
    )


def clear_record_step(ws: Workspace) -> Step:
    return Step(
        "workspace/clear-change", "local", RemoveFile(str(ws.root / PENDING_FILE)), "the change is done"
    )


def spec_steps(
    ws: Workspace, spec: ClusterSpec, why: str, *, tag: str = "", joining: str | None = None
) -> list[Step]:
    """The spec, the etcdctl environment (its endpoints) and, in local mode, the other members' configs
    (only their initial-cluster changes: written, never a restart) — the workspace's view of the new
    membership. ``tag`` ends the steps' ids (a plan that writes the spec twice: ``replace``); the
    ``joining`` member's own config is its deploy step's."""
    steps = [
        Step(
            f"workspace/write-spec{tag}", "local", WriteFile(str(ws.spec_path), dump_spec(spec).encode()), why
        ),
        Step(
            f"workspace/write-env{tag}",
            "local",
            WriteFile(str(ws.env_path), render.etcdctl_env(topology.client_urls(spec), ws.client_paths())),
            "endpoints changed",
        ),
    ]
    if placement(spec, ws).members_here:  # (on hosts, `apply` writes them)
        for m in spec.members:
            if m.name == joining:
                continue
            paths = ws.member_paths(m.name)
            content = render.etcd_config(spec, m, paths)
            current = Path(paths.config).read_bytes() if Path(paths.config).is_file() else None
            if current is not None and current != content:
                steps.append(
                    Step(
                        f"{m.name}/write-config{tag}",
                        m.name,
                        WriteFile(paths.config, content),
                        "initial-cluster only",
                    )
                )
    return steps


def pki_step(spec: ClusterSpec, ws: Workspace) -> Step | None:
    """Issue what the new spec needs — only the new member's certificates; nobody else's change."""
    from etcdforge.workspace_pki import plan_workspace_pki

    plan = plan_workspace_pki(spec, ws)
    items = tuple((c.name, c.reason) for c in plan.changes)
    if not items:
        return None
    return Step("pki/issue", "local", IssueCerts(items, plan), "; ".join(f"{n}: {r}" for n, r in items))


async def deploy_steps(
    spec: ClusterSpec,
    ws: Workspace,
    member: MemberSpec,
    hosts: Mapping[str, Host],
    *,
    etcd_bin: str | None,
    issued: frozenset[str] = frozenset(),
    predicted: Callable[[HostObserved], HostObserved] | None = None,
) -> list[Step]:
    """Files and start for one (joining) member: local process, or its host under systemd.

    Certificates ``issued`` by an earlier step of the same plan (and any not in the workspace yet) are
    installed as deferred values: their bytes are read when the step runs. ``predicted``: how earlier
    steps of the plan change the member's host before these run (``replace`` stops and wipes it)."""
    if placement(spec, ws).members_here:
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
                StartMembers((member.name,)),
                f"joins as a learner (etcd {binary.path})",
            ),
        ]
    from etcdforge.observe.cluster import MemberView
    from etcdforge.verbs.apply.plan import plan_apply
    from etcdforge.verbs.apply.run import binary_source, ca_key_ids, desired_host_files, observe_hosts

    sub = spec.model_copy(update={"members": (member,)})
    observed = await observe_hosts(sub, {member.name: hosts[member.name]})
    if predicted is not None:  # the host as earlier steps of the same plan will leave it
        observed = {n: predicted(o) for n, o in observed.items()}
    desired, pending = desired_host_files(spec, ws, set(issued))
    # the cluster as it will be when these steps run: the new member registered as a learner
    learner = MemberView(0, member.name, (topology.peer_url(spec, member),), True, False, False)
    cluster = ClusterView((learner,))
    plan = plan_apply(
        spec,
        {member.name: desired[member.name]},
        observed,
        cluster,
        binary_source(spec),
        pending_paths={member.name: pending[member.name]},
        only=[member.name],
        ca_key_ids=ca_key_ids(spec, ws),
    )
    # a learner does not serve linearizable reads: health is checked once it is promoted
    return [s for s in plan.steps if not isinstance(s.action, WaitHealthy)]


def data_location(spec: ClusterSpec, ws: Workspace, name: str) -> str:
    """Where a member's etcd data lives, for the user."""
    return placement(spec, ws).data_location(name)


def stop_steps(
    spec: ClusterSpec, ws: Workspace, name: str, *, keep_data: bool, reachable: bool, ask: bool = True
) -> list[Step]:
    """Stop a member and (unless ``keep_data``) wipe its data. ``ask`` False: the data is a learner's
    that never joined (a rollback), nothing anybody could want back."""
    if not reachable:
        return []  # a host that is gone: nothing of it to stop or wipe (etcd has forgotten it)
    steps = [
        Step(
            f"{name}/stop",
            name,
            StopMember(name),
            "stop it (and keep it stopped: it must not restart in a loop, nor come back at boot)",
        )
    ]
    if not keep_data:
        steps.append(
            Step(
                f"{name}/wipe-data",
                name,
                WipeData(name),
                "a removed member's data must never rejoin",
                destroys=f"{name}'s data ({data_location(spec, ws, name)})" if ask else "",
            )
        )
    return steps


async def add_steps(
    ws: Workspace,
    decision: AddDecision,
    hosts: Mapping[str, Host],
    *,
    etcd_bin: str | None,
    timeout: float,
    before: Sequence[Step] = (),
    pki: bool = True,
    issued: frozenset[str] = frozenset(),
    host_predicted: Callable[[HostObserved], HostObserved] | None = None,
) -> tuple[list[Step], list[Step], list[Step]]:
    """The steps that add ``decision.member``: (certificates, ``before``, registration), (its files and
    start), (promotion, the workspace, the health gate). The new member's certificates are issued by the
    first part (unless ``pki`` is False: an earlier step issues them, ``issued`` names them) and installed
    by the second as deferred values, so what --dry-run prints is what runs."""
    new_spec, m = decision.new_spec, decision.member
    peer = topology.peer_url(new_spec, m)
    first: list[Step] = []
    issue = pki_step(new_spec, ws) if pki else None
    if issue is not None:
        first.append(issue)
    first += before
    if decision.register:
        first.append(
            Step("cluster/add-learner", "cluster", AddLearner(m.name, peer), "a learner: no quorum risk")
        )
    tail = [
        Step(f"{m.name}/promote", "cluster", PromoteLearner(m.name, peer, timeout), "once it is in sync"),
        *spec_steps(ws, new_spec, f"{m.name} joined", joining=m.name),
        clear_record_step(ws),
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
    if issue is not None and isinstance(issue.action, IssueCerts):
        issued |= frozenset(n for n, _ in issue.action.items)
    deploy = (
        await deploy_steps(new_spec, ws, m, hosts, etcd_bin=etcd_bin, issued=issued, predicted=host_predicted)
        if decision.deploy
        else []
    )
    return first, deploy, tail


def stopped_host(observed: HostObserved) -> HostObserved:
    """A host as it is once its etcd is stopped, disabled and its data wiped (what ``replace`` does
    before it deploys the new member there)."""
    return replace_fields(
        observed,
        active_state="inactive",
        unit_file_state="disabled" if observed.unit_file_state else "",
        has_data=False,
        main_argv=None,
        listeners=tuple(x for x in observed.listeners if x[2] != "etcd"),
    )
