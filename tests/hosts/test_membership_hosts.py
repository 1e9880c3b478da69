"""Membership changes on real SSH + systemd test hosts, under load (reliability.md S11–S14), and a
SIGKILLed `member add` re-run to completion."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
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
                for command in commands:
                    await asyncio.to_thread(run_cli, *command)
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


def test_sigkilled_member_add_is_completed_by_a_rerun(five: TestHosts, tmp_path: Path) -> None:
    ws = init_hosts_workspace(five, tmp_path / "kill", 3)
    assert isinstance(ws, Path)
    d = str(ws)
    run_cli("apply", "--dir", d, "--yes")
    h4 = five.hosts[3]
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcdforge", "member", "add", "etcd4", "--address", h4.address, "--dir", d],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def wait_for_learner() -> None:
        w, spec = load_workspace(ws)
        async with admin_client(spec, w, timeout=2.0) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(m.is_learner or not m.name for m in await client.member_list()):
                    return
                await asyncio.sleep(0.01)

    asyncio.run(wait_for_learner())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_cli("member", "add", "etcd4", "--address", h4.address, "--dir", d)
    assert names(ws) == spec_names(ws) == ["etcd1", "etcd2", "etcd3", "etcd4"]
    run_cli("health", "--dir", d)
