"""Security item 4 on real etcd, both versions: peers have a CA of their own, so the peer listeners accept
no client or server certificate; a cluster made with one CA for everything migrates to that without
downtime (``pki rotate-ca --peer``, under the mixed workload, every checker holding over its history).

Each refusal is checked twice: etcd's peer API (``GET /members``, what a stolen client certificate would
read) must not answer, and a TLS 1.2 handshake by the real ``openssl s_client`` must fail (in TLS 1.2 the
server refuses a client certificate inside the handshake)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import need_interop_binaries, peer_port_answers, run_cli, tls12_handshake
from test_cert_lifecycle import under_load

from etcdforge import topology
from etcdforge.fsutil import atomic_write
from etcdforge.pki import CaSettings, create_ca, load_cert
from etcdforge.pki.plan import signed_by
from etcdforge.workspace import Workspace, load_workspace

pytestmark = pytest.mark.integration


def one_ca_workspace(directory: Path) -> None:
    """A workspace whose CA was made before peers had a CA of their own (every earlier etcdforge, and
    ``adopt`` / ``pki import-cfssl`` of a guide-built cluster): the CA signs the peer certificates too."""
    ca = create_ca(CaSettings("etcdforge CA"), datetime.now(UTC))
    atomic_write(directory / "pki" / "ca-key.pem", ca.key_pem(), 0o600)
    atomic_write(directory / "pki" / "ca.pem", ca.cert_pem(), 0o644)


def peer_port_verdicts(ws: Workspace) -> dict[tuple[str, str], tuple[bool, bool]]:
    """(member, certificate) -> (peer API answers, TLS 1.2 handshake succeeds) on that member's peer port,
    for the admin client certificate, another member's server certificate and the member's own peer
    certificate; the server side is checked against what peers trust."""
    spec = load_workspace(ws.root)[1]
    names = [m.name for m in spec.members]
    out = {}
    for i, member in enumerate(spec.members):
        url = topology.peer_url(spec, member)
        other = names[(i + 1) % len(names)]
        for stem in ("admin-client", topology.server_cert_name(other), topology.peer_cert_name(member.name)):
            cert, key = ws.cert_path(stem), ws.key_path(stem)
            answers = peer_port_answers(url, ws.peer_trusted_ca, cert, key)
            shaken, _text = tls12_handshake(url, ws.peer_trusted_ca, cert, key)
            out[(member.name, stem)] = (answers, shaken)
    return out


def assert_only_peers(ws: Workspace) -> None:
    for (member, stem), verdict in peer_port_verdicts(ws).items():
        expected = (True, True) if stem.endswith("-peer") else (False, False)
        assert verdict == expected, (member, stem, verdict)


def test_peer_listeners_accept_only_peer_certificates(workspace: Path, etcd_bin: Path) -> None:
    need_interop_binaries("openssl")
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    ws, spec = load_workspace(workspace)
    peer_ca = load_cert(ws.peer_ca_cert)
    assert peer_ca != load_cert(ws.ca_cert)
    for m in spec.members:
        assert signed_by(load_cert(ws.cert_path(topology.peer_cert_name(m.name))), peer_ca)
        assert not signed_by(load_cert(ws.cert_path(topology.server_cert_name(m.name))), peer_ca)
        installed = ws.member_paths(m.name)
        assert Path(installed.peer_ca_cert).read_bytes() == ws.peer_ca_cert.read_bytes()
        assert Path(installed.ca_cert).read_bytes() == ws.ca_cert.read_bytes()
    assert_only_peers(ws)
    # and the other way round: the client port refuses a peer certificate, takes the admin's
    etcd1 = spec.members[0]
    url = topology.client_url(spec, etcd1)
    peer = topology.peer_cert_name(etcd1.name)
    assert not tls12_handshake(url, ws.ca_cert, ws.cert_path(peer), ws.key_path(peer))[0]
    assert tls12_handshake(url, ws.ca_cert, ws.cert_path("admin-client"), ws.key_path("admin-client"))[0]
    # pki check and doctor see nothing to fix in the certificates
    check = json.loads(run_cli("pki", "check", "--dir", str(workspace), "-o", "json").stdout)
    assert check["status"] == "ok"
    done = run_cli("doctor", "--dir", str(workspace), "-o", "json", check=False)
    rules = {f["rule"] for f in json.loads(done.stdout)["findings"]}
    assert not {r for r in rules if r.startswith("certificates.")}, rules


def test_a_cluster_with_one_ca_migrates_to_a_peer_ca_under_load(
    workspace: Path, etcd_bin: Path, tmp_path: Path
) -> None:
    """The no-downtime migration: trust both (rolling restart), peer certificates reissued from the new
    peers' CA (hot), trust only it (rolling restart) — the workload runs throughout, no acknowledged write
    is lost, a quorum always answers; afterwards client and server certificates are no peers."""
    need_interop_binaries("openssl")
    one_ca_workspace(workspace)
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    ws, spec = load_workspace(workspace)
    assert not ws.peer_ca_cert.exists()
    ca_before = ws.ca_cert.read_bytes()
    admin_before = ws.cert_path("admin-client").read_bytes()
    # before: the admin client certificate reads the peer API
    etcd1 = spec.members[0]
    admin = (ws.cert_path("admin-client"), ws.key_path("admin-client"))
    assert peer_port_answers(topology.peer_url(spec, etcd1), ws.ca_cert, *admin)
    check = run_cli("pki", "check", "--dir", str(workspace), "-o", "json", check=False)
    assert check.returncode == 1
    assert any(
        f["check"] == "peer-trust" for f in json.loads(check.stdout)["findings"] if f["severity"] != "ok"
    )

    async def migrate() -> None:
        out = await asyncio.to_thread(run_cli, "pki", "rotate-ca", "--peer", "--dir", str(workspace), "--yes")
        assert "peers' CA rotated" in out.stdout, out.stdout

    asyncio.run(under_load(ws, workspace, "/peer-ca", migrate, tmp_path / "migration.jsonl"))

    assert ws.peer_ca_cert.is_file() and not ws.rotation_dir.exists()
    assert ws.ca_cert.read_bytes() == ca_before  # clients see nothing: same CA, same admin certificate
    assert ws.cert_path("admin-client").read_bytes() == admin_before
    assert not (ws.pki_dir / "retired").exists()  # the old peers' trust was the CA: nothing to retire
    assert_only_peers(ws)
    assert run_cli("pki", "check", "--dir", str(workspace), check=False).returncode == 0
    assert "nothing to do" in run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin),
                                      "--dry-run").stdout  # fmt: skip
