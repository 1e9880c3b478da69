"""Membership changes in local mode with real etcd, under load (reliability.md S11–S14), and resumes.

A writer runs through every change; afterwards every acknowledged write must be there (C1/C2/C5), and a
monitor sampling the member list must never have seen two pending changes at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from etcd_binaries import one_version
from support import run_cli

from etcdforge.etcd import EtcdClient
from etcdforge.runtime import cluster_ops, supervisor
from etcdforge.testing.workload import Writer, check_history
from etcdforge.verbs.member.plan import next_local_address
from etcdforge.verbs.up.run import port_is_free
from etcdforge.workspace import admin_client, load_workspace

pytestmark = pytest.mark.integration

#: a scenario the suite runs on one version only (the other version runs the others; both run the kill
#: points and the unit tests), to keep the suite within its time budget


def client(directory: Path) -> EtcdClient:
    ws, spec = load_workspace(directory)
    return admin_client(spec, ws, timeout=2.0)


def member_names(directory: Path) -> list[str]:
    return sorted(
        m["name"] for m in json.loads(run_cli("members", "--dir", str(directory), "-o", "json").stdout)
    )


def spec_names(directory: Path) -> list[str]:
    return sorted(m.name for m in load_workspace(directory)[1].members)


async def under_load(directory: Path, change: Callable[[], Awaitable[None]]) -> None:
    """Run ``change`` while a writer writes and a monitor watches for >1 pending membership change."""
    async with client(directory) as c:
        writer = Writer(c, prefix="/load")
        stop = asyncio.Event()
        pending_max = 0

        async def monitor() -> None:
            nonlocal pending_max
            while not stop.is_set():
                try:
                    members = await c.member_list()
                    pending_max = max(pending_max, sum(1 for m in members if m.is_learner or not m.name))
                except Exception:
                    pass
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(writer.run(stop)), asyncio.create_task(monitor())]
        await asyncio.sleep(0.5)
        try:
            await change()
        finally:
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*tasks)
        # the full history is read back through a fresh view of the (possibly changed) cluster
    async with client(directory) as c:
        result = await check_history(c, writer.history)
    assert result.ok, result.problems
    assert result.acknowledged > 20, result
    assert pending_max <= 1, f"saw {pending_max} pending membership changes at once"


def cli(*args: str) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        await asyncio.to_thread(run_cli, *args)

    return go


@one_version("etcd-3.5-distro")
def test_scale_3_to_5_to_3_under_load(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))

    async def scale() -> None:
        for args in (
            ("member", "add", "etcd4", "--dir", d, "--etcd-bin", str(etcd_bin)),
            ("member", "add", "etcd5", "--dir", d, "--etcd-bin", str(etcd_bin)),
        ):
            await cli(*args)()
        assert member_names(workspace) == ["etcd1", "etcd2", "etcd3", "etcd4", "etcd5"]
        await cli("member", "remove", "etcd4", "--dir", d, "--yes")()
        await cli("member", "remove", "etcd5", "--dir", d, "--yes")()

    asyncio.run(under_load(workspace, scale))
    assert member_names(workspace) == spec_names(workspace) == ["etcd1", "etcd2", "etcd3"]
    ws, _ = load_workspace(workspace)
    for gone in ("etcd4", "etcd5"):
        assert supervisor.running_pid(ws.member_pid(gone)) is None  # stopped
        assert not Path(ws.member_paths(gone).data_dir).exists()  # data wiped
    run_cli("health", "--dir", d)
    assert "nothing to do" in run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin), "--dry-run").stdout


@one_version()
def test_replace_a_dead_member_under_load(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    ws, _ = load_workspace(workspace)
    pid = supervisor.running_pid(ws.member_pid("etcd2"))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # etcd2 dies (its data is suspect now)

    asyncio.run(under_load(workspace, cli("member", "replace", "etcd2", "--dir", d, "--yes")))
    assert member_names(workspace) == ["etcd1", "etcd2", "etcd3"]
    run_cli("health", "--dir", d)


@one_version()
def test_remove_the_leader_under_load(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    status = json.loads(run_cli("status", "--dir", d, "-o", "json").stdout)
    leader = next(s["member"] for s in status if s["is_leader"])
    plan = json.loads(run_cli("member", "remove", leader, "--dir", d, "--dry-run", "-o", "json").stdout)
    ids = [s["id"] for s in plan["steps"] if not s["id"].startswith("safety/")]  # a safety snapshot first
    assert ids[:3] == ["workspace/record-change", f"{leader}/move-leader", f"{leader}/remove"]
    assert [s["id"] for s in plan["steps"] if s.get("destroys")] == [f"{leader}/wipe-data"]
    asyncio.run(under_load(workspace, cli("member", "remove", leader, "--dir", d, "--yes")))
    assert leader not in member_names(workspace)
    assert len(member_names(workspace)) == 2
    run_cli("health", "--dir", d)


@one_version()
def test_a_member_that_cannot_start_is_rolled_back(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    _, spec = load_workspace(workspace)
    address = "127.0.0.95"
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind((address, spec.etcd.peer_port))  # its peer port is taken: etcd cannot start
    blocker.listen()
    try:
        failed = run_cli(
            "member", "add", "etcd4", "--address", address, "--dir", d, "--etcd-bin", str(etcd_bin),
            "--timeout", "20", check=False,
        )  # fmt: skip
    finally:
        blocker.close()
    assert failed.returncode != 0
    assert "etcd4 did not join" in failed.stderr and "rolled back" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert member_names(workspace) == spec_names(workspace) == ["etcd1", "etcd2", "etcd3"]
    run_cli("health", "--dir", d)
    # and a later add works
    run_cli("member", "add", "etcd4", "--dir", d, "--etcd-bin", str(etcd_bin))
    assert member_names(workspace) == ["etcd1", "etcd2", "etcd3", "etcd4"]


@one_version()
def test_interrupted_add_and_remove_resume(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))

    # an add killed right after registering the learner (state reproduced exactly: the cluster is the
    # only record of progress) resumes: no second learner, the member is started and promoted
    _, spec = load_workspace(workspace)
    address = next_local_address(spec, [], port_is_free)

    async def register() -> None:
        async with client(workspace) as c:
            # (with the tool's own retry: etcd refuses changes for a few seconds after a start)
            await cluster_ops.add_learner(c, f"https://{address}:2380")

    asyncio.run(register())
    other = run_cli("member", "add", "etcd9", "--dir", d, "--etcd-bin", str(etcd_bin), check=False)
    assert other.returncode != 0 and "pending" in other.stderr  # never two pending changes
    run_cli("member", "add", "etcd4", "--address", address, "--dir", d, "--etcd-bin", str(etcd_bin))
    assert member_names(workspace) == spec_names(workspace) == ["etcd1", "etcd2", "etcd3", "etcd4"]

    # (a real SIGKILL of the tool at every step of an add or a remove: test_killpoints.py)

    # a remove interrupted after etcd dropped the member (reproduced: removed behind the tool's back)
    async def drop() -> None:
        async with client(workspace) as c:
            target = next(m for m in await c.member_list() if m.name == "etcd4")
            await cluster_ops.remove(c, target.id)

    asyncio.run(drop())
    run_cli("member", "remove", "etcd4", "--dir", d, "--yes")
    assert member_names(workspace) == spec_names(workspace) == ["etcd1", "etcd2", "etcd3"]
    ws, _ = load_workspace(workspace)
    assert not Path(ws.member_paths("etcd4").data_dir).exists()
    run_cli("health", "--dir", d)
