"""Degraded is normal (issue "one plan per verb", behaviours 1-4), with real etcd in local mode:

1. a removal with another member down gates on a healthy quorum, not on every member;
2. `up` with a member that cannot start (a corrupt db) keeps the quorum running, and `member replace`
   rebuilds that member from the others;
3. an add killed after its learner started leaves nothing that crashes other commands; `destroy`
   stops the learner too;
4. a remove that is already done (or killed after the spec was written) exits 0 and finishes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from etcd_binaries import one_version
from support import killed_at, run_cli

from etcdforge.runtime import supervisor
from etcdforge.workspace import admin_client, load_workspace

pytestmark = pytest.mark.integration


def etcd_names(directory: Path) -> list[str]:
    members = json.loads(run_cli("members", "--dir", str(directory), "-o", "json").stdout)
    return sorted(m["name"] for m in members)


def spec_names(directory: Path) -> list[str]:
    return sorted(m.name for m in load_workspace(directory)[1].members)


def pid(directory: Path, member: str) -> int | None:
    ws, _ = load_workspace(directory)
    return supervisor.running_pid(ws.member_pid(member))


def kill9(directory: Path, member: str) -> None:
    found = pid(directory, member)
    assert found is not None, member
    os.kill(found, signal.SIGKILL)


def put_keys(directory: Path, count: int) -> None:
    async def go() -> None:
        ws, spec = load_workspace(directory)
        async with admin_client(spec, ws) as c:
            for i in range(count):
                await c.put(f"/kept/{i}", str(i))

    asyncio.run(go())


def count_keys(directory: Path) -> int:
    async def go() -> int:
        ws, spec = load_workspace(directory)
        async with admin_client(spec, ws) as c:
            return len((await c.get("/kept/", prefix=True, keys_only=True)).kvs)

    return asyncio.run(go())


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@one_version()
def test_remove_with_another_member_down_gates_on_quorum(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--members", "5", "--etcd-bin", str(etcd_bin))
    put_keys(workspace, 20)
    kill9(workspace, "etcd5")
    # before: the removal waited for the dead etcd5 (120 s) and failed with the spec unchanged
    removed = run_cli("member", "remove", "etcd4", "--dir", d, "--timeout", "30", "--yes")
    assert "etcd5 is down" in removed.stderr
    assert etcd_names(workspace) == ["etcd1", "etcd2", "etcd3", "etcd5"]
    assert spec_names(workspace) == ["etcd1", "etcd2", "etcd3", "etcd5"]
    ws, _ = load_workspace(workspace)
    assert not Path(ws.member_paths("etcd4").data_dir).exists()
    # `up` brings etcd5 back; nothing is lost
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    run_cli("health", "--dir", d)
    assert count_keys(workspace) == 20


@one_version()
def test_up_keeps_a_quorum_when_a_member_cannot_start_and_replace_rebuilds_it(
    workspace: Path, etcd_bin: Path
) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    put_keys(workspace, 20)
    run_cli("down", "--dir", d)
    ws, _ = load_workspace(workspace)
    db = Path(ws.member_paths("etcd2").data_dir) / "member" / "snap" / "db"
    with db.open("r+b") as f:  # bbolt's meta pages destroyed: etcd panics at start
        f.write(os.urandom(16384))

    failed = run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin), check=False)
    assert failed.returncode != 0
    line = one_line_error(failed)
    assert "etcd2 did not start" in line and "runs on etcd1, etcd3" in line
    assert "member replace etcd2" in line
    assert pid(workspace, "etcd1") is not None and pid(workspace, "etcd3") is not None  # kept running
    assert count_keys(workspace) == 20  # and serving

    # one plan: what the dry run prints, removal and re-add, is what runs (and it changes nothing)
    dry = json.loads(run_cli("member", "replace", "etcd2", "--dir", d, "--dry-run", "-o", "json").stdout)
    ids = [s["id"] for s in dry["steps"]]
    order = ["etcd2/remove", "etcd2/wipe-data", "cluster/add-learner", "etcd2/start", "etcd2/promote"]
    assert [i for i in ids if i in order] == order, ids
    assert etcd_names(workspace) == ["etcd1", "etcd2", "etcd3"] and db.exists()
    run_cli("member", "replace", "etcd2", "--dir", d, "--timeout", "60", "--yes")
    run_cli("health", "--dir", d)
    assert etcd_names(workspace) == spec_names(workspace) == ["etcd1", "etcd2", "etcd3"]
    assert count_keys(workspace) == 20
    assert "nothing to do" in run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin), "--dry-run").stdout


@one_version()
def test_an_add_killed_after_its_learner_started_breaks_nothing(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    killed_at(workspace, "after:etcd4/start", "member", "add", "etcd4", "--etcd-bin", str(etcd_bin))
    learner = pid(workspace, "etcd4")
    assert learner is not None and "etcd4" not in spec_names(workspace)

    # before: these crashed with "ValueError: … is not one of this client's endpoints"
    other = run_cli("member", "add", "etcd5", "--dir", d, "--etcd-bin", str(etcd_bin), check=False)
    assert "another membership change is pending: etcd4" in one_line_error(other)
    rotate = run_cli("pki", "rotate-ca", "--dir", d, "--dry-run", check=False)
    assert "Traceback" not in rotate.stderr
    run_cli("status", "--dir", d)

    # removing the half-added member takes it out of etcd and stops its process
    run_cli("member", "remove", "etcd4", "--dir", d, "--yes")
    assert etcd_names(workspace) == spec_names(workspace) == ["etcd1", "etcd2", "etcd3"]
    assert pid(workspace, "etcd4") is None

    # the same kill again, then destroy: no etcd of the workspace is left running
    killed_at(workspace, "after:etcd4/start", "member", "add", "etcd4", "--etcd-bin", str(etcd_bin))
    pids = [pid(workspace, m) for m in ("etcd1", "etcd2", "etcd3", "etcd4")]
    assert all(p is not None for p in pids)
    run_cli("destroy", "--dir", d, "--yes")
    for p in pids:
        assert p is not None
        assert not Path(f"/proc/{p}").exists() or "etcd" not in Path(f"/proc/{p}/cmdline").read_text()


@one_version()
def test_a_remove_already_done_says_so_and_a_killed_one_finishes(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--members", "5", "--etcd-bin", str(etcd_bin))
    run_cli("member", "remove", "etcd5", "--dir", d, "--yes")
    again = run_cli(
        "member", "remove", "etcd5", "--dir", d, "--yes"
    )  # before: exit 1, "no member named 'etcd5'"
    assert "etcd5 is not a member; nothing to do" in again.stdout

    # killed once the spec no longer lists it: the re-run stops and wipes it all the same
    killed_at(workspace, "after:workspace/write-spec", "member", "remove", "etcd4", "--yes")
    assert "etcd4" not in spec_names(workspace)
    run_cli("member", "remove", "etcd4", "--dir", d, "--yes")
    ws, _ = load_workspace(workspace)
    assert pid(workspace, "etcd4") is None
    assert not Path(ws.member_paths("etcd4").data_dir).exists()
    assert not (ws.root / "pending-change.json").exists()
    assert etcd_names(workspace) == spec_names(workspace) == ["etcd1", "etcd2", "etcd3"]
