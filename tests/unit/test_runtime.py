"""The one runtime, unit-tested with the fakes shipped in :mod:`etcdforge.testing.fakes`: dispatch of
every action kind, the batch path (one round trip per host), the health gate, restarts, membership
calls, and the same plan on both modes' specs. No process, no socket, no real sleep."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from specs import HOSTS3

from etcdforge.errors import MemberStartError, StepError, WorkspaceError
from etcdforge.executor import execute
from etcdforge.hosts.base import CommandOp, RunResult, WriteOp
from etcdforge.hosts.errors import HostCommandError, HostError
from etcdforge.pki.rotation import RotationState
from etcdforge.plan import (
    AddLearner,
    HostCommand,
    InstallMemberPki,
    MoveLeader,
    Plan,
    PromoteLearner,
    PutFile,
    RemoveMember,
    RestartMember,
    StartMembers,
    Step,
    StopMember,
    WaitHealthy,
    WipeData,
)
from etcdforge.spec import MemberSpec
from etcdforge.testing.fakes import FakeCluster, FakeHost, FakeServices, fake_runtime
from etcdforge.verbs.rotate_ca import plan as rplan
from etcdforge.workspace import Workspace

SPEC = HOSTS3
LOCAL = SPEC.model_copy(update={"mode": "local"})
WS = Workspace(Path("/ws"))
NAMES = ("etcd1", "etcd2", "etcd3")


def run(plan_steps: list[Step] | tuple[Step, ...], runtime: object) -> None:
    asyncio.run(execute(Plan("apply", tuple(plan_steps)), runtime))  # type: ignore[arg-type]


def test_files_and_commands_go_to_the_members_host() -> None:
    runtime, *_ = fake_runtime(SPEC, WS)
    run(
        [
            Step("etcd2/file", "etcd2", PutFile("etcd2", "/etc/etcd/x", b"X", 0o640, "root", "etcd"), "r"),
            Step("etcd3/cmd", "etcd3", HostCommand("etcd3", ("systemctl", "daemon-reload")), "r"),
        ],
        runtime,
    )
    h2, h3 = runtime.hosts["etcd2"], runtime.hosts["etcd3"]
    assert isinstance(h2, FakeHost) and isinstance(h3, FakeHost)
    f = h2.files["/etc/etcd/x"]
    assert (f.data, f.mode, f.owner, f.group) == (b"X", 0o640, "root", "etcd")
    assert h3.commands == [("systemctl", "daemon-reload")] and not h2.commands


def test_a_host_this_run_is_not_connected_to_is_one_clear_error_never_a_key_error() -> None:
    runtime, *_ = fake_runtime(SPEC, WS, hosts={"etcd1": FakeHost("etcd1")})
    with pytest.raises(StepError) as info:
        run([Step("etcd2/cmd", "etcd2", HostCommand("etcd2", ("true",)), "r")], runtime)
    assert isinstance(info.value.__cause__, HostError)
    assert info.value.host == "etcd2" and "not connected to etcd2" in str(info.value)


def test_a_group_is_one_round_trip_per_host_with_other_actions_alongside() -> None:
    runtime, services, *_ = fake_runtime(SPEC, WS, services=FakeServices())
    steps = [
        Step(f"{n}/{i}", n, PutFile(n, f"/etc/etcd/{i}", b"d", 0o644, "root", "root"), "r", group="prep")
        for n in ("etcd1", "etcd2")
        for i in ("a", "b")
    ]
    steps.append(Step("etcd1/cmd", "etcd1", HostCommand("etcd1", ("true",)), "r", group="prep"))
    steps.append(Step("etcd3/start", "etcd3", StartMembers(("etcd3",)), "r", group="prep"))
    run(steps, runtime)
    h1, h2 = runtime.hosts["etcd1"], runtime.hosts["etcd2"]
    assert isinstance(h1, FakeHost) and isinstance(h2, FakeHost)
    assert [len(b) for b in h1.batches] == [3] and [len(b) for b in h2.batches] == [2]
    assert isinstance(h1.batches[0][2], CommandOp) and isinstance(h1.batches[0][0], WriteOp)
    assert services.running == {"etcd3"}


def test_a_failing_command_in_a_batch_names_the_step_group_and_the_host() -> None:
    failing = FakeHost("etcd1", {("false",): RunResult(("false",), 1, b"", b"nope\n")})
    runtime, *_ = fake_runtime(SPEC, WS, hosts={"etcd1": failing, "etcd2": FakeHost("etcd2")})
    steps = [
        Step("etcd1/cmd", "etcd1", HostCommand("etcd1", ("false",)), "r", group="g"),
        Step("etcd2/cmd", "etcd2", HostCommand("etcd2", ("true",)), "r", group="g"),
    ]
    with pytest.raises(StepError) as info:
        run(steps, runtime)
    assert isinstance(info.value.__cause__, HostCommandError)
    assert info.value.host == "etcd1" and "g (2 steps)" in str(info.value)


def test_services_start_stop_wipe_and_the_health_gate() -> None:
    services = FakeServices(running=["etcd1", "etcd2"])
    runtime, _, _, clock = fake_runtime(SPEC, WS, services=services)
    run(
        [
            Step("cluster/start", "cluster", StartMembers(NAMES), "r"),
            Step("cluster/wait-healthy", "cluster", WaitHealthy(NAMES, 30.0), "r"),
            Step("etcd3/stop", "etcd3", StopMember("etcd3"), "r"),
            Step("etcd3/wipe-data", "etcd3", WipeData("etcd3"), "r"),
        ],
        runtime,
    )
    assert services.calls == [("start", m) for m in NAMES] + [("stop", "etcd3"), ("wipe", "etcd3")]
    assert services.running == {"etcd1", "etcd2"} and services.wiped == {"etcd3"}
    assert clock.now < 1.0  # healthy at the first poll: no waiting


def test_a_member_that_fails_to_start_is_named_with_its_log_and_a_quorum_gate_lets_the_rest_go_on() -> None:
    def fresh() -> tuple[object, FakeServices]:
        services = FakeServices(broken={"etcd3": "panic: freepages: failed to get all reachable pages"})
        runtime, *_ = fake_runtime(SPEC, WS, services=services)
        return runtime, services

    runtime, _ = fresh()
    with pytest.raises(StepError) as info:
        run(
            [
                Step("cluster/start", "cluster", StartMembers(NAMES), "r"),
                Step("cluster/wait-healthy", "cluster", WaitHealthy(NAMES, 30.0), "r"),
            ],
            runtime,
        )
    cause = info.value.__cause__
    assert isinstance(cause, MemberStartError) and cause.member == "etcd3"
    assert "freepages" in cause.log_tail and set(cause.healthy) == {"etcd1", "etcd2"}

    runtime, _ = fresh()  # a gate on a quorum: etcd3 down does not hold the change up
    run(
        [
            Step("cluster/start", "cluster", StartMembers(NAMES), "r"),
            Step("cluster/quorum", "cluster", WaitHealthy(NAMES, 30.0, need=2), "r"),
        ],
        runtime,
    )


def test_a_member_that_never_answers_times_out_on_the_fake_clock() -> None:
    services = FakeServices(running=["etcd1", "etcd2"])
    runtime, _, _, clock = fake_runtime(SPEC, WS, services=services)
    with pytest.raises(StepError, match="etcd3 not healthy after 5s"):
        run([Step("w", "cluster", WaitHealthy(NAMES, 5.0), "r")], runtime)
    assert 5.0 <= clock.now < 6.0  # fake time only


def test_restart_goes_through_the_service_manager_then_gates_on_the_whole_cluster() -> None:
    services = FakeServices(running=NAMES)
    runtime, *_ = fake_runtime(SPEC, WS, services=services)
    run([Step("etcd2/restart", "etcd2", RestartMember("etcd2", 30.0), "r")], runtime)
    assert services.calls == [("restart", "etcd2")] and services.running == set(NAMES)

    services = FakeServices(running=NAMES, broken={"etcd2": "bad certificate"})
    runtime, *_ = fake_runtime(SPEC, WS, services=services)
    with pytest.raises(StepError) as info:
        run([Step("etcd2/restart", "etcd2", RestartMember("etcd2", 30.0), "r")], runtime)
    assert isinstance(info.value.__cause__, MemberStartError)
    assert info.value.__cause__.log_tail == "bad certificate"


def test_learner_added_started_promoted_then_removed_through_the_cluster_port() -> None:
    etcd4 = MemberSpec(name="etcd4", address="10.213.77.4", joined=True)
    grown = SPEC.model_copy(update={"members": (*SPEC.members, etcd4)})
    services = FakeServices(running=NAMES)
    cluster = FakeCluster.of(SPEC, services)
    runtime, *_ = fake_runtime(grown, WS, services=services, cluster=cluster)
    peer = "https://10.213.77.4:2380"
    cluster.bind("etcd4", peer)
    steps = [
        Step("cluster/add-learner", "cluster", AddLearner("etcd4", peer), "r"),
        Step("etcd4/start", "etcd4", StartMembers(("etcd4",)), "r"),
        Step("etcd4/promote", "cluster", PromoteLearner("etcd4", peer, 60.0), "r"),
        Step("cluster/wait", "cluster", WaitHealthy((*NAMES, "etcd4"), 30.0, need=3), "r"),
    ]
    run(steps, runtime)
    new = next(m for m in cluster.members if m.peer_url == peer)
    assert not new.learner and [c[0] for c in cluster.calls] == ["add", "promote"]
    run(steps[:1], runtime)  # added again: already registered, nothing added
    assert [c[0] for c in cluster.calls] == ["add", "promote"]

    run([Step("etcd1/move-leader", "etcd1", MoveLeader("etcd2"), "r")], runtime)
    assert cluster.leader == cluster.members[1].id
    remove = Step("etcd4/remove", "cluster", RemoveMember("etcd4", new.id), "r")
    run([remove], runtime)
    run([remove], runtime)  # idempotent
    assert all(m.peer_url != peer for m in cluster.members)


def test_a_learner_whose_process_died_is_reported_long_before_the_promote_timeout() -> None:
    services = FakeServices(running=NAMES)
    cluster = FakeCluster.of(SPEC, services)
    runtime, _, _, clock = fake_runtime(SPEC, WS, services=services, cluster=cluster)
    peer = "https://10.213.77.4:2380"
    run([Step("cluster/add-learner", "cluster", AddLearner("etcd4", peer), "r")], runtime)
    with pytest.raises(StepError) as info:
        run([Step("etcd4/promote", "cluster", PromoteLearner("etcd4", peer, 600.0), "r")], runtime)
    assert isinstance(info.value.__cause__, MemberStartError) and clock.now < 5.0


def test_member_pki_is_read_when_the_step_runs_and_identical_files_are_not_rewritten(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    src = tmp_path / "pki" / "etcd1-server.pem"
    host = FakeHost("etcd1")
    runtime, *_ = fake_runtime(LOCAL, ws, hosts={"etcd1": host})
    step = Step(
        "etcd1/install-pki", "etcd1", InstallMemberPki("etcd1", ((str(src), "/m/s.pem", 0o644),)), "r"
    )
    with pytest.raises(StepError) as info:
        run([step], runtime)  # not issued yet
    assert isinstance(info.value.__cause__, WorkspaceError)
    src.parent.mkdir()
    src.write_bytes(b"CERT")  # an earlier step issues it: the value is read now, not at planning time
    run([step], runtime)
    assert host.files["/m/s.pem"].data == b"CERT"
    assert asyncio.run(runtime.perform(step.action)) == "0 file(s) installed"


def test_an_action_no_runtime_knows_is_a_planner_bug() -> None:
    runtime, *_ = fake_runtime(SPEC, WS)
    with pytest.raises(TypeError):
        asyncio.run(runtime.perform(object()))  # type: ignore[arg-type]


def test_the_same_rotation_phase_runs_the_same_way_in_both_modes(tmp_path: Path) -> None:
    """One planner, one runtime: a CA trust phase differs between the modes only in where the CA file
    lives and who owns it. (Its records and the trust bundle are written in the workspace.)"""
    ws = Workspace(tmp_path)
    state = RotationState("trust-both", "a", "b", "t")
    seen = {}
    for spec in (SPEC, LOCAL):
        services = FakeServices(running=NAMES)
        runtime, _, cluster, _ = fake_runtime(spec, ws, services=services)
        steps = rplan.trust_phase_steps(spec, ws, state, trusted_pem=b"BUNDLE", leader="etcd1", timeout=30.0)
        asyncio.run(execute(Plan("rotate-ca", tuple(steps)), runtime))
        files = {
            (n, p, f.owner)
            for n, h in runtime.hosts.items()
            for p, f in h.files.items()  # type: ignore[attr-defined]
        }
        seen[spec.mode] = (services.calls, [c[0] for c in cluster.calls], files)
    assert seen["hosts"][0] == seen["local"][0] == [("restart", n) for n in ("etcd2", "etcd3", "etcd1")]
    assert seen["hosts"][1] == seen["local"][1] == ["move-leader"]
    assert {(n, o) for n, _, o in seen["hosts"][2]} == {(n, "root") for n in NAMES}
    assert {(n, p) for n, p, _ in seen["local"][2]} == {(n, ws.member_paths(n).ca_cert) for n in NAMES}
    assert (ws.trust_bundle).read_bytes() == b"BUNDLE"


def test_an_add_that_never_joined_is_rolled_back_through_the_ports(tmp_path: Path) -> None:
    """member add's rollback, with fakes: the learner is removed in etcd, the member stopped and its
    data wiped (without asking: a learner that never joined holds nothing anybody wants), the record
    cleared; run again it only stops and wipes (nothing is registered any more)."""
    from etcdforge.verbs.member.run import roll_back_add
    from etcdforge.verbs.member.steps import PENDING_FILE

    ws = Workspace(tmp_path)
    etcd4 = MemberSpec(name="etcd4", address="10.213.77.4", joined=True)
    grown = SPEC.model_copy(update={"members": (*SPEC.members, etcd4)})
    services = FakeServices(running=NAMES, broken={"etcd4": "panic: corrupt WAL"})
    cluster = FakeCluster.of(SPEC, services)
    runtime, *_ = fake_runtime(grown, ws, services=services, cluster=cluster)
    peer = "https://10.213.77.4:2380"
    (tmp_path / PENDING_FILE).write_text('{"op": "member-add"}')
    run(
        [
            Step("cluster/add-learner", "cluster", AddLearner("etcd4", peer), "r"),
            Step("etcd4/start", "etcd4", StartMembers(("etcd4",)), "r"),
        ],
        runtime,
    )
    plan = asyncio.run(roll_back_add(grown, ws, etcd4, runtime, None, clear_record=True))
    assert [s.id for s in plan.steps] == [
        "etcd4/roll-back",
        "etcd4/stop",
        "etcd4/wipe-data",
        "workspace/clear-change",
    ]
    assert not plan.destructive  # nothing to confirm
    assert all(m.peer_url != peer for m in cluster.members) and services.wiped == {"etcd4"}
    assert not (tmp_path / PENDING_FILE).exists()
    again = asyncio.run(roll_back_add(grown, ws, etcd4, runtime, None, clear_record=False))
    assert [s.id for s in again.steps] == ["etcd4/stop", "etcd4/wipe-data"]
