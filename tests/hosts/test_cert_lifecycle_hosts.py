"""`pki renew` and `pki rotate-ca` on real SSH + systemd test hosts.

Renewal must not restart any unit (same MainPID) and every host must present the new serials; the CA
rotation restarts each unit (new MainPID), leaves only the new CA on the hosts, refuses an old-CA client
and keeps the data; afterwards `plan` has nothing to change.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from support import init_hosts_workspace, new_ca_client, run_cli

from etcdforge.errors import EtcdError
from etcdforge.etcd import EtcdClient, TlsFiles
from etcdforge.etcd.presented import presented_certificate
from etcdforge.pki import load_cert
from etcdforge.pki.plan import signed_by
from etcdforge.testing.hosts import TestHosts
from etcdforge.testing.workload import Writer, check_history
from etcdforge.workspace import Workspace, admin_client, load_workspace


def main_pids(hosts: TestHosts) -> list[str]:
    return [
        hosts.run(h, ["systemctl", "show", "-p", "MainPID", "--value", "etcd"]).stdout.strip()
        for h in hosts.hosts
    ]


def host_file(hosts: TestHosts, index: int, path: str) -> bytes:
    return hosts.run(hosts.hosts[index], ["cat", path]).stdout.encode()


def admin_tls(ws: Workspace) -> TlsFiles:
    p = ws.client_paths()
    return TlsFiles(ca=Path(p.ca_cert), cert=Path(p.cert), key=Path(p.key))


def test_renew_is_hot_and_rotate_ca_rolls_on_hosts(hosts: TestHosts, tmp_path: Path) -> None:
    directory = Path(str(init_hosts_workspace(hosts, tmp_path / "prod", 3)))
    run_cli("apply", "--dir", str(directory), "--yes")
    ws, spec = load_workspace(directory)
    urls = [f"https://{m.address}:{spec.etcd.client_port}" for m in spec.members]
    peers = [f"https://{m.address}:{spec.etcd.peer_port}" for m in spec.members]
    pids = main_pids(hosts)

    # --- hot renewal under a writer -------------------------------------------------------------------
    async def renew_under_writer() -> None:
        async with admin_client(spec, ws, timeout=2.0) as client:
            writer = Writer(client, writer_id=0)
            stop = asyncio.Event()
            task = asyncio.create_task(writer.run(stop))
            await asyncio.sleep(0.5)
            out = await asyncio.to_thread(
                run_cli, "pki", "renew", "--dir", str(directory), "--force", "--yes"
            )
            assert "verify-client" in out.stdout and "verify-peer" in out.stdout
            await asyncio.sleep(0.5)
            stop.set()
            await task
            result = await check_history(client, writer.history)
            assert result.ok, result.problems
            assert result.acknowledged > 5, result
            assert not [op for op in writer.history if op.outcome != "ok"], "renewal caused failed requests"

    asyncio.run(renew_under_writer())
    assert main_pids(hosts) == pids, "renewal must not restart etcd"

    async def serials() -> list[int]:
        from etcdforge.runtime.cert_verify import endpoint_tls

        tls = [admin_tls(ws)] * len(urls) + [endpoint_tls(ws, m.name, peer=True) for m in spec.members]
        return [(await presented_certificate(u, t)).serial for u, t in zip(urls + peers, tls, strict=True)]

    expected = [
        load_cert(ws.cert_path(f"{m.name}-{role}")).serial_number
        for role in ("server", "peer")
        for m in spec.members
    ]
    assert asyncio.run(serials()) == expected
    for i, m in enumerate(spec.members):
        assert (
            host_file(hosts, i, "/etc/etcd/pki/server.pem") == ws.cert_path(f"{m.name}-server").read_bytes()
        )
    assert run_cli("plan", "--dir", str(directory), "--detailed-exitcode", check=False).returncode == 0

    # --- CA rotation ---------------------------------------------------------------------------------------
    run_cli("kv", "put", "--dir", str(directory), "/before-rotation", "kept")
    old = tmp_path / "old"
    old.mkdir()
    for name in ("ca.pem", "admin-client.pem", "admin-client-key.pem"):
        shutil.copy2(ws.pki_dir / name, old / name)
    old_ca = load_cert(old / "ca.pem")
    # phases 1 and 2, then a pause: every member must accept a new-CA client and still the old one
    run_cli("pki", "rotate-ca", "--dir", str(directory), "--yes", "--stop-after", "reissue")
    new_client = new_ca_client(ws, tmp_path / "new")
    assert asyncio.run(_answers(urls, new_client)), "a new-CA client must be accepted before trust-new"
    both = tmp_path / "both.pem"  # old + new CA, so that only the members' verdict decides below
    shutil.copyfile(ws.trust_bundle, both)
    old_bundle = TlsFiles(ca=both, cert=old / "admin-client.pem", key=old / "admin-client-key.pem")
    assert asyncio.run(_answers(urls, old_bundle)), "members still trust the old CA until trust-new"
    mid = subprocess.run(
        [sys.executable, "-m", "etcdforge", "pki", "check", "--dir", str(directory), "--hosts"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert mid.returncode == 0, mid.stdout + mid.stderr  # the bundle on the hosts is understood
    out = run_cli("pki", "rotate-ca", "--dir", str(directory), "--yes")
    assert "CA rotated" in out.stdout
    assert asyncio.run(_answers(urls, TlsFiles(ca=ws.ca_cert, cert=new_client.cert, key=new_client.key)))
    new_pids = main_pids(hosts)
    assert all(a != b for a, b in zip(pids, new_pids, strict=True)), "each member restarted"
    new_ca = load_cert(ws.ca_cert)
    assert new_ca != old_ca
    peer_ca = load_cert(ws.peer_ca_cert)  # peers have their own CA: the CA's rotation leaves it alone
    for i in range(len(spec.members)):
        assert host_file(hosts, i, "/etc/etcd/pki/ca.pem") == ws.ca_cert.read_bytes()
        assert signed_by(load_cert_bytes(host_file(hosts, i, "/etc/etcd/pki/server.pem")), new_ca)
        assert signed_by(load_cert_bytes(host_file(hosts, i, "/etc/etcd/pki/peer.pem")), peer_ca)
        listing = hosts.run(hosts.hosts[i], ["ls", "/etc/etcd/pki"]).stdout
        assert "key" not in listing.replace("server-key.pem", "").replace("peer-key.pem", "")
    assert "kept" in run_cli("kv", "get", "--dir", str(directory), "/before-rotation").stdout

    assert not asyncio.run(_answers(urls, old_bundle)), "an old-CA client must be refused at the end"

    # --- the peers' CA rotated the same way: only peer listeners and peer certificates change ------------
    out = run_cli("pki", "rotate-ca", "--peer", "--dir", str(directory), "--yes")
    assert "peers' CA rotated" in out.stdout
    new_peer_ca = load_cert(ws.peer_ca_cert)
    assert new_peer_ca != peer_ca and load_cert(ws.ca_cert) == new_ca
    for i in range(len(spec.members)):
        assert host_file(hosts, i, "/etc/etcd/pki/peer-ca.pem") == ws.peer_ca_cert.read_bytes()
        assert signed_by(load_cert_bytes(host_file(hosts, i, "/etc/etcd/pki/peer.pem")), new_peer_ca)
    assert [p.parent.name.split("-")[0] for p in (ws.pki_dir / "retired").glob("*/*-key.pem")].count(
        "peer"
    ) == 1
    assert "kept" in run_cli("kv", "get", "--dir", str(directory), "/before-rotation").stdout
    # the hosts match the spec: nothing for apply to do, no restart pending
    plan = run_cli("plan", "--dir", str(directory), "--detailed-exitcode", check=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    check = subprocess.run(
        [sys.executable, "-m", "etcdforge", "pki", "check", "--dir", str(directory), "--hosts", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def _answers(urls: list[str], tls: TlsFiles) -> bool:
    """Whether every member serves this client (one fresh connection per member)."""
    for url in urls:
        async with EtcdClient([url], tls, timeout=3.0) as client:
            try:
                await client.get("/before-rotation")
            except EtcdError:
                return False
    return True


def load_cert_bytes(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)
