"""Pure planning for local mode, the executor with a fake runtime, and the supervisor's PID safety."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etcdforge import render, topology
from etcdforge.errors import MemberStartError, PlanError, StepError, WorkspaceError
from etcdforge.executor import execute
from etcdforge.plan import (
    InstallMemberPki,
    IssueCerts,
    Plan,
    RemoveTree,
    StartMembers,
    Step,
    StopMember,
    WaitHealthy,
    WaitPeerServing,
    WriteFile,
)
from etcdforge.runtime import supervisor
from etcdforge.spec import dump_spec
from etcdforge.verbs.up.plan import (
    LocalObserved,
    MemberObserved,
    member_pki_files,
    new_local_spec,
    plan_destroy,
    plan_down,
    plan_up,
)
from etcdforge.workspace import Workspace

WS = Workspace(Path("/ws"))
BIN = Path("/usr/bin/etcd")


def spec3():
    return new_local_spec(members=3, name="t", etcd_binary=None, is_free=lambda ip, port: True, token="t-1")


def observed(
    spec, *, running=False, data=True, configs=True, pki=True, spec_text=True, env=True
) -> LocalObserved:
    control = {
        src: b"pem:" + src.encode() for m in spec.members for src, _, _ in member_pki_files(WS, m.name)
    }
    members = {}
    for m in spec.members:
        files = member_pki_files(WS, m.name)
        members[m.name] = MemberObserved(
            running=running,
            has_data=data,
            config=render.etcd_config(spec, m, WS.member_paths(m.name)) if configs else None,
            pki={dst: (control[src] if pki else None) for src, dst, _ in files},
        )
    from etcdforge import topology

    env_file = render.etcdctl_env(topology.client_urls(spec), WS.client_paths()) if env else None
    return LocalObserved(spec_text=dump_spec(spec) if spec_text else None, members=members, env_file=env_file)


def control_pki(spec):
    return {src: b"pem:" + src.encode() for m in spec.members for src, _, _ in member_pki_files(WS, m.name)}


def ids(plan: Plan) -> list[str]:
    return [s.id for s in plan.steps]


def test_new_workspace_plans_everything_in_order() -> None:
    spec = spec3()
    obs = observed(spec, data=False, configs=False, pki=False, spec_text=False, env=False)
    plan = plan_up(
        spec, WS, obs, etcd_binary=BIN, pki_items=(("ca", "missing"),), pki_plan=None, control_pki={}
    )
    assert ids(plan) == [
        "workspace/write-spec",
        "pki/issue",
        "etcd1/install-pki",
        "etcd1/write-config",
        "etcd2/install-pki",
        "etcd2/write-config",
        "etcd3/install-pki",
        "etcd3/write-config",
        "workspace/write-env",  # before the starts: a degraded start still leaves a usable environment
        "workspace/record-bootstrap",
        "etcd1/start",
        "etcd1/peer-serving",  # the next member's bootstrap check then finds etcd1 serving
        "etcd2/start",
        "etcd2/peer-serving",
        "etcd3/start",  # (nothing starts after the last)
        "cluster/wait-healthy",
        "workspace/clear-bootstrap",
    ]
    waits = [s.action for s in plan.steps if isinstance(s.action, WaitPeerServing)]
    assert [(w.member, w.url) for w in waits] == [
        ("etcd1", topology.peer_url(spec, spec.members[0])),
        ("etcd2", topology.peer_url(spec, spec.members[1])),
    ]
    # the CA key is never among a member's files
    for step in plan.steps:
        if isinstance(step.action, InstallMemberPki):
            assert not any("ca-key" in src or "ca-key" in dst for src, dst, _ in step.action.files)


def test_running_cluster_plans_nothing() -> None:
    spec = spec3()
    plan = plan_up(
        spec,
        WS,
        observed(spec, running=True),
        etcd_binary=BIN,
        pki_items=(),
        pki_plan=None,
        control_pki=control_pki(spec),
    )
    assert plan.empty


def test_stopped_cluster_plans_only_starts_and_health() -> None:
    spec = spec3()
    plan = plan_up(
        spec, WS, observed(spec), etcd_binary=BIN, pki_items=(), pki_plan=None, control_pki=control_pki(spec)
    )
    assert ids(plan) == ["etcd1/start", "etcd2/start", "etcd3/start", "cluster/wait-healthy"]
    start = plan.steps[0].action
    assert isinstance(start, StartMembers) and start.members == ("etcd1",)
    assert str(BIN) in plan.steps[0].reason  # the binary it will run is in the plan


def test_reissued_member_cert_is_reinstalled_for_that_member_only() -> None:
    spec = spec3()
    plan = plan_up(
        spec,
        WS,
        observed(spec, running=False),
        etcd_binary=BIN,
        pki_items=(("etcd2-peer", "SANs differ: +127.0.0.9"),),
        pki_plan=None,
        control_pki=control_pki(spec),
    )
    assert "etcd2/install-pki" in ids(plan)
    assert "etcd1/install-pki" not in ids(plan)
    assert "SANs differ" in plan.steps[0].reason


def test_a_wiped_member_is_refused_not_bootstrapped_afresh() -> None:
    spec = spec3()
    obs = observed(spec)
    members = dict(obs.members)
    members["etcd2"] = MemberObserved(
        running=False, has_data=False, config=members["etcd2"].config, pki=members["etcd2"].pki
    )
    with pytest.raises(PlanError, match="etcd2 have no data while etcd1, etcd3 do"):
        plan_up(
            spec,
            WS,
            LocalObserved(obs.spec_text, members, obs.env_file),
            etcd_binary=BIN,
            pki_items=(),
            pki_plan=None,
            control_pki=control_pki(spec),
        )


def test_an_interrupted_first_start_resumes_as_a_bootstrap() -> None:
    """Killed after etcd1 started (it has data now): while the bootstrap record exists, the members without
    data are the rest of the new cluster, started as such; the record goes once it is healthy."""
    spec = spec3()
    obs = observed(spec)
    members = dict(obs.members)
    for name in ("etcd2", "etcd3"):
        members[name] = MemberObserved(running=False, has_data=False, config=members[name].config,
                                       pki=members[name].pki)  # fmt: skip
    members["etcd1"] = MemberObserved(running=True, has_data=True, config=members["etcd1"].config,
                                      pki=members["etcd1"].pki)  # fmt: skip
    resumed = LocalObserved(obs.spec_text, members, obs.env_file, bootstrapping=True)
    plan = plan_up(
        spec, WS, resumed, etcd_binary=BIN, pki_items=(), pki_plan=None, control_pki=control_pki(spec)
    )
    assert ids(plan) == [
        "etcd2/start",
        "etcd2/peer-serving",
        "etcd3/start",
        "cluster/wait-healthy",
        "workspace/clear-bootstrap",
    ]
    # interrupted and stopped (Ctrl-C stops what the run started): etcd1 has data and starts first; the
    # new members after it still wait for the one before to serve (etcd1 binds its peer port before it
    # serves it too, while it reads its WAL)
    members["etcd1"] = MemberObserved(running=False, has_data=True, config=members["etcd1"].config,
                                      pki=members["etcd1"].pki)  # fmt: skip
    plan = plan_up(spec, WS, LocalObserved(obs.spec_text, members, obs.env_file, bootstrapping=True),
                   etcd_binary=BIN, pki_items=(), pki_plan=None, control_pki=control_pki(spec))  # fmt: skip
    assert ids(plan)[:5] == [
        "etcd1/start",
        "etcd1/peer-serving",
        "etcd2/start",
        "etcd2/peer-serving",
        "etcd3/start",
    ]
    # killed while waiting, every member started: the re-run still waits for health before it clears
    members = {
        n: MemberObserved(running=True, has_data=True, config=m.config, pki=m.pki) for n, m in members.items()
    }
    plan = plan_up(spec, WS, LocalObserved(obs.spec_text, members, obs.env_file, bootstrapping=True),
                   etcd_binary=BIN, pki_items=(), pki_plan=None, control_pki=control_pki(spec))  # fmt: skip
    assert ids(plan) == ["cluster/wait-healthy", "workspace/clear-bootstrap"]


def test_running_member_with_changed_config_is_refused() -> None:
    spec = spec3()
    obs = observed(spec, running=True)
    members = dict(obs.members)
    members["etcd1"] = MemberObserved(running=True, has_data=True, config=b"old", pki=members["etcd1"].pki)
    with pytest.raises(PlanError, match="running with a different config"):
        plan_up(
            spec,
            WS,
            LocalObserved(obs.spec_text, members, obs.env_file),
            etcd_binary=BIN,
            pki_items=(),
            pki_plan=None,
            control_pki=control_pki(spec),
        )


def test_down_and_destroy_plans() -> None:
    spec = spec3()
    assert plan_down(spec, observed(spec)).empty
    assert ids(plan_down(spec, observed(spec, running=True))) == ["etcd1/stop", "etcd2/stop", "etcd3/stop"]
    destroy = plan_destroy(spec, WS, observed(spec, running=True))
    assert ids(destroy)[-1] == "workspace/remove"
    hosts = spec.model_copy(update={"mode": "hosts"})
    with pytest.raises(WorkspaceError):
        plan_destroy(hosts, WS, observed(spec))


def test_new_spec_takes_the_first_free_block() -> None:
    taken = {("127.0.0.1", 2379), ("127.0.0.2", 2380)}
    spec = new_local_spec(members=3, name="t", etcd_binary=None, is_free=lambda ip, p: (ip, p) not in taken)
    assert [m.address for m in spec.members] == ["127.0.0.4", "127.0.0.5", "127.0.0.6"]
    with pytest.raises(PlanError, match="no free block"):
        new_local_spec(members=3, name="t", etcd_binary=None, is_free=lambda ip, p: False)
    with pytest.raises(PlanError, match="between 1 and"):
        new_local_spec(members=10, name="t", etcd_binary=None, is_free=lambda ip, p: True)


class FakeRuntime:
    """A runtime at our own port: records actions, fails where told."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.done: list[str] = []
        self.fail_on = fail_on

    async def _do(self, kind: str) -> str:
        if kind == self.fail_on:
            raise MemberStartError("boom", member="etcd2", log_tail="listen tcp: address already in use")
        self.done.append(kind)
        return "ok"

    async def perform(self, action: object) -> str:
        kinds = {
            WriteFile: "write",
            IssueCerts: "issue",
            InstallMemberPki: "install",
            StartMembers: "start",
            StopMember: "stop",
            WaitHealthy: "wait",
            RemoveTree: "remove",
        }
        return await self._do(kinds[type(action)])


