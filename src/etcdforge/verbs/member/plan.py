"""Plan membership changes (pure): add as a learner then promote, remove with quorum safety, replace.

Safety rules enforced here and tested as pure code:

- never two pending membership changes: a learner or an added-but-unstarted member in the cluster
  blocks any other change (only the same change may resume);
- ``add`` registers a **learner** (it does not count toward quorum), deploys and starts it with
  ``initial-cluster-state=existing``, waits until it is in sync and only then promotes it;
- ``add`` and ``replace`` refuse while any voter is unhealthy (counted from real health, not from
  the member list);
- ``remove`` refuses the last member, a 2-member cluster, and any removal that leaves fewer healthy
  voters than the new quorum; other members that are down do not block it; a leader hands leadership
  over first;
- a re-run after an interruption resumes from what the cluster itself says (a learner with our peer
  URL is our own half-done add; a spec member the cluster no longer lists is our own half-done remove).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from etcdforge import topology
from etcdforge.errors import PlanError
from etcdforge.observe.cluster import ClusterView
from etcdforge.spec import ClusterSpec, MemberSpec


@dataclass(frozen=True)
class AddDecision:
    """What ``member add`` must still do: ``register`` (MemberAdd as learner), ``deploy`` (files and
    start), ``promote``; ``done`` when the cluster already has it as a started voter."""

    new_spec: ClusterSpec
    member: MemberSpec
    register: bool
    deploy: bool
    promote: bool
    warnings: tuple[str, ...]

    @property
    def done(self) -> bool:
        return not (self.register or self.deploy or self.promote)


def _refuse_mixed(view: ClusterView) -> None:
    if view.mixed_versions:
        raise PlanError(
            f"the members run different etcd releases ({', '.join(view.mixed_versions)}): an upgrade is "
            "under way",
            hint="finish it (`etcdforge upgrade --to VERSION`) before changing the membership",
        )


def _unhealthy_voters(view: ClusterView) -> list[str]:
    return [m.name or f"{m.id:x}" for m in view.voters if not m.healthy]


def with_member(spec: ClusterSpec, member: MemberSpec) -> ClusterSpec:
    return spec.model_copy(update={"members": (*spec.members, member)})


def without_member(spec: ClusterSpec, name: str) -> ClusterSpec:
    return spec.model_copy(update={"members": tuple(m for m in spec.members if m.name != name)})


def decide_add(spec: ClusterSpec, view: ClusterView, member: MemberSpec) -> AddDecision:
    """Check that ``member`` may be added now (or resumed) and say which phases remain."""
    peer = topology.peer_url(spec, member)
    mine = view.by_peer_url(peer)
    in_spec = any(m.name == member.name for m in spec.members)
    if in_spec and mine is not None and not mine.is_learner and mine.started:
        return AddDecision(spec, spec.member(member.name), False, False, False, ())
    if in_spec and mine is None:
        raise PlanError(
            f"{member.name} is already in the spec", hint="pick another name, or `member replace` it"
        )
    _refuse_mixed(view)
    for other in spec.members:
        if other.name != member.name and other.address == member.address:
            raise PlanError(
                f"{member.address} is already used by {other.name}", hint="pick another --address"
            )
    others_pending = [m for m in view.pending if m is not mine]
    if others_pending:
        names = ", ".join(m.name or f"(unstarted, {m.peer_urls[0]})" for m in others_pending)
        raise PlanError(
            f"another membership change is pending: {names}",
            hint="finish it first (re-run the `member add` that started it), or remove that member",
        )
    sick = _unhealthy_voters(view)
    if sick:
        raise PlanError(
            f"the cluster is not healthy ({', '.join(sick)} unhealthy): "
            "adding a member now could cost quorum",
            hint="fix or `member replace` the unhealthy member first",
        )
    joined = member.model_copy(update={"joined": True})
    new_spec = spec if in_spec else with_member(spec, joined)
    size = len(view.voters) + (0 if mine is not None and not mine.is_learner else 1)
    warnings = []
    if size % 2 == 0:
        warnings.append(
            f"the cluster will have {size} voting members: an even size tolerates no more failures than "
            f"{size - 1}; add one more (or remove one) to keep it odd"
        )
    register = mine is None
    started = mine is not None and mine.started
    return AddDecision(
        new_spec=new_spec,
        member=new_spec.member(member.name),
        register=register,
        deploy=not started or register,
        promote=mine is None or mine.is_learner,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class RemoveDecision:
    """``member_id`` None: the cluster does not list the member (a half-done remove, or nothing to
    remove at all); ``new_spec`` is the spec without it (the spec follows etcd)."""

    new_spec: ClusterSpec
    member: str
    member_id: int | None
    move_leader_to: str | None
    warnings: tuple[str, ...] = ()


def decide_remove(
    spec: ClusterSpec,
    view: ClusterView,
    name: str,
    *,
    replacing: bool = False,
    known: MemberSpec | None = None,
    only_id: int | None = None,
) -> RemoveDecision:
    """Check that removing ``name`` keeps a healthy quorum and say what to do.

    The gate is what the change needs: after the removal, the healthy voters must still be a quorum of
    the remaining voters. Other members that are down do not block it; they are named in a warning.
    ``known`` is the member as the workspace last knew it (the spec, or the record of a change in
    flight): an added but never started member has no name in etcd and is found by its peer URL.
    ``only_id`` (an interrupted replace): the member to remove is the one with that ID, or none — never
    another member by the same name.
    """
    in_spec = any(m.name == name for m in spec.members)
    known = known or (spec.member(name) if in_spec else None)
    if only_id is not None:
        mine = next((m for m in view.members if m.id == only_id), None)
    else:
        mine = view.by_name(name)
        if mine is None and known is not None:
            mine = view.by_peer_url(topology.peer_url(spec, known))
    new_spec = without_member(spec, name) if in_spec else spec
    if mine is None:
        return RemoveDecision(new_spec, name, None, None)
    _refuse_mixed(view)
    others_pending = [m for m in view.pending if m is not mine]
    if others_pending:
        raise PlanError(
            "another membership change is pending: "
            + ", ".join(m.name or f"(unstarted, {m.peer_urls[0]})" for m in others_pending),
            hint="finish it first",
        )
    warnings: list[str] = []
    if not mine.is_learner:
        voters = view.voters
        if len(voters) == 1:
            raise PlanError(f"{name} is the last member; removing it would destroy the cluster")
        if len(voters) == 2 and not replacing:
            raise PlanError(
                "removing a member from a 2-member cluster is unsafe (quorum of 2 is 2)",
                hint="add a member first, then remove this one",
            )
        remaining = [m for m in voters if m is not mine]
        healthy = [m for m in remaining if m.healthy]
        need = topology.quorum(len(remaining))
        if len(healthy) < need:
            raise PlanError(
                f"removing {name} leaves {len(healthy)} healthy of {len(remaining)} voting members; "
                f"quorum needs {need}",
                hint="bring the unhealthy members back first",
            )
        down = [m.name or f"{m.id:x}" for m in remaining if not m.healthy]
        if down:
            warnings.append(
                f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down; the removal goes on with "
                f"{len(healthy)} healthy of {len(remaining)} remaining voters (quorum {need})"
            )
    move_to = None
    if mine.is_leader:
        target = next((m for m in view.voters if m is not mine and m.healthy and m.started), None)
        move_to = target.name if target else None
    return RemoveDecision(new_spec, name, mine.id, move_to, tuple(warnings))


def next_local_address(spec: ClusterSpec, taken: Sequence[str], is_free: Callable[[str, int], bool]) -> str:
    """The next 127.0.0.x after the spec's members that no member uses and whose ports are free."""
    import ipaddress

    used = {m.address for m in spec.members} | set(taken)
    highest = max(int(ipaddress.ip_address(m.address)) for m in spec.members)
    for candidate in range(highest + 1, int(ipaddress.ip_address("127.0.0.254")) + 1):
        ip = str(ipaddress.ip_address(candidate))
        if ip in used:
            continue
        ports = (spec.etcd.client_port, spec.etcd.peer_port, spec.etcd.metrics_port)
        if all(is_free(ip, p) for p in ports if p is not None):
            return ip
    raise PlanError("no free 127.0.0.x address for a new member", hint="pass --address")
