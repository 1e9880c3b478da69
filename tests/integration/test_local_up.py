"""`etcdforge up` end to end with real etcd: the guide's whole procedure, then down/up/destroy."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from etcd_binaries import one_version
from support import run_cli

from etcdforge.errors import EtcdTLSError
from etcdforge.etcd import EtcdClient, TlsFiles
from etcdforge.runtime import supervisor

pytestmark = pytest.mark.integration


def _pids(directory: Path) -> list[int]:
    out = []
    for pid_file in (directory / "members").glob("*/etcd.pid"):
        pid = supervisor.running_pid(pid_file)
        if pid is not None:
            out.append(pid)
    return out


def _client(directory: Path, *, cert: bool = True) -> EtcdClient:
    env = _env(directory)
    return EtcdClient(
        env["ETCDCTL_ENDPOINTS"].split(","),
        TlsFiles(
            ca=Path(env["ETCDCTL_CACERT"]),
            cert=Path(env["ETCDCTL_CERT"]) if cert else None,
            key=Path(env["ETCDCTL_KEY"]) if cert else None,
        ),
        timeout=5.0,
    )


def _log_times(directory: Path, member: str) -> tuple[datetime, datetime]:
    """When the member's etcd logged its first line, and when it began serving its peer port."""
    lines = [
        json.loads(line) for line in (directory / "members" / member / "etcd.log").read_text().splitlines()
    ]
    serving = next(e["ts"] for e in lines if e.get("msg") == "serving peer traffic")
    return datetime.fromisoformat(lines[0]["ts"]), datetime.fromisoformat(serving)


def _env(directory: Path) -> dict[str, str]:
    text = run_cli("env", "--dir", str(directory)).stdout
    out = {}
    for line in text.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        out[key] = value.strip("'")
    return out


