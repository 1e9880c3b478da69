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
from etcd_binaries import one_version
from support import GUIDE_CA_CONFIG, GUIDE_CA_CSR, need_interop_binaries, peer_port_answers, run_cli

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
    assert "pki rotate-ca --peer" in out  # one CA for everything: its client certificates are peers
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


@one_version()
def test_import_a_cfssl_pki_with_a_peers_ca(workspace: Path, etcd_bin: Path) -> None:
    """A cfssl directory with the peers' own CA (``peer-ca.pem``, as `pki export-cfssl` names it, made by
    the real `cfssl gencert -initca`): both CAs are imported; peers are signed by and trust only theirs."""
    need_interop_binaries("cfssl", "cfssljson")
    src = workspace.parent / "cfssl-two-cas"
    src.mkdir()
    (src / "ca-config.json").write_text(json.dumps(GUIDE_CA_CONFIG))
    (src / "ca-csr.json").write_text(json.dumps(GUIDE_CA_CSR))
    (src / "peer-ca-csr.json").write_text(json.dumps({**GUIDE_CA_CSR, "CN": "etcd peers"}))
    cfssl(src, "-initca", "ca-csr.json", bare="ca")
    cfssl(src, "-initca", "peer-ca-csr.json", bare="peer-ca")
    workspace.mkdir()
    hosts = ["127.0.0.54", "127.0.0.55", "127.0.0.56"]
    (workspace / "cluster.yaml").write_text(
        "name: two\ntoken: two-token\nmembers:\n"
        + "".join(f"  - {{name: etcd{i}, address: {ip}}}\n" for i, ip in enumerate(hosts, 1))
    )
    out = run_cli("pki", "import-cfssl", str(src), "--dir", str(workspace)).stdout
    assert "peers' CA: peer-ca.pem -> pki/peer-ca.pem" in out, out
    assert (workspace / "pki" / "peer-ca.pem").read_bytes() == (src / "peer-ca.pem").read_bytes()
    assert stat.S_IMODE((workspace / "pki" / "peer-ca-key.pem").stat().st_mode) == 0o600
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    ca = x509.load_pem_x509_certificate((src / "ca.pem").read_bytes())
    peer_ca = x509.load_pem_x509_certificate((src / "peer-ca.pem").read_bytes())
    pki = workspace / "pki"
    x509.load_pem_x509_certificate((pki / "etcd1-server.pem").read_bytes()).verify_directly_issued_by(ca)
    x509.load_pem_x509_certificate((pki / "etcd2-peer.pem").read_bytes()).verify_directly_issued_by(peer_ca)
    url = f"https://{hosts[0]}:2380"
    assert peer_port_answers(url, pki / "peer-ca.pem", pki / "etcd1-peer.pem", pki / "etcd1-peer-key.pem")
    assert not peer_port_answers(
        url, pki / "peer-ca.pem", pki / "admin-client.pem", pki / "admin-client-key.pem"
    )
