"""Application clients on real etcd (3.4 and 3.5): least privilege through etcd users named by the
certificate's CN, auth turned on under a writer, revocation, a hand-edited role repaired, every consumer's
config, and etcdforge's own verbs with auth on."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from support import killed_at, run_cli, under_load

from etcdforge.errors import EtcdError
from etcdforge.etcd import EtcdClient, EtcdServerError, Permission, TlsFiles
from etcdforge.workspace import Workspace, admin_client, load_workspace

pytestmark = pytest.mark.integration


def client_tls(ws: Workspace, name: str) -> TlsFiles:
    p = ws.client_paths(name)
    return TlsFiles(ca=Path(p.ca_cert), cert=Path(p.cert), key=Path(p.key))


def enable_auth(workspace: Path) -> None:
    spec = yaml.safe_load((workspace / "cluster.yaml").read_text())
    spec["auth"] = {"enabled": True}
    (workspace / "cluster.yaml").write_text(yaml.safe_dump(spec))


async def refused(call: object) -> str:
    """The reason etcd refused ``call`` (an awaitable); fails if it was allowed."""
    try:
        await call  # type: ignore[misc]
    except EtcdServerError as exc:
        return exc.reason
    except EtcdError as exc:
        return type(exc).__name__
    raise AssertionError("allowed")


def etcdctl_for(etcd_bin: Path) -> Path:
    found = etcd_bin.parent / "etcdctl"
    return found if found.is_file() else Path(shutil.which("etcdctl") or "etcdctl")


def test_confined_and_read_only_clients_then_revocation_and_every_config(
    workspace: Path, etcd_bin: Path, tmp_path: Path
) -> None:
    d = str(workspace)
    run_cli("up", "--dir", d, "--members", "1", "--etcd-bin", str(etcd_bin))
    run_cli("client", "add", "app", "--prefix", "/app/", "--dir", d)
    run_cli("client", "add", "reader", "--prefix", "/app/", "--read-only", "--dir", d)
    enable_auth(workspace)
    plan = json.loads(run_cli("up", "--dir", d, "--dry-run", "-o", "json").stdout)
    assert [s["id"] for s in plan["steps"]] == ["auth/enable"]
    run_cli("up", "--dir", d)
    ws, spec = load_workspace(workspace)
    urls = [f"https://{m.address}:{spec.etcd.client_port}" for m in spec.members]

    async def access() -> None:
        async with EtcdClient(urls, client_tls(ws, "app")) as app:
            await app.put("/app/x", "1")
            assert (await app.get("/app/x")).kvs[0].value == b"1"
            assert await refused(app.put("/other/x", "1")) == "permission_denied"
            assert await refused(app.get("/other/x")) == "permission_denied"
            # membership changes and snapshots need root (listing members does not, on most releases)
            add = app.member_add(["https://127.0.0.99:2380"], learner=True)
            assert await refused(add) == "permission_denied"
            assert await refused(app.snapshot(urls[0]).__anext__()) == "permission_denied"
        async with EtcdClient(urls, client_tls(ws, "reader")) as reader:
            assert (await reader.get("/app/x")).kvs[0].value == b"1"
            assert await refused(reader.put("/app/y", "1")) == "permission_denied"
        async with admin_client(spec, ws) as admin:  # etcdforge's own certificate is root
            await admin.put("/other/x", "1")
            assert len(await admin.member_list()) == 1

    asyncio.run(access())

    # every consumer's config: parses as its format and names the files; etcdctl's works as given
    bundle = tmp_path / "bundle"
    dry = run_cli("client", "config", "app", "--bundle", str(bundle), "--dry-run", "--dir", d).stdout
    assert "bundle/app-key.pem" in dry and not bundle.exists()
    run_cli("client", "config", "app", "--for", "env", "--bundle", str(bundle), "--dir", d)
    assert (bundle / "app-key.pem").stat().st_mode & 0o777 == 0o600
    out = {c: run_cli("client", "config", "app", "--for", c, "--dir", d).stdout for c in (
        "etcdctl", "kube-apiserver", "patroni", "apisix", "coredns", "python", "env")}  # fmt: skip
    assert yaml.safe_load(out["patroni"])["etcd3"]["protocol"] == "https"
    assert yaml.safe_load(out["apisix"])["deployment"]["etcd"]["tls"]["cert"].endswith("app-client.pem")
    flags = dict(f.split("=", 1) for f in shlex.split(out["kube-apiserver"]))
    _chains(Path(flags["--etcd-certfile"]), Path(flags["--etcd-cafile"]))
    assert Path(flags["--etcd-keyfile"]).is_file() and flags["--etcd-prefix"] == "/app"
    compile(out["python"], "<python>", "exec")
    argv = shlex.split(out["etcdctl"])
    argv[0] = str(etcdctl_for(etcd_bin))
    env = {**os.environ, "ETCDCTL_API": "3"}
    got = subprocess.run(
        [*argv, "get", "/app/x", "--print-value-only"], capture_output=True, text=True, timeout=30, env=env
    )
    assert got.returncode == 0 and got.stdout.strip() == "1", got.stderr

    # a role edited by hand shows in the plan and is repaired
    async def widen() -> None:
        async with admin_client(spec, ws) as admin:
            await admin.role_grant_permission("app", Permission("readwrite", b"/", b"\0"))

    asyncio.run(widen())
    plan = json.loads(run_cli("up", "--dir", d, "--dry-run", "-o", "json").stdout)
    assert [s["id"] for s in plan["steps"]] == ["auth/role:app"]
    run_cli("up", "--dir", d)
    assert json.loads(run_cli("up", "--dir", d, "--dry-run", "-o", "json").stdout)["steps"] == []

    # revocation: killed after the user went (the cert is refused at once), pki check flags the files
    # left; the re-run finishes; a third run says nothing is left
    killed_at(workspace, "after:auth/delete-user:app", "client", "remove", "app")

    async def gone() -> None:
        async with EtcdClient(urls, client_tls(ws, "app")) as app:
            assert await refused(app.get("/app/x")) != "allowed"

    asyncio.run(gone())
    check = run_cli("pki", "check", "--dir", d, "-o", "json", check=False)
    assert check.returncode == 2 and "revoked certificate" in check.stdout
    doctor = json.loads(run_cli("doctor", "--dir", d, "-o", "json", check=False).stdout)
    (revoked,) = [f for f in doctor["findings"] if f["rule"] == "certificates.revoked"]
    assert revoked["severity"] == "problem" and revoked["subject"] == "app-client", revoked
    run_cli("client", "remove", "app", "--dir", d)
    assert run_cli("client", "remove", "app", "--dir", d).stdout.strip() == "nothing to do"
    # the name cannot come back while its old certificate is valid (etcd matches the CN, not the serial)
    again = run_cli("client", "add", "app", "--prefix", "/app/", "--dir", d, check=False)
    assert again.returncode != 0 and "let them in again" in again.stderr and "Traceback" not in again.stderr
    assert run_cli("pki", "check", "--dir", d, check=False).returncode == 0
    listed = json.loads(run_cli("client", "list", "--dir", d, "-o", "json").stdout)
    assert listed["auth_enabled"] is True and [r["name"] for r in listed["revoked"]] == ["app"]
    assert {c["name"]: c["in_sync"] for c in listed["clients"]} == {"admin": True, "reader": True}
    shown = json.loads(run_cli("client", "show", "reader", "--dir", d, "-o", "json").stdout)
    assert shown["access"] == ["read /app/*"] and shown["user_roles"] == ["reader"]


def _chains(cert: Path, ca_bundle: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    for ca in x509.load_pem_x509_certificates(ca_bundle.read_bytes()):
        if ca.subject != leaf.issuer:
            continue
        key = ca.public_key()
        assert leaf.signature_hash_algorithm is not None
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm))
        else:
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(
                leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(), leaf.signature_hash_algorithm
            )
        return
    raise AssertionError(f"{cert} is not signed by a CA in {ca_bundle}")


def test_auth_on_under_a_writer_then_every_verb_keeps_working(workspace: Path, etcd_bin: Path) -> None:
    """Auth turned on under a writer with the admin certificate loses no acknowledged write; with auth
    on, member add (promotion through the leader) and remove, renew, a CA rotation, a backup and a
    defragmentation all work."""
    d = str(workspace)
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
    run_cli("client", "add", "svc", "--prefix", "/svc/", "--dir", d)
    enable_auth(workspace)
    out, _ = under_load(workspace, "up", "--dir", d, prefix="/auth-on")
    assert "auth/enable" in out
    run_cli("member", "add", "etcd4", "--dir", d)
    run_cli("member", "remove", "etcd4", "--dir", d, "--yes")
    run_cli("pki", "renew", "--force", "--yes", "--dir", d)
    run_cli("pki", "rotate-ca", "--yes", "--no-snapshot", "--dir", d)
    run_cli("backup", "now", "--dir", d)
    run_cli("defrag", "--dir", d)
    run_cli("health", "--dir", d)
    ws, spec = load_workspace(workspace)
    urls = [f"https://{m.address}:{spec.etcd.client_port}" for m in spec.members]

    async def svc_still_confined() -> None:
        async with EtcdClient(urls, client_tls(ws, "svc")) as svc:
            await svc.put("/svc/k", "v")
            assert await refused(svc.put("/elsewhere", "v")) == "permission_denied"

    asyncio.run(svc_still_confined())

    # degraded is normal: with one member of three down, clients come and go (a quorum is all it takes)
    from etcdforge.runtime import supervisor

    down = supervisor.running_pid(workspace / "members/etcd3/etcd.pid")
    assert down is not None
    os.kill(down, signal.SIGKILL)
    run_cli("client", "add", "late", "--prefix", "/late/", "--dir", d)
    run_cli("client", "remove", "svc", "--dir", d)
    users = run_cli("client", "list", "--dir", d).stdout
    listed = {line.split()[0] for line in users.splitlines()[2:] if line and not line.startswith("revoked")}
    assert "late" in listed and "svc" not in listed and "revoked: svc" in users, users
    run_cli("up", "--dir", d, "--etcd-bin", str(etcd_bin))
