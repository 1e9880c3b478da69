"""``recover``: a cluster that lost its quorum for good, brought back from its best survivor. Pure.

Phase 1 (this plan): choose the surviving member with the highest applied raft index → a snapshot of it
into the workspace's safety target (a Snapshot is served without a quorum) → the record
``recover.json`` → stop every member → start the survivor once with ``force-new-cluster`` (a one-member
cluster with its data) → wait until it serves → stop it, write its normal config, start it again (a
later restart must never force a new cluster again). The others are wiped and the spec follows etcd
(the survivor alone). Phase 2 (the run module): every other member is added back as a learner and
promoted, one at a time, with ``member add``'s own resumable plans. Refused while a quorum is
healthy: that is ``member replace``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from etcdforge import layout, render
from etcdforge.errors import PlanError
from etcdforge.plan import (
    Action,
    Plan,
    PutFile,
    StartMembers,
    Step,
    StopMember,
    WaitHealthy,
    WipeData,
    WriteFile,
)
from etcdforge.render import MemberPaths
from etcdforge.spec import ClusterSpec, dump_spec


@dataclass(frozen=True)
class Survivor:
    """A member as observed without a quorum: does it answer, and how far has it applied the log."""

    name: str
    answers: bool
    applied_index: int
    member_id: int = 0


def choose_survivor(survivors: list[Survivor], wanted: str | None = None) -> Survivor:
    alive = [s for s in survivors if s.answers]
    if wanted is not None:
        match = next((s for s in alive if s.name == wanted), None)
        if match is None:
            raise PlanError(f"{wanted} does not answer; recover from a member that runs")
        return match
    if not alive:
        raise PlanError(
            "no member answers: nothing to recover from",
            hint="restore a backup instead: `etcdforge restore latest`",
        )
    return max(alive, key=lambda s: (s.applied_index, s.name == min(a.name for a in alive)))


def with_force(config: bytes) -> bytes:
    """The member's config, plus ``force-new-cluster`` (etcd ignores command-line flags given a
    config file, so the key goes in the file)."""
    return config.rstrip(b"\n") + b"\nforce-new-cluster: true\n"


def _config(spec: ClusterSpec, name: str, paths: Mapping[str, MemberPaths] | None, content: bytes) -> Action:
    if paths is not None:
        return WriteFile(paths[name].config, content)
    return PutFile(name, layout.CONFIG, content, 0o644, "root", "root")


def plan_recover(
    spec: ClusterSpec,
    survivor: Survivor,
    *,
    record_path: str,
    record: bytes,
    done_record: bytes,
    spec_path: str,
    safety: tuple[Step, ...],
    member_paths: Mapping[str, MemberPaths] | None,
    timeout: float = 120.0,
) -> Plan:
    """Phase 1. ``member_paths``: local mode's per-member paths (None: hosts, the spec's layout)."""
    name = survivor.name
    member = spec.member(name)
    paths = member_paths[name] if member_paths is not None else layout.member_paths(spec)
    normal = render.etcd_config(spec, member, paths)
    names = [m.name for m in spec.members]
    others = [n for n in names if n != name]
    alone = spec.model_copy(update={"members": (member.model_copy(update={"joined": False}),)})
    steps = [
        *safety,
        Step("recover/record", "local", WriteFile(record_path, record, 0o600), f"recovering from {name}"),
        *(Step(f"{m}/stop", m, StopMember(m), "every member stops", group="stop") for m in names),
        Step(
            f"{name}/force-config",
            name,
            _config(spec, name, member_paths, with_force(normal)),
            "force-new-cluster: a one-member cluster with this member's data",
            destroys=f"the cluster's membership: {', '.join(others)} are wiped and added back from {name}",
        ),
        Step(f"{name}/start-forced", name, StartMembers((name,)), f"{name} alone"),
        Step(f"{name}/wait-forced", name, WaitHealthy((name,), timeout), f"{name} serves, alone"),
        Step(f"{name}/stop-forced", name, StopMember(name), "never restart with force-new-cluster"),
        Step(f"{name}/config", name, _config(spec, name, member_paths, normal), "its normal config"),
        Step(f"{name}/start", name, StartMembers((name,)), "runs normally"),
        Step(f"{name}/wait-healthy", name, WaitHealthy((name,), timeout), f"{name} serves"),
        *(
            Step(
                f"{m}/wipe-data",
                m,
                WipeData(m),
                f"{m} rejoins {name}'s cluster empty",
                destroys=f"{m}'s data (it is re-added from {name})",
            )
            for m in others
        ),
        Step(
            "workspace/write-spec",
            "local",
            WriteFile(spec_path, dump_spec(alone).encode()),
            f"the spec follows etcd: {name} alone, until the others are added back",
        ),
        Step(
            "recover/phase-2",
            "local",
            WriteFile(record_path, done_record, 0o600),
            f"next: {', '.join(others)} added back one at a time (`member add`: learner, then promoted)",
        ),
    ]
    warnings = (
        f"{', '.join(others)} will be wiped and added back one at a time from {name}'s data"
        + f" (applied index {survivor.applied_index}); writes {name} had not applied are lost",
    )
    return Plan("recover", tuple(steps), warnings)
