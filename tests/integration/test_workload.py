"""The writer workload and history checker against a real local cluster: a member restarted under load
loses no acknowledged write, and a tampered history is caught (the checker can fail)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from support import run_cli

from etcdforge.etcd import EtcdClient, TlsFiles
from etcdforge.services import local as supervisor
from etcdforge.testing.workload import Writer, check_history
from etcdforge.workspace import load_workspace

pytestmark = pytest.mark.integration


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
