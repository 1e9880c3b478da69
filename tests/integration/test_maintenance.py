"""Maintenance against real etcd: a rolling defrag (followers first, the leader last after handing
over, a health gate between members) under a writer, compaction, NOSPACE and its recovery, a member
whose data differs from the others, and refusals when the cluster is not healthy enough."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from etcd_binaries import one_version
from support import run_cli, under_load

from etcdforge.errors import EtcdError
from etcdforge.runtime import supervisor
from etcdforge.workspace import admin_client, load_workspace

pytestmark = pytest.mark.integration

#: a scenario the suite runs on one version only (the other version runs the others; both run the kill
#: points and the unit tests), to keep the suite within its time budget


def statuses(workspace: Path) -> dict[str, dict[str, object]]:
    # (exit 1 when a member is down: the rows still say what answers)
    rows = json.loads(run_cli("status", "--dir", str(workspace), "-o", "json", check=False).stdout)
    return {r["member"]: r for r in rows}


def up(workspace: Path, etcd_bin: Path, extra: str = "") -> None:
    if extra:
        workspace.mkdir(parents=True, exist_ok=True)
        members = "".join(f"  - {{name: etcd{i}, address: 127.0.0.{80 + i}}}\n" for i in (1, 2, 3))
        (workspace / "cluster.yaml").write_text(
            f"name: mt\ntoken: mt-80\netcd: {{{extra}}}\nmembers:\n{members}"
        )
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))


def fragment(workspace: Path, n: int = 200, size: int = 16384) -> int:
    """Write ``n`` values of ``size`` bytes, delete them, compact: the database keeps its size, mostly
    free pages. Returns the revision compacted to."""

    async def go() -> int:
        ws, spec = load_workspace(workspace)
        async with admin_client(spec, ws, timeout=5.0) as client:
            for i in range(n):
                await client.put(f"/frag/{i}", os.urandom(size // 2).hex())
            await client.delete("/frag/", prefix=True)
            return await client.put("/frag-done", "1")

    return asyncio.run(go())


@one_version("etcd-3.5-distro")
def test_defrag_rolls_followers_first_the_leader_last_under_a_writer(workspace: Path, etcd_bin: Path) -> None:
    up(workspace, etcd_bin)
    revision = fragment(workspace)
    compacted = run_cli("compact", "--dir", str(workspace), "--revision", str(revision))
    assert "compacted" in compacted.stdout
    deadline = time.monotonic() + 10  # etcd counts the freed pages once its backend commits (a write)
    while True:
        run_cli("kv", "put", "--dir", str(workspace), "/tick", "1")
        time.sleep(0.3)
        before = statuses(workspace)
        fragmented = all(int(r["db_size"]) > 2 * int(r["db_size_in_use"]) for r in before.values())  # type: ignore[call-overload]
        if fragmented or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert fragmented, before
    leader = next(n for n, r in before.items() if r["is_leader"])

    dry = json.loads(run_cli("defrag", "--dir", str(workspace), "--dry-run", "-o", "json").stdout)
    ids = [s["id"] for s in dry["steps"]]
    defrags = [i.split("/")[0] for i in ids if i.endswith("/defragment")]
    assert len(defrags) == 3 and defrags[-1] == leader, ids
    assert ids.index(f"{leader}/move-leader") == ids.index(f"{leader}/defragment") - 1
    assert all(ids[ids.index(f"{m}/defragment") + 1] == f"{m}/wait-healthy" for m in defrags)

    out, worst = under_load(workspace, "defrag", "--dir", str(workspace), prefix="/defrag-load")
    assert worst <= 1, out  # one member at a time
    done = [
        line.split()[1].split("/")[0]
        for line in out.splitlines()
        if line.startswith("✓ ") and "/defragment" in line
    ]
    assert done == defrags, out
    after = statuses(workspace)
    for name, row in after.items():
        assert int(row["db_size"]) < int(before[name]["db_size"]) / 2, (name, before[name], row)  # type: ignore[call-overload]
    assert not after[leader]["is_leader"]  # it handed leadership over before its turn

    # nothing fragmented enough any more: every member skipped, nothing done
    again = run_cli("defrag", "--dir", str(workspace), "--if-fragmented", "50")
    assert "nothing to do" in again.stdout and again.stderr.count("skipped") == 3

    # a member down: defrag refuses in one line; a compaction (a quorum suffices) still works
    pid = supervisor.running_pid(workspace / "members" / "etcd3" / "etcd.pid")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    refused = run_cli("defrag", "--dir", str(workspace), check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "needs every member serving first: etcd3 is not" in refused.stderr
    assert run_cli("space", "recover", "--dir", str(workspace), check=False).returncode != 0
    current = max(int(r["revision"]) for r in statuses(workspace).values() if r.get("revision"))  # type: ignore[call-overload]
    run_cli("compact", "--dir", str(workspace), "--revision", str(current))


@one_version("etcd-3.4-debian")
def test_nospace_alarm_then_space_recover_loses_no_acknowledged_write(
    workspace: Path, etcd_bin: Path
) -> None:
    quota = 16 * 2**20
    up(workspace, etcd_bin, f"quota_backend_bytes: {quota}, auto_compaction_mode: revision, "
       "auto_compaction_retention: '100000'")  # fmt: skip
    # the spec's quota and auto-compaction settings are what etcd itself reports at start
    log = (workspace / "members" / "etcd1" / "etcd.log").read_text()
    assert f'"quota-size-bytes":{quota}' in log and '"auto-compaction-mode":"revision"' in log

    acknowledged: dict[str, str] = {}
    #: the write that got "database space exceeded": etcd may have applied it (the put that crosses the
    #: quota is applied, then answered NOSPACE), so its outcome is unknown
    indeterminate: dict[str, str] = {}

    async def fill() -> str:
        ws, spec = load_workspace(workspace)
        async with admin_client(spec, ws, timeout=5.0) as client:
            for i in range(4000):  # the same few keys rewritten: history, which compaction can drop
                key, value = f"/fill/{i % 8}", f"{i}-" + "x" * 65536
                try:
                    await client.put(key, value)
                except EtcdError as exc:
                    indeterminate[key] = value
                    return exc.message
                acknowledged[key] = value
        return "never full"

    error = asyncio.run(fill())
    assert "database space exceeded" in error, error
    listed = run_cli("alarms", "list", "--dir", str(workspace), "-o", "json", check=False)
    assert listed.returncode == 2
    # status shows the alarm, the quota used up, the free pages (#14 item 4)
    full = json.loads(run_cli("status", "--dir", str(workspace), "-o", "json").stdout)
    assert any(r["alarms"] == ["NOSPACE"] for r in full), full
    assert all(r["quota_bytes"] == quota and r["quota_used_pct"] >= 90 for r in full), full
    assert all(0 <= r["fragmented_pct"] <= 100 for r in full)
    argv = ["status", "--watch", "--interval", "0.5", "--dir", str(workspace)]
    watch = subprocess.Popen(
        [sys.executable, "-m", "etcdforge", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    views, alarm = 0, False
    try:
        assert watch.stdout is not None
        for line in iter(watch.stdout.readline, ""):  # into a pipe, each refresh is printed
            views += "quota use" in line
            alarm = alarm or "NOSPACE" in line
            if views == 2:
                break
        watch.send_signal(signal.SIGINT)  # once it runs: the watch ends cleanly
        _, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert views == 2 and alarm and watch.returncode == 0 and "Traceback" not in err, (views, err)
    assert {a["alarm"] for a in json.loads(listed.stdout)["alarms"]} == {"NOSPACE"}

    dry = json.loads(run_cli("space", "recover", "--dir", str(workspace), "--dry-run", "-o", "json").stdout)
    ids = [s["id"] for s in dry["steps"]]
    assert ids[0] == "cluster/compact" and ids[-2:] == ["cluster/disarm", "cluster/write-probe"]
    out = run_cli("space", "recover", "--dir", str(workspace))
    assert "writes work again" in out.stdout
    assert "no alarm is active" in run_cli("alarms", "--dir", str(workspace)).stdout
    after = json.loads(run_cli("status", "--dir", str(workspace), "-o", "json").stdout)
    assert all(r["alarms"] == [] and r["quota_used_pct"] < 90 for r in after), after

    async def check() -> None:
        ws, spec = load_workspace(workspace)
        async with admin_client(spec, ws, timeout=5.0) as client:
            for key, value in acknowledged.items():
                got = await client.get(key)
                assert got.kvs and got.kvs[0].value.decode() in (value, indeterminate.get(key)), key
            await client.put("/after", "writes work")

    asyncio.run(check())
    # a re-run finds nothing to disarm and still converges
    run_cli("space", "recover", "--dir", str(workspace))


@pytest.fixture
def etcd34() -> Path:
    """One version is enough for the data check (the same HashKV API on both): Debian's 3.4.23."""
    from etcd_binaries import candidates, require

    return require(dict(candidates())["etcd-3.4-debian"], "etcd-3.4-debian")


