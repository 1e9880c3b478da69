"""Golden interop with the real cfssl (2016 Debian build) and openssl (cfssl-compat.md B9)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from support import GUIDE_CA_CONFIG, GUIDE_CA_CSR

from etcdforge.pki import (
    CaSettings,
    CertRequest,
    ExternalCa,
    KeySpec,
    SubjectNames,
    apply_pki,
    apply_profile,
    ca_config_json,
    certinfo,
    csr_json,
    load_ca_config,
    load_cert,
    load_key,
    observe_pki,
    plan_pki,
    profile_for,
)
from etcdforge.pki.inspect import eku_names, key_usage_names, san_sets

pytestmark = pytest.mark.interop
Run = Callable[..., subprocess.CompletedProcess[bytes]]

MEMBER_IPS = ("127.0.0.1", "192.168.10.80", "192.168.10.81", "192.168.10.82")


def requests() -> tuple[CertRequest, ...]:
    return (
        CertRequest("etcd1-server", "etcd1", "server", MEMBER_IPS[:2], ("localhost",)),
        CertRequest(
            "etcd1-peer", "etcd1", "peer", MEMBER_IPS[1:2], subject=SubjectNames(O="etcd", OU="peer")
        ),
        CertRequest("client", "root", "client", key=KeySpec("rsa", 2048)),
    )


def normalize(info: dict[str, Any]) -> dict[str, Any]:
    """Parse colon-hex key ids, so the 2016 build's unpadded %X equals our %02X."""
    out = dict(info)
    for k in ("authority_key_id", "subject_key_id"):
        out[k] = [int(p, 16) for p in info[k].split(":")] if info[k] else []
    return out


def verify(run: Run, cwd: Path, ca: Path, *leaves: Path) -> None:
    proc = run(["openssl", "verify", "-CAfile", str(ca), *map(str, leaves)], cwd)
    assert proc.stdout.decode().count(": OK") == len(leaves)


def test_our_pki_verifies_and_matches_certinfo(run: Run, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = CaSettings(
        "ETCD CA", SubjectNames(C="US", ST="CA", L="SF", O="Acme", OU="etcd"), KeySpec("rsa", 2048)
    )
    now = datetime.now(UTC)
    apply_pki(pki, plan_pki(ca, requests(), observe_pki(pki), now), now)
    leaves = [pki / f"{r.name}.pem" for r in requests()]
    verify(run, tmp_path, pki / "ca.pem", *leaves)
    for path in (pki / "ca.pem", *leaves):
        theirs = json.loads(run(["cfssl-certinfo", "-cert", str(path)], tmp_path).stdout)
        assert normalize(theirs) == normalize(certinfo(load_cert(path))), path.name


def test_cfssl_initca_is_used_as_external_ca(run: Run, tmp_path: Path) -> None:
    (tmp_path / "etcd-ca-csr.json").write_text(json.dumps(GUIDE_CA_CSR))
    (tmp_path / "etcd-ca-config.json").write_text(json.dumps(GUIDE_CA_CONFIG))
    out = run(["cfssl", "gencert", "-initca", "etcd-ca-csr.json"], tmp_path).stdout
    run(["cfssljson", "-bare", "etcd-ca"], tmp_path, stdin=out)
    ext = ExternalCa(tmp_path / "etcd-ca.pem", tmp_path / "etcd-ca-key.pem")
    assert (tmp_path / "etcd-ca-key.pem").read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    load_key(ext.key_path)

    conf = load_ca_config(tmp_path / "etcd-ca-config.json")
    etcd, client = conf.profile("etcd"), conf.profile("client")
    reqs = tuple(apply_profile(r, client if r.profile == "client" else etcd) for r in requests())
    pki = tmp_path / "pki"
    now = datetime.now(UTC)
    settings = CaSettings("ignored: the external CA is used")
    apply_pki(pki, plan_pki(settings, reqs, observe_pki(pki, ext), now, external_ca=ext), now)
    leaves = [pki / f"{r.name}.pem" for r in reqs]
    verify(run, tmp_path, ext.cert_path, *leaves)
    verify(run, tmp_path, pki / "ca.pem", *leaves)
    peer = load_cert(pki / "etcd1-peer.pem")
    assert peer.issuer.public_bytes() == load_cert(ext.cert_path).subject.public_bytes()
    assert peer.not_valid_after_utc - peer.not_valid_before_utc == timedelta(hours=87600)
    ca_info = json.loads(run(["cfssl-certinfo", "-cert", str(ext.cert_path)], tmp_path).stdout)
    assert ca_info["subject"]["names"] == ["CN", "ShangHai", "ShangHai", "CA", "China", "ETCD CA"]
    assert normalize(ca_info) == normalize(certinfo(load_cert(ext.cert_path)))


def test_cfssl_reproduces_our_certs_from_exported_json(run: Run, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    now = datetime.now(UTC)
    apply_pki(pki, plan_pki(CaSettings("etcd CA"), requests(), observe_pki(pki), now), now)
    (tmp_path / "ca-config.json").write_bytes(ca_config_json({r.name: profile_for(r) for r in requests()}))
    for req in requests():
        (tmp_path / f"{req.name}-csr.json").write_bytes(csr_json(req))
        out = run(
            [
                "cfssl",
                "gencert",
                "-ca",
                str(pki / "ca.pem"),
                "-ca-key",
                str(pki / "ca-key.pem"),
                "-config",
                "ca-config.json",
                f"-profile={req.name}",
                f"{req.name}-csr.json",
            ],
            tmp_path,
        ).stdout
        run(["cfssljson", "-bare", f"cfssl-{req.name}"], tmp_path, stdin=out)
        theirs = load_cert(tmp_path / f"cfssl-{req.name}.pem")
        ours = load_cert(pki / f"{req.name}.pem")
        verify(run, tmp_path, pki / "ca.pem", tmp_path / f"cfssl-{req.name}.pem")
        assert key_usage_names(theirs) == key_usage_names(ours)
        assert eku_names(theirs) == eku_names(ours)
        assert san_sets(theirs) == san_sets(ours)
        assert theirs.subject == ours.subject
        assert lifetime(theirs) == lifetime(ours)
        assert type(load_key(tmp_path / f"cfssl-{req.name}-key.pem")) is type(
            load_key(pki / f"{req.name}-key.pem")
        )
        for cert in (theirs, ours):
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
            assert bc.critical and not bc.value.ca


def lifetime(cert: x509.Certificate) -> timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc
