"""Membership planning as pure code: learner-first adds, resumes, quorum-safe removes, refusals."""

from __future__ import annotations

import pytest

from etcdforge.errors import PlanError
from etcdforge.observe.cluster import ClusterView, MemberView
from etcdforge.spec import MemberSpec, load_spec_text
from etcdforge.verbs.member.plan import (
    decide_add,
    decide_remove,
    next_local_address,
)

SPEC = load_spec_text(
    """\
name: t
token: t-1
members:
  - {name: etcd1, address: 127.0.0.1}
  - {name: etcd2, address: 127.0.0.2}
  - {name: etcd3, address: 127.0.0.3}
"""
)
NEW = MemberSpec(name="etcd4", address="127.0.0.4")


def view(
    *extra: MemberView, healthy: tuple[bool, bool, bool] = (True, True, True), leader: int = 1
) -> ClusterView:
    base = tuple(
        MemberView(i, f"etcd{i}", (f"https://127.0.0.{i}:2380",), False, healthy[i - 1], i == leader)
        for i in (1, 2, 3)
    )
    return ClusterView(base + extra)


def learner(started: bool = True) -> MemberView:
    return MemberView(4, "etcd4" if started else "", ("https://127.0.0.4:2380",), True, started, False)


def test_add_registers_a_learner_then_deploys_and_promotes() -> None:
    d = decide_add(SPEC, view(), NEW)
    assert (d.register, d.deploy, d.promote) == (True, True, True)
    assert d.member.joined and [m.name for m in d.new_spec.members][-1] == "etcd4"
    assert "even size" in " ".join(d.warnings)


def test_add_resumes_an_interrupted_add() -> None:
    unstarted = decide_add(SPEC, view(learner(started=False)), NEW)  # killed after MemberAdd
    assert (unstarted.register, unstarted.deploy, unstarted.promote) == (False, True, True)
    started = decide_add(SPEC, view(learner(started=True)), NEW)  # killed before promotion
    assert (started.register, started.deploy, started.promote) == (False, False, True)
    voter = MemberView(4, "etcd4", ("https://127.0.0.4:2380",), False, True, False)
    finished = decide_add(SPEC, view(voter), NEW)  # killed before the spec was written
    assert (finished.register, finished.deploy, finished.promote) == (False, False, False)
    assert finished.done  # only the spec is left to write:
    assert [m.name for m in finished.new_spec.members][-1] == "etcd4"


def test_add_is_refused_while_another_change_is_pending() -> None:
    other = MemberView(5, "", ("https://127.0.0.5:2380",), True, False, False)
    with pytest.raises(PlanError, match="another membership change is pending"):
        decide_add(SPEC, view(other), NEW)


def test_add_is_refused_on_an_unhealthy_cluster() -> None:
    with pytest.raises(PlanError, match="etcd2 unhealthy"):
        decide_add(SPEC, view(healthy=(True, False, True)), NEW)


def test_add_refuses_duplicates() -> None:
    with pytest.raises(PlanError, match="already in the spec"):
        decide_add(SPEC, view(), MemberSpec(name="etcd2", address="127.0.0.9"))
    with pytest.raises(PlanError, match="already used by etcd3"):
        decide_add(SPEC, view(), MemberSpec(name="etcd9", address="127.0.0.3"))


def test_remove_keeps_quorum_counting_real_health() -> None:
    d = decide_remove(SPEC, view(), "etcd2")
    assert d.member_id == 2 and d.move_leader_to is None
    assert [m.name for m in d.new_spec.members] == ["etcd1", "etcd3"]
    # removing a healthy member while another is down leaves 1 healthy of 2: quorum is 2
    with pytest.raises(PlanError, match="leaves 1 healthy of 2"):
        decide_remove(SPEC, view(healthy=(True, False, True)), "etcd3")
    # removing the dead one is fine: 2 healthy of 2
    assert decide_remove(SPEC, view(healthy=(True, False, True)), "etcd2").member_id == 2


def test_removing_the_leader_hands_over_first() -> None:
    d = decide_remove(SPEC, view(leader=2), "etcd2")
    assert d.move_leader_to == "etcd1"


def test_remove_refuses_the_last_member_and_two_member_clusters() -> None:
    one = SPEC.model_copy(update={"members": SPEC.members[:1]})
    with pytest.raises(PlanError, match="last member"):
        decide_remove(
            one,
            ClusterView((MemberView(1, "etcd1", ("https://127.0.0.1:2380",), False, True, True),)),
            "etcd1",
        )
    two = SPEC.model_copy(update={"members": SPEC.members[:2]})
    two_view = ClusterView(view().members[:2])
    with pytest.raises(PlanError, match="2-member cluster"):
        decide_remove(two, two_view, "etcd2")


def test_remove_resumes_when_the_cluster_already_dropped_it() -> None:
    gone = ClusterView(tuple(m for m in view().members if m.name != "etcd3"))
    d = decide_remove(SPEC, gone, "etcd3")
    assert d.member_id is None and [m.name for m in d.new_spec.members] == ["etcd1", "etcd2"]
    # neither in the spec nor in the cluster: nothing to remove (the verb then says "nothing to do")
    nothing = decide_remove(SPEC, view(), "etcd9")
    assert nothing.member_id is None and nothing.new_spec == SPEC


def test_remove_gates_on_a_healthy_quorum_and_names_members_that_are_down() -> None:
    """Five members, etcd5 down: removing etcd4 keeps 3 healthy of 4 (quorum 3), with a warning."""
    five = SPEC.model_copy(
        update={"members": (*SPEC.members, NEW, MemberSpec(name="etcd5", address="127.0.0.5"))}
    )
    members = (
        *view().members,
        MemberView(4, "etcd4", ("https://127.0.0.4:2380",), False, True, False),
        MemberView(5, "etcd5", ("https://127.0.0.5:2380",), False, False, False),
    )
    d = decide_remove(five, ClusterView(members), "etcd4")
    assert d.member_id == 4
    assert d.warnings == (
        "etcd5 is down; the removal goes on with 3 healthy of 4 remaining voters (quorum 3)",
    )


def test_an_unstarted_member_known_only_to_the_workspace_is_found_by_its_peer_url() -> None:
    """An interrupted add's member that is not in the spec: the record knows it, etcd has no name."""
    d = decide_remove(SPEC, view(learner(started=False)), "etcd4", known=NEW)
    assert d.member_id == 4 and d.new_spec == SPEC


def test_a_pending_learner_may_be_removed_but_blocks_other_removals() -> None:
    spec4 = SPEC.model_copy(update={"members": (*SPEC.members, NEW)})
    assert decide_remove(spec4, view(learner(started=False)), "etcd4").member_id == 4
    with pytest.raises(PlanError, match="pending"):
        decide_remove(spec4, view(learner()), "etcd2")


def test_next_local_address_skips_taken_and_busy() -> None:
    assert next_local_address(SPEC, [], lambda ip, port: True) == "127.0.0.4"
    assert next_local_address(SPEC, ["127.0.0.4"], lambda ip, port: ip != "127.0.0.5") == "127.0.0.6"
    with pytest.raises(PlanError, match="no free"):
        next_local_address(SPEC, [], lambda ip, port: False)


def test_a_decision_refused_only_because_voters_look_unhealthy_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Right after a member dies the others hold an election: health fails for about a second. A removal
    then waits for the verdict to settle instead of refusing at once; a real refusal still comes."""
    import asyncio
    from pathlib import Path

    from etcdforge.verbs.member import run as membership
    from etcdforge.verbs.member import steps as steps_mod
    from etcdforge.workspace import Workspace

    electing = view(healthy=(False, False, False), leader=0)  # etcd2 died; no leader yet
    settled = view(healthy=(True, False, True))
    seen = [settled]

    async def observe(spec: object, ws: object) -> object:
        return seen.pop(0)

    monkeypatch.setattr(steps_mod, "observe_view", observe)
    monkeypatch.setattr(membership, "SETTLE_POLL", 0.0)
    decide = lambda v: decide_remove(SPEC, v, "etcd2", replacing=True)  # noqa: E731
    ws = Workspace(Path("/nonexistent"))
    final, decision = asyncio.run(membership.settled(SPEC, ws, electing, decide))
    assert final is settled and decision.member_id is not None
    monkeypatch.setattr(membership, "SETTLE_SECONDS", 0.0)
    with pytest.raises(PlanError, match="quorum needs 2"):
        asyncio.run(membership.settled(SPEC, ws, electing, decide))