def test_a_member_whose_data_differs_is_named_and_replace_fixes_it(workspace: Path, etcd34: Path) -> None:
    etcd_bin = etcd34
    up(workspace, etcd_bin)
    run_cli("kv", "put", "--dir", str(workspace), "/victim", "corrupt-me-0123456789")
    assert run_cli("check-data", "--dir", str(workspace)).returncode == 0
    pid = supervisor.running_pid(workspace / "members" / "etcd3" / "etcd.pid")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # a clean stop: bbolt has the value on disk
    for _ in range(100):
        if supervisor.running_pid(workspace / "members" / "etcd3" / "etcd.pid") is None:
            break
        time.sleep(0.1)
    db = workspace / "members" / "etcd3" / "data" / "member" / "snap" / "db"
    data = db.read_bytes()
    assert data.count(b"corrupt-me-0123456789") == 1
    db.write_bytes(data.replace(b"corrupt-me-0123456789", b"CORRUPT-ME-0123456789"))
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))

    found = run_cli("check-data", "--dir", str(workspace), "-o", "json", check=False)
    assert found.returncode == 2, found.stdout
    assert json.loads(found.stdout)["differs"] == ["etcd3"]
    text = run_cli("alarms", "list", "--dir", str(workspace), "--check-data", check=False).stdout
    assert "`etcdforge member replace etcd3`" in text
    run_cli("member", "replace", "etcd3", "--dir", str(workspace), "--yes")
    assert run_cli("check-data", "--dir", str(workspace)).returncode == 0
