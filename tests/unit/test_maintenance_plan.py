"""The maintenance planners (pure) and their runtime actions against the fake cluster."""

from __future__ import annotations

import asyncio

import pytest

from etcdforge.errors import MaintenanceError, PlanError
from etcdforge.etcd.types import Alarm
from etcdforge.observe.cluster import ClusterView, MemberView
from etcdforge.plan import Compact, Defragment, DisarmAlarms, MoveLeader, ProbeWrite, WaitHealthy
from etcdforge.runtime import maintenance_ops
from etcdforge.testing.fakes import FakeCluster, FakeServices
from etcdforge.verbs.maintenance.plan import (
    HashReport,
    defrag_timeout,
    plan_compact,
    plan_defrag,
    plan_disarm,
    plan_space_recover,
)

MIB = 2**20


def member(
    name: str, *, leader: bool = False, size: int = 100, used: int = 40, serving: bool = True
) -> MemberView:
    n = int(name[-1])
    return MemberView(
        0x100 + n, name, (f"https://127.0.0.{n}:2380",), False, serving, leader, "3.5.1",
        f"https://127.0.0.{n}:2379", serving, size * MIB, used * MIB, 500,
    )  # fmt: skip


def view(*members: MemberView, alarms: tuple[tuple[str, str], ...] = ()) -> ClusterView:
    return ClusterView(members, alarms=alarms, cluster_id=7)


THREE = view(member("etcd1"), member("etcd2", leader=True), member("etcd3"))


def test_defrag_goes_followers_first_then_the_leader_after_handing_over_with_a_gate_between() -> None:
    plan, skipped = plan_defrag(THREE)
    ids = [s.id for s in plan.steps]
    assert ids == [
        "etcd1/defragment", "etcd1/wait-healthy",
        "etcd3/defragment", "etcd3/wait-healthy",
        "etcd2/move-leader", "etcd2/defragment", "etcd2/wait-healthy",
    ]  # fmt: skip
    assert skipped == []
    move = plan.steps[4].action
    assert isinstance(move, MoveLeader) and move.to == "etcd3"  # to a member already done
    gate = plan.steps[1].action
    assert isinstance(gate, WaitHealthy) and gate.members == ("etcd1", "etcd2", "etcd3") and gate.need is None
    defrag = plan.steps[0].action
    assert isinstance(defrag, Defragment) and defrag.url == "https://127.0.0.1:2379"


def test_the_timeout_grows_with_the_database() -> None:
    assert defrag_timeout(0) == 60.0
    assert defrag_timeout(2 * 2**30) == 120.0
    big = view(member("etcd1", size=4096), member("etcd2", leader=True))
    steps = plan_defrag(big)[0].steps
    assert isinstance(steps[0].action, Defragment) and steps[0].action.timeout == pytest.approx(180.0)


def test_members_below_the_threshold_are_skipped_and_one_member_can_be_chosen() -> None:
    tidy = view(member("etcd1", used=95), member("etcd2", leader=True, used=10), member("etcd3", used=99))
    plan, skipped = plan_defrag(tidy, min_pct=20)
    assert [s.id for s in plan.steps] == ["etcd2/move-leader", "etcd2/defragment", "etcd2/wait-healthy"]
    assert len(skipped) == 2 and skipped[0].startswith("etcd1: 5% free pages")
    only, _ = plan_defrag(THREE, only="etcd3")
    assert [s.id for s in only.steps] == ["etcd3/defragment", "etcd3/wait-healthy"]
    with pytest.raises(PlanError, match="no member named 'etcd9'"):
        plan_defrag(THREE, only="etcd9")


def test_defrag_and_space_recover_refuse_with_a_member_down_compact_needs_only_a_quorum() -> None:
    degraded = view(member("etcd1"), member("etcd2", leader=True), member("etcd3", serving=False))
    with pytest.raises(PlanError, match="needs every member serving first: etcd3 is not"):
        plan_defrag(degraded)
    with pytest.raises(PlanError, match="etcd3 is not"):
        plan_space_recover(degraded)
    assert [s.id for s in plan_compact(degraded, 400).steps] == ["cluster/compact"]
    lost = view(member("etcd1"), member("etcd2", serving=False), member("etcd3", serving=False))
    with pytest.raises(PlanError, match="needs a serving quorum: 1 of 3"):
        plan_compact(lost, 400)
    with pytest.raises(PlanError, match="in the future"):
        plan_compact(THREE, 501)


