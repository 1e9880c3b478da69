"""A CA made by the real `cfssl gencert -initca` from the guide's JSON, used by etcdforge for a cluster.

The user keeps their cfssl CA (etcd-ca.pem / etcd-ca-key.pem) and their signing config; etcdforge
issues per-member certificates from it with the guide's `etcd` and `client` profiles, and real etcd
accepts them (mutual TLS on client and peer ports).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from support import GUIDE_CA_CONFIG, GUIDE_CA_CSR, need_interop_binaries, run_cli

pytestmark = pytest.mark.integration


def test_cluster_from_a_cfssl_made_ca(workspace: Path, etcd_bin: Path) -> None:
    need_interop_binaries("cfssl", "cfssljson")
    cfssl_dir = workspace.parent / "etc-etcd-pki"
    cfssl_dir.mkdir()
    (cfssl_dir / "etcd-ca-csr.json").write_text(json.dumps(GUIDE_CA_CSR))
    (cfssl_dir / "etcd-ca-config.json").write_text(json.dumps(GUIDE_CA_CONFIG))
    gencert = subprocess.run(
        ["cfssl", "gencert", "-initca", "etcd-ca-csr.json"], cwd=cfssl_dir, capture_output=True, check=True
    )
    subprocess.run(["cfssljson", "-bare", "etcd-ca"], cwd=cfssl_dir, input=gencert.stdout, check=True)

    workspace.mkdir()
    (workspace / "cluster.yaml").write_text(
        f"""\
name: from-cfssl
token: from-cfssl-token
pki:
  ca: {{cert: {cfssl_dir / "etcd-ca.pem"}, key: {cfssl_dir / "etcd-ca-key.pem"}}}
  cfssl: {{ca_config: {cfssl_dir / "etcd-ca-config.json"}, server_profile: etcd, peer_profile: etcd,
          client_profile: client}}
members:
  - {{name: etcd1, address: 127.0.0.41}}
  - {{name: etcd2, address: 127.0.0.42}}
  - {{name: etcd3, address: 127.0.0.43}}
"""
    )
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    run_cli("health", "--dir", str(workspace))

    ca = x509.load_pem_x509_certificate((cfssl_dir / "etcd-ca.pem").read_bytes())
    for name in ("etcd1-server", "admin-client"):
        leaf = x509.load_pem_x509_certificate((workspace / "pki" / f"{name}.pem").read_bytes())
        assert leaf.issuer == ca.subject
        leaf.verify_directly_issued_by(ca)
    # peers have a CA of their own, the workspace's (the user's CA signs what clients see)
    peer_ca = x509.load_pem_x509_certificate((workspace / "pki" / "peer-ca.pem").read_bytes())
    x509.load_pem_x509_certificate(
        (workspace / "pki" / "etcd2-peer.pem").read_bytes()
    ).verify_directly_issued_by(peer_ca)
    assert peer_ca.subject != ca.subject
    # the guide's profiles: 10-year leaves; client cert without server auth
    client = x509.load_pem_x509_certificate((workspace / "pki" / "admin-client.pem").read_bytes())
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u._name for u in eku] == ["clientAuth"]
    assert (client.not_valid_after_utc - client.not_valid_before_utc).days == 3650
    # the CA key was never copied: not into the workspace PKI, not next to any member's files
    assert not (workspace / "pki" / "ca-key.pem").exists()
    assert not [
        p
        for p in workspace.rglob("*")
        if p.is_file()
        and b"PRIVATE KEY" in p.read_bytes()
        and p.read_bytes() == (cfssl_dir / "etcd-ca-key.pem").read_bytes()
    ]

    # plain etcdctl with the environment works against it
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    for line in run_cli("env", "--dir", str(workspace)).stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    put = subprocess.run(
        [str(etcd_bin.parent / "etcdctl"), "put", "k", "v"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert put.returncode == 0 and "OK" in put.stdout, put.stderr
