"""Membership changes on real SSH + systemd test hosts, under load (reliability.md S11–S14), and a sample
of kill points: `member add` and `member remove` SIGKILLed at a step, then re-run to convergence."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from pathlib import Path

import pytest
from support import init_hosts_workspace, run_cli

from etcdforge.testing.hosts import TestHosts
from etcdforge.testing.workload import Writer, check_history
from etcdforge.workspace import admin_client, load_workspace


@pytest.fixture
def five(five_test_hosts: TestHosts) -> TestHosts:
    five_test_hosts.reset()
    return five_test_hosts


def names(ws: Path) -> list[str]:
    return sorted(m["name"] for m in json.loads(run_cli("members", "--dir", str(ws), "-o", "json").stdout))


def spec_names(ws: Path) -> list[str]:
    return sorted(m.name for m in load_workspace(ws)[1].members)


def under_load(ws: Path, *commands: tuple[str, ...]) -> None:
    """Run CLI commands one after another while a writer writes; then no acknowledged write is lost."""

    async def scenario() -> None:
        w, spec = load_workspace(ws)
        async with admin_client(spec, w, timeout=2.0) as client:
            writer = Writer(client, prefix="/hosts-load")
            stop = asyncio.Event()
            task = asyncio.create_task(writer.run(stop))
            await asyncio.sleep(0.5)
            try:
                for command in commands:  # a loaded 2-vCPU runner can make a step slow: 7 min hang guard
                    await asyncio.to_thread(functools.partial(run_cli, *command, timeout=420))
            finally:
                await asyncio.sleep(0.5)
                stop.set()
                await task
        w, spec = load_workspace(ws)
        async with admin_client(spec, w, timeout=2.0) as client:
            result = await check_history(client, writer.history)
        assert result.ok, result.problems
        assert result.acknowledged > 20, result

    asyncio.run(scenario())


@pytest.mark.timeout(900)  # long scenarios on booted hosts: the timeout catches hangs, not slowness
def test_scale_3_to_5_to_3_and_replace_under_load(five: TestHosts, tmp_path: Path) -> None:
    ws = init_hosts_workspace(five, tmp_path / "scale", 3)
    assert isinstance(ws, Path)
    d = str(ws)
    run_cli("apply", "--dir", d, "--yes")
    h4, h5 = five.hosts[3], five.hosts[4]
    under_load(
        ws,
        ("member", "add", "etcd4", "--address", h4.address, "--dir", d),
        ("member", "add", "etcd5", "--address", h5.address, "--dir", d),
    )
    assert names(ws) == spec_names(ws) == ["etcd1", "etcd2", "etcd3", "etcd4", "etcd5"]
    # the joined members' units are enabled, the CA key is on neither new host
    for h in (h4, h5):
        assert five.run(h, ["systemctl", "is-enabled", "etcd"]).stdout.strip() == "enabled"
        assert five.run(h, ["test", "-e", "/etc/etcd/pki/ca-key.pem"], check=False).returncode != 0
    under_load(
        ws,
        ("member", "remove", "etcd4", "--dir", d, "--yes"),
        ("member", "remove", "etcd5", "--dir", d, "--yes"),
    )
    assert names(ws) == spec_names(ws) == ["etcd1", "etcd2", "etcd3"]
    for h in (h4, h5):  # removed: unit stopped and disabled (no restart loop), data wiped
        assert five.run(h, ["systemctl", "is-active", "etcd"], check=False).stdout.strip() != "active"
        assert five.run(h, ["systemctl", "is-enabled", "etcd"], check=False).stdout.strip() != "enabled"
        assert five.run(h, ["test", "-e", "/var/lib/etcd/member"], check=False).returncode != 0

    # replace a dead member (kill -9 and stop its unit so it stays dead), under load
    five.kill_etcd(five.hosts[1])
    five.run(five.hosts[1], ["systemctl", "stop", "etcd"], check=False)
    under_load(ws, ("member", "replace", "etcd2", "--dir", d, "--yes"))
    assert names(ws) == ["etcd1", "etcd2", "etcd3"]
    run_cli("health", "--dir", d)


def test_remove_leader_and_a_member_that_cannot_start(five: TestHosts, tmp_path: Path) -> None:
    ws = init_hosts_workspace(five, tmp_path / "leader", 3)
    assert isinstance(ws, Path)
    d = str(ws)
    run_cli("apply", "--dir", d, "--yes")
    status = json.loads(run_cli("status", "--dir", d, "-o", "json").stdout)
    leader = next(s["member"] for s in status if s["is_leader"])
    under_load(ws, ("member", "remove", leader, "--dir", d, "--yes"))
    assert leader not in names(ws) and len(names(ws)) == 2

    # S14: the new host's peer port is taken -> the learner never starts -> rolled back
    h4 = five.hosts[3]
    five.run(
        h4, ["systemd-run", "--unit", "efblock", "python3", "-m", "http.server", "2380", "--bind", h4.address]
    )
    try:
        deadline = time.monotonic() + 10
        while not five.wait_tcp(h4, 2380) and time.monotonic() < deadline:
            time.sleep(0.1)
        failed = run_cli("member", "add", "etcd4", "--address", h4.address, "--dir", d, check=False)
    finally:
        five.run(h4, ["systemctl", "stop", "efblock"], check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "port 2380" in failed.stderr or "did not join" in failed.stderr
    assert sorted(names(ws)) == spec_names(ws) and len(names(ws)) == 2
    run_cli("health", "--dir", d)


@pytest.mark.timeout(900)  # long scenarios on booted hosts: the timeout catches hangs, not slowness
def test_member_add_and_remove_converge_from_a_sample_of_kill_points(five: TestHosts, tmp_path: Path) -> None:
    """The kill-point harness on test hosts (a sample; every point runs locally on both versions):
    `member add` and `member remove` SIGKILLed after a step (or in the middle of the promotion), another
    command probed, then re-run: it exits 0, and the cluster is healthy with exactly the spec's members,
    no learner and no change record left."""
    from killpoints import cli, kill_and_rerun, learn_steps, points

    ws = init_hosts_workspace(five, tmp_path / "kill", 3)
    assert isinstance(ws, Path)
    run_cli("apply", "--dir", str(ws), "--yes")
    add = ("member", "add", "etcd4", "--address", five.hosts[3].address)
    remove = ("member", "remove", "etcd4", "--yes")

    async def ok(*argv: str) -> None:
        code, out, err = await cli(ws, *argv)
        assert code == 0, (argv, out, err)

    async def converged(directory: Path) -> None:
        w, spec = load_workspace(directory)
        async with admin_client(spec, w, timeout=3.0) as client:
            assert all(h.healthy for h in await client.health_all())
            members = await client.member_list()
        assert not [m for m in members if m.is_learner or not m.name], members
        assert sorted(m.name for m in members) == sorted(m.name for m in spec.members)
        assert not (directory / "pending-change.json").exists()

    async def scenario() -> list[str]:
        done = []
        add_points = points(await learn_steps(ws, add))
        remove_points = points(await learn_steps(ws, remove))
        promote = next(p for p in add_points if p.startswith("during:etcd4/promote"))
        picks = [
            ("add", add_points[len(add_points) // 3]),
            ("add", promote),
            ("remove", remove_points[len(remove_points) // 2]),
        ]
        for verb, point in picks:
            argv, restore = (add, remove) if verb == "add" else (remove, add)
            if verb == "remove":
                await ok(*add)  # etcd4 is a member before a remove is killed
            outcome = await kill_and_rerun(
                ws, argv, point, probes=(("status", "-o", "json"),), check=converged
            )
            done.append(f"{verb} {point}: finished {outcome.finished}, re-run {outcome.rerun}")
            if verb == "add":
                await ok(*restore)
        return done

    for line in asyncio.run(scenario()):
        print(line)