def test_up_then_the_guides_operations_then_down_up_destroy(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    up = run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    assert "3-member cluster" in up.stdout and "is healthy" in up.stdout
    assert len(_pids(workspace)) == 3
    # a new member starts once the one before serves its peer port: etcd's bootstrap check asks every
    # other member, and one bound but not serving yet costs it a second (all started at once: often 2 s)
    served = {
        line.split()[1].removesuffix("/peer-serving")
        for line in up.stdout.splitlines()
        if "/peer-serving" in line and "serving after" in line
    }
    assert served, up.stdout  # (a member that did not serve within the step's 2 s was not waited for)
    for before, after in (("etcd1", "etcd2"), ("etcd2", "etcd3")):
        if before in served:
            assert _log_times(workspace, before)[1] <= _log_times(workspace, after)[0]

    # health and status through the tool
    run_cli("health", "--dir", d)
    status = json.loads(run_cli("status", "--dir", d, "-o", "json").stdout)
    assert len(status) == 3
    assert sum(1 for s in status if s["is_leader"]) == 1
    assert {s["error"] for s in status} == {None}
    members = json.loads(run_cli("members", "--dir", d, "-o", "json").stdout)
    assert sorted(m["name"] for m in members) == ["etcd1", "etcd2", "etcd3"]

    # put/get/delete through our client
    async def through_client() -> None:
        async with _client(workspace) as client:
            await client.put("/demo/a", "1")
            await client.put("/demo/b", "2")
            got = await client.get("/demo/", prefix=True)
            assert [(kv.key, kv.value) for kv in got.kvs] == [(b"/demo/a", b"1"), (b"/demo/b", b"2")]
            keys = await client.get("/demo/", prefix=True, keys_only=True)
            assert [kv.value for kv in keys.kvs] == [b"", b""]
            assert await client.delete("/demo/", prefix=True) == 2

    asyncio.run(through_client())

    # the tool's kv commands
    run_cli("kv", "put", "--dir", d, "/app/x", "hello")
    assert run_cli("kv", "get", "--dir", d, "/app/", "--prefix").stdout == "/app/x\nhello\n"
    assert run_cli("kv", "get", "--dir", d, "/", "--prefix", "--keys-only").stdout == "/app/x\n"

    # plain etcdctl after eval "$(etcdforge env)": the guide's commands
    etcdctl = etcd_bin.parent / "etcdctl"
    script = f"""
set -e
eval "$({os.environ.get("PYTHON", "python3")} -m etcdforge env --dir '{d}')"
{etcdctl} endpoint health
{etcdctl} member list
{etcdctl} put /guide/foo bar
{etcdctl} get /guide --prefix
{etcdctl} get / --prefix --keys-only
{etcdctl} del /guide --prefix
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count("is healthy") == 3  # 3.4 prints health to stderr, 3.5 to stdout
    assert "/guide/foo\nbar\n" in proc.stdout
    assert "/app/x\n" in proc.stdout
    assert proc.stdout.rstrip().endswith("1")  # del --prefix deleted one key

    # etcdforge ctl runs etcdctl with the right flags
    ctl = run_cli("ctl", "--dir", d, "--", "member", "list", "-w", "json")
    assert len(json.loads(ctl.stdout)["members"]) == 3

    # a client without a certificate is refused, and the error says why
    async def without_cert() -> None:
        async with _client(workspace, cert=False) as client:
            with pytest.raises(EtcdTLSError) as info:
                await client.get("/app/x")
            assert "client certificate" in str(info.value)

    asyncio.run(without_cert())

    # down keeps the data; up brings it back
    run_cli("down", "--dir", d)
    assert _pids(workspace) == []
    again = run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    assert "is healthy" in again.stdout
    assert run_cli("kv", "get", "--dir", d, "/app/x").stdout == "/app/x\nhello\n"

    # up on a running cluster changes nothing
    idle = run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin), "--dry-run")
    assert "nothing to do" in idle.stdout

    # destroy asks (refuses without a terminal), then removes everything with --yes
    refused = run_cli("destroy", "--dir", d, check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    pids = _pids(workspace)
    run_cli("destroy", "--dir", d, "--yes")
    assert not workspace.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


@one_version()
def test_member_that_cannot_start_gives_a_clear_failure(workspace: Path, etcd_bin: Path) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    spec_addresses = [m["endpoint"] for m in json.loads(run_cli("status", "--dir", d, "-o", "json").stdout)]
    run_cli("down", "--dir", d)
    host = spec_addresses[1].removeprefix("https://").rsplit(":", 1)[0]
    blocker = socket.socket()
    # the stopped member's port may still be in TIME_WAIT; a listener (what matters here) is still exclusive
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        blocker.bind((host, 2379))
        blocker.listen()
        failed = run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin), "--timeout", "20", check=False)
    finally:
        blocker.close()
    assert failed.returncode != 0
    assert "etcd2 did not start" in failed.stderr and "runs on etcd1, etcd3" in failed.stderr
    assert "address already in use" in failed.stderr  # the tail of etcd2's own log
    assert "Traceback" not in failed.stderr
    # degraded is normal: a quorum came up, so it keeps running (and serving)
    assert len(_pids(workspace)) == 2
    run_cli("kv", "put", "--dir", d, "still", "serving")
    run_cli("down", "--dir", d)

    # two of three cannot start: no quorum can come up, so what this run started is stopped again
    blockers = []
    try:
        for address in spec_addresses[1:]:
            b = socket.socket()
            b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            b.bind((address.removeprefix("https://").rsplit(":", 1)[0], 2379))
            b.listen()
            blockers.append(b)
        failed = run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin), "--timeout", "20", check=False)
    finally:
        for b in blockers:
            b.close()
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "etcd2" in failed.stderr and "address already in use" in failed.stderr
    assert _pids(workspace) == []


def test_two_workspaces_side_by_side(tmp_path: Path, etcd_bin: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    try:
        run_cli("up", "--dir", str(first), "--etcd-bin", str(etcd_bin), "--members", "1")
        run_cli("up", "--dir", str(second), "--etcd-bin", str(etcd_bin), "--members", "1")
        a = json.loads(run_cli("status", "--dir", str(first), "-o", "json").stdout)
        b = json.loads(run_cli("status", "--dir", str(second), "-o", "json").stdout)
        assert a[0]["endpoint"] != b[0]["endpoint"]
        run_cli("kv", "put", "--dir", str(first), "k", "one")
        assert run_cli("kv", "get", "--dir", str(second), "k").stdout == ""
    finally:
        for d in (first, second):
            if (d / "cluster.yaml").exists():
                run_cli("down", "--dir", str(d), check=False)
