"""``pki export-cfssl`` with the real cfssl: the exported JSON reproduces our certificates.

A workspace PKI is made with the same observe/plan/apply path ``up`` uses; ``etcdforge pki export-cfssl``
writes the cfssl inputs; the real ``cfssl gencert`` (``-initca`` for the CA, ``-ca … -config … -profile``
for each leaf) then makes certificates whose usages, SANs, subject, key type and validity length must
equal ours.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from support import run_cli

from etcdforge import certs
from etcdforge.fsutil import atomic_write
from etcdforge.pki import apply_pki, load_cert
from etcdforge.pki.inspect import eku_names, key_usage_names, san_sets
from etcdforge.pki.keys import describe_key
from etcdforge.spec import ClusterSpec, dump_spec, parse_spec
from etcdforge.workspace import Workspace
from etcdforge.workspace_pki import plan_workspace_pki

pytestmark = pytest.mark.interop
Run = Callable[..., subprocess.CompletedProcess[bytes]]

SPECS = {
    "ecdsa-default": {
        "name": "t",
        "token": "tok",
        "mode": "local",
        "members": [
            {"name": "etcd1", "address": "127.0.0.2", "dns_names": ["etcd1.example.test"]},
            {"name": "etcd2", "address": "127.0.0.3"},
        ],
        "pki": {"clients": ["admin", "backup"]},
    },
    "rsa-subject-short-expiry": {
        "name": "t",
        "token": "tok",
        "mode": "local",
        "members": [{"name": "etcd1", "address": "127.0.0.2"}],
        "pki": {
            "key": {"algo": "rsa", "size": 2048},
            "ca_cn": "Example etcd CA",
            "ca_expiry": "17520h",
            "cert_expiry": "720h",
            "subject": {"C": "US", "ST": "CA", "L": "San Francisco", "O": "etcd", "OU": "ops"},
        },
    },
}


def _workspace(root: Path, raw: dict[str, object]) -> tuple[Workspace, ClusterSpec]:
    spec = parse_spec(raw)
    ws = Workspace(root)
    atomic_write(ws.spec_path, dump_spec(spec).encode())
    now = datetime.now(UTC)
    apply_pki(ws.pki_dir, plan_workspace_pki(spec, ws, now=now), now)  # what `up` does: peers' CA too
    return ws, spec


def _shape(cert: x509.Certificate) -> dict[str, object]:
    dns, ips = san_sets(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "key usage": sorted(key_usage_names(cert)),
        "ext key usage": sorted(eku_names(cert)),
        "dns": sorted(dns),
        "ips": sorted(ips),
        "key": describe_key(cert.public_key()),
        "validity": cert.not_valid_after_utc - cert.not_valid_before_utc,
        "ca": cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca,
    }


@pytest.mark.parametrize("raw", list(SPECS.values()), ids=list(SPECS))
def test_cfssl_reproduces_our_certificates(tmp_path: Path, run: Run, raw: dict[str, object]) -> None:
    ws, spec = _workspace(tmp_path / "ws", raw)
    out = tmp_path / "cfssl"
    proc = run_cli("pki", "export-cfssl", "--dir", str(ws.root), "--out", str(out))
    written = {Path(line).name for line in proc.stdout.split()}
    requests = certs.cert_requests(spec, base_dir=ws.root)
    assert written == {
        "ca-config.json", "ca-csr.json", "peer-ca-csr.json", *(f"{r.name}-csr.json" for r in requests)
    }  # fmt: skip
    config = json.loads((out / "ca-config.json").read_text())
    assert set(config["signing"]["profiles"]) == {"server", "peer", "client"}

    # The CA: cfssl gencert -initca from our ca-csr.json.
    initca = run(["cfssl", "gencert", "-initca", "ca-csr.json"], cwd=out)
    run(["cfssljson", "-bare", "cfssl-ca"], cwd=out, stdin=initca.stdout)
    assert _shape(load_cert(out / "cfssl-ca.pem")) == _shape(load_cert(ws.ca_cert))
    # the peers' CA likewise, from peer-ca-csr.json
    initca = run(["cfssl", "gencert", "-initca", "peer-ca-csr.json"], cwd=out)
    run(["cfssljson", "-bare", "cfssl-peer-ca"], cwd=out, stdin=initca.stdout)
    assert _shape(load_cert(out / "cfssl-peer-ca.pem")) == _shape(load_cert(ws.peer_ca_cert))

    # Every leaf, signed by our CA (peer certificates: by the peers' CA) with the exported profile.
    for req in requests:
        stem = "peer-ca" if req.profile == "peer" else "ca"
        gen = run(
            ["cfssl", "gencert", "-ca", str(ws.pki_dir / f"{stem}.pem"), "-ca-key",
             str(ws.pki_dir / f"{stem}-key.pem"), "-config", "ca-config.json", "-profile", req.profile,
             f"{req.name}-csr.json"],
            cwd=out,
        )  # fmt: skip
        run(["cfssljson", "-bare", f"cfssl-{req.name}"], cwd=out, stdin=gen.stdout)
        theirs = load_cert(out / f"cfssl-{req.name}.pem")
        ours = load_cert(ws.cert_path(req.name))
        assert _shape(theirs) == _shape(ours), req.name
        assert theirs.issuer == ours.issuer


def test_export_default_out_dir(tmp_path: Path) -> None:
    ws, _ = _workspace(tmp_path / "ws", SPECS["ecdsa-default"])
    run_cli("pki", "export-cfssl", "--dir", str(ws.root))
    doc = json.loads((ws.root / "cfssl" / "ca-config.json").read_text())
    assert doc["signing"]["profiles"]["server"]["usages"] == [
        "signing",
        "key encipherment",
        "server auth",
        "client auth",
    ]
    assert doc["signing"]["profiles"]["client"]["expiry"] == "8760h"
    csr = json.loads((ws.root / "cfssl" / "etcd1-server-csr.json").read_text())
    assert csr["CN"] == "etcd1"
    assert set(csr["hosts"]) == {"etcd1.example.test", "localhost", "127.0.0.2", "127.0.0.1"}