def test_space_recover_compacts_defragments_every_member_disarms_then_proves_a_write() -> None:
    full = view(*THREE.members, alarms=(("etcd1", "NOSPACE"), ("etcd2", "NOSPACE")))
    plan, warnings = plan_space_recover(full)
    ids = [s.id for s in plan.steps]
    assert ids[0] == "cluster/compact" and ids[-2:] == ["cluster/disarm", "cluster/write-probe"]
    assert [i for i in ids if i.endswith("/defragment")] == [
        "etcd1/defragment",
        "etcd3/defragment",
        "etcd2/defragment",
    ]
    first = plan.steps[0].action
    assert isinstance(first, Compact) and first.revision == 500 and warnings == []
    assert plan_space_recover(THREE)[1] == ["no NOSPACE alarm is active"]
    assert plan_disarm(THREE, ("NOSPACE",)).empty
    assert [s.id for s in plan_disarm(full, ("NOSPACE",)).steps] == ["cluster/disarm"]


def test_the_member_whose_data_differs_from_the_majority_is_named() -> None:
    odd = HashReport(900, {"etcd1": (11, 5), "etcd2": (99, 5), "etcd3": (11, 5)})
    assert odd.odd_ones() == ["etcd2"] and not odd.agree()
    assert "`etcdforge member replace etcd2`" in odd.verdict()
    same = HashReport(900, {"etcd1": (11, 5), "etcd2": (11, 5)})
    assert same.agree() and same.odd_ones() == [] and "same data at revision 900" in same.verdict()
    split = HashReport(900, {"etcd1": (1, 5), "etcd2": (2, 5)})
    assert split.odd_ones() == [] and "no majority" in split.verdict()


def test_the_runtime_actions_against_the_fake_cluster() -> None:
    from etcdforge.spec import ClusterSpec

    spec = ClusterSpec.model_validate(
        {
            "name": "t",
            "token": "t",
            "members": [{"name": f"etcd{i}", "address": f"127.0.0.{i}"} for i in (1, 2, 3)],
        }
    )
    cluster = FakeCluster.of(spec, FakeServices(running=("etcd1", "etcd2", "etcd3")))

    def run(action: object) -> str:
        return asyncio.run(maintenance_ops.perform(cluster, action))  # type: ignore[arg-type]

    assert "MiB" in run(Defragment("etcd1", "https://127.0.0.1:2379", 60.0))
    assert ("defragment", "etcd1") in cluster.calls
    assert "removed" in run(Compact(5))
    assert "already compacted" in run(Compact(5))  # a re-run converges
    cluster.active_alarms = [Alarm(0x100, "NOSPACE")]
    with pytest.raises(Exception, match="space exceeded"):
        run(ProbeWrite("/etcdforge/write-probe"))
    assert run(DisarmAlarms(("NOSPACE",))) == "disarmed 1 alarm(s)"
    assert run(DisarmAlarms(("NOSPACE",))) == "no such alarm was active"
    assert "read back, deleted" in run(ProbeWrite("/etcdforge/write-probe")) and cluster.kv == {}

    class Stubborn(FakeCluster):
        async def disarm(
            self, alarm: Alarm | None = None, *, endpoint: str | None = None
        ) -> tuple[Alarm, ...]:
            return ()  # etcd raises it again at once: still over quota

    stubborn = Stubborn.of(spec, FakeServices(running=("etcd1", "etcd2", "etcd3")))
    stubborn.active_alarms = [Alarm(0x100, "NOSPACE")]
    with pytest.raises(MaintenanceError, match="NOSPACE still active"):
        asyncio.run(maintenance_ops.perform(stubborn, DisarmAlarms(("NOSPACE",))))