def test_executor_runs_in_order_and_stops_at_the_first_failure() -> None:
    plan = Plan(
        verb="up",
        steps=(
            Step("a/write", "local", WriteFile("/x", b""), "r"),
            Step("etcd2/start", "etcd2", StartMembers(("etcd2",)), "r"),
            Step("cluster/wait-healthy", "local", WaitHealthy(("etcd2",), 1.0), "r"),
            Step("b/remove", "local", RemoveTree("/y"), "r"),
        ),
    )
    ok = FakeRuntime()
    asyncio.run(execute(plan, ok))
    assert ok.done == ["write", "start", "wait", "remove"]

    failing = FakeRuntime(fail_on="wait")
    with pytest.raises(StepError) as info:
        asyncio.run(execute(plan, failing))
    assert failing.done == ["write", "start"]
    assert str(info.value).startswith("cluster/wait-healthy: boom")
    assert isinstance(info.value.__cause__, MemberStartError)


def test_plan_json_hides_secret_contents() -> None:
    step = Step(
        "etcd1/key", "etcd1", WriteFile("/k", b"-----BEGIN EC PRIVATE KEY-----", 0o600, secret=True), "r"
    )
    data = Plan(verb="up", steps=(step,)).to_json()
    assert data["steps"][0]["sha256"] == "(secret)"
    assert "PRIVATE" not in repr(data)


