"""The writer workload and history checker against a real local cluster: a member restarted under load
loses no acknowledged write, and a tampered history is caught (the checker can fail)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from etcd_binaries import one_version
from support import run_cli

from etcdforge.etcd import EtcdClient, TlsFiles
from etcdforge.runtime import supervisor
from etcdforge.testing.workload import Writer, check_history
from etcdforge.workspace import load_workspace

pytestmark = pytest.mark.integration


@one_version()
def test_restart_a_member_under_load_loses_no_acknowledged_write(workspace: Path, etcd_bin: Path) -> None:
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    ws, spec = load_workspace(workspace)
    paths = ws.client_paths()
    tls = TlsFiles(ca=Path(paths.ca_cert), cert=Path(paths.cert), key=Path(paths.key))
    endpoints = [f"https://{m.address}:{spec.etcd.client_port}" for m in spec.members]

    async def scenario() -> None:
        async with EtcdClient(endpoints, tls, timeout=2.0) as client:
            writers = [Writer(client, writer_id=i) for i in range(2)]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(w.run(stop)) for w in writers]
            await asyncio.sleep(1.0)
            # stop one member (SIGTERM, like systemctl stop), keep writing, start it again
            await supervisor.stop(ws.member_pid("etcd2"))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(run_cli, "up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            history = [op for w in writers for op in w.history]
            result = await check_history(client, history)
            assert result.ok, result.problems
            assert result.acknowledged > 50, result  # the workload really ran (throughput floor)

            # the checker is not vacuous: a forged acknowledgement is reported as lost
            acked = next(op for op in history if op.outcome == "ok")
            forged = replace(acked, value="never-written")
            bad = await check_history(client, [*history, forged])
            assert not bad.ok and any("C1" in p for p in bad.problems)

    asyncio.run(scenario())


@one_version()
def test_mixed_workload_with_a_member_restart_passes_every_checker(
    workspace: Path, etcd_bin: Path, tmp_path: Path
) -> None:
    """reliability.md's workload (put/get/CAS/delete/serializable get, 3 clients) for ≈3 s with a member
    stopped and started in the middle; then C1–C6 and C9 (tool view) hold."""
    from etcdforge.testing.checkers import check_all, check_throughput
    from etcdforge.testing.workload import Workload
    from etcdforge.workspace import admin_client

    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    ws, spec = load_workspace(workspace)

    async def scenario() -> None:
        async with admin_client(spec, ws, timeout=2.0) as client:
            workload = Workload(client, clients=3, keys=8, seed=7, prefix="/mixed")
            stop = asyncio.Event()
            task = asyncio.create_task(workload.run(stop))
            await asyncio.sleep(1.0)
            fault = workload.clock()
            await supervisor.stop(ws.member_pid("etcd2"))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(run_cli, "up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
            await asyncio.sleep(1.0)
            stop.set()
            await task
            sentinel = await workload.sentinel()
            assert sentinel.outcome == "ok", sentinel

            floor = check_throughput(workload.history, start=workload.started, until=fault, floor=20)
            assert not floor, floor
            report = await check_all(
                client,
                workload.history,
                prefix=workload.prefix,
                start_revision=workload.start_revision,
                workspace_dir=workspace,
                converge_within=20,
                history_file=tmp_path / "history.jsonl",
            )
            assert report.ok, str(report)
            kinds = {op.kind for op in workload.history if op.outcome == "ok"}
            assert kinds == {"put", "get", "sget", "cas", "delete"}, kinds
            assert any(op.kind == "cas" and op.succeeded for op in workload.history)

    asyncio.run(scenario())
