"""`pki import-cfssl` on a directory made by the real cfssl with the guide's commands, then a cluster.

The guide's CA, signing config and CSRs go into the workspace; etcdforge issues per-member certificates
from that CA with the guide's `etcd`/`client` profiles and its RSA-2048 key and names, and real etcd runs
on them. The guide's server certificate signed with the `server` profile (no client auth) is reported.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from support import GUIDE_CA_CONFIG, GUIDE_CA_CSR, need_interop_binaries, run_cli

pytestmark = pytest.mark.integration
NAMES = [{"C": "CN", "ST": "ShangHai", "L": "ShangHai", "O": "ETCD"}]


def cfssl(directory: Path, *args: str, bare: str) -> None:
    out = subprocess.run(["cfssl", "gencert", *args], cwd=directory, capture_output=True, check=True)
    subprocess.run(["cfssljson", "-bare", bare], cwd=directory, input=out.stdout, check=True)


def test_import_the_guides_cfssl_pki_and_run_a_cluster_on_it(workspace: Path, etcd_bin: Path) -> None:
    need_interop_binaries("cfssl", "cfssljson")
    src = workspace.parent / "etc-etcd-pki"
    src.mkdir()
    (src / "etcd-ca-config.json").write_text(json.dumps(GUIDE_CA_CONFIG))
    (src / "etcd-ca-csr.json").write_text(json.dumps(GUIDE_CA_CSR))
    hosts = ["127.0.0.1", "127.0.0.51", "127.0.0.52", "127.0.0.53"]
    key = {"algo": "rsa", "size": 2048}
    for name, cn, hs in (("etcd-server", "etcd-server", hosts), ("etcd-client", "etcd-client", [])):
        (src / f"{name}-csr.json").write_text(json.dumps({"CN": cn, "hosts": hs, "key": key, "names": NAMES}))
    cfssl(src, "-initca", "etcd-ca-csr.json", bare="etcd-ca")
    signing = ["-ca=etcd-ca.pem", "-ca-key=etcd-ca-key.pem", "-config=etcd-ca-config.json"]
    # the guide's warning case: the `server` profile has no client auth
    cfssl(src, *signing, "-profile=server", "etcd-server-csr.json", bare="etcd-server")
    cfssl(src, *signing, "-profile=client", "etcd-client-csr.json", bare="etcd-client")

    workspace.mkdir()
    (workspace / "cluster.yaml").write_text(
        "name: imported\ntoken: imported-token\nmembers:\n"
        + "".join(f"  - {{name: etcd{i}, address: {ip}}}\n" for i, ip in enumerate(hosts[1:], 1))
    )
    out = run_cli("pki", "import-cfssl", str(src), "--dir", str(workspace)).stdout
    assert "server certificate etcd-server.pem" in out and "lacks client auth" in out, out
    assert "updated" in out
    assert stat.S_IMODE((workspace / "pki" / "ca-key.pem").stat().st_mode) == 0o600

    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    run_cli("health", "--dir", str(workspace))
    ca = x509.load_pem_x509_certificate((src / "etcd-ca.pem").read_bytes())
    for name in ("etcd1-server", "etcd2-peer", "admin-client"):
        leaf = x509.load_pem_x509_certificate((workspace / "pki" / f"{name}.pem").read_bytes())
        leaf.verify_directly_issued_by(ca)
        public = leaf.public_key()
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048  # the guide's CSR key
        assert leaf.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "ETCD"
    server = x509.load_pem_x509_certificate((workspace / "pki" / "etcd1-server.pem").read_bytes())
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u._name for u in eku} == {"serverAuth", "clientAuth"}  # the `etcd` profile, not `server`