def test_supervisor_never_signals_a_recycled_pid(tmp_path: Path) -> None:
    """A pid file whose PID now belongs to another process (other start time) is treated as stale."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pid_file = tmp_path / "etcd.pid"
        pid_file.write_text(f"{other.pid} 1\n")  # right PID, wrong start time
        assert supervisor.running_pid(pid_file) is None
        assert asyncio.run(supervisor.stop(pid_file)) is False
        assert other.poll() is None  # untouched
        assert not pid_file.exists()
    finally:
        other.kill()
        other.wait()


def test_supervisor_finds_a_member_process_its_pid_file_never_recorded(tmp_path: Path) -> None:
    """A run killed between starting a member and writing its pid file: the process is still found (by
    ``--config-file`` naming a file in the member's directory, relative to its cwd) and stopped."""
    member = tmp_path / "members" / "etcd2"
    member.mkdir(parents=True)
    argv = [sys.executable, "-c", "import time; time.sleep(30)", "--config-file", "etcd.conf.yml"]
    orphan = subprocess.Popen(argv, cwd=member)
    elsewhere = subprocess.Popen(argv, cwd=tmp_path)  # another directory's: not this member's
    try:
        pid_file = member / "etcd.pid"
        for _ in range(500):  # until its command line is readable
            if supervisor.running_pid(pid_file) is not None:
                break
            time.sleep(0.01)
        assert supervisor.running_pid(pid_file) == orphan.pid
        assert asyncio.run(supervisor.stop(pid_file, timeout=0)) is True
        orphan.wait(timeout=10)
        assert supervisor.running_pid(pid_file) is None and elsewhere.poll() is None
    finally:
        for p in (orphan, elsewhere):
            p.kill()
            p.wait()


def test_supervisor_start_and_stop(tmp_path: Path) -> None:
    pid_file, log = tmp_path / "p.pid", tmp_path / "p.log"
    started = supervisor.start(
        "sleeper", [sys.executable, "-c", "print('hello', flush=True); import time; time.sleep(30)"],
        log_file=log, pid_file=pid_file, cwd=tmp_path,
    )  # fmt: skip
    try:
        for _ in range(500):  # wait for the child's first line (bounded), then stop it
            if "hello" in supervisor.log_tail(log):
                break
            time.sleep(0.01)
        assert supervisor.running_pid(pid_file) == started.process.pid
        assert os.stat(pid_file).st_mode & 0o777 == 0o600
        assert asyncio.run(supervisor.stop(pid_file, timeout=5)) is True
        assert supervisor.running_pid(pid_file) is None
        assert "hello" in supervisor.log_tail(log)
    finally:
        if started.process.poll() is None:
            started.process.kill()
            started.process.wait()
