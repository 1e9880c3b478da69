"""certinfo JSON (B7), human rows, and tolerant key reading (B6)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from etcdforge.errors import PkiError
from etcdforge.pki import (
    CaSettings,
    CertRequest,
    KeyPair,
    KeySpec,
    SubjectNames,
    certinfo,
    certinfo_json,
    create_ca,
    describe,
    issue,
    key_matches,
    load_cert,
    load_key,
)

NOW = datetime(2026, 11, 28, 12, 48, 40, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    names = SubjectNames(C="US", ST="CA", L="SF", O="Acme", OU="etcd")
    return create_ca(CaSettings("Test Etcd CA", names, KeySpec("ecdsa", 256)), NOW)


@pytest.fixture(scope="module")
def leaf(ca: KeyPair) -> KeyPair:
    req = CertRequest(
        "m1",
        "member1",
        "peer",
        ("127.0.0.1", "::1", "::ffff:10.0.0.1"),
        ("localhost", "member1.example.com"),
        subject=SubjectNames(O="etcd", OU="peer"),
    )
    return issue(ca, req, NOW)


def test_certinfo_leaf(ca: KeyPair, leaf: KeyPair) -> None:
    info = certinfo(leaf.cert)
    assert list(info) == [
        "subject",
        "issuer",
        "serial_number",
        "sans",
        "not_before",
        "not_after",
        "sigalg",
        "authority_key_id",
        "subject_key_id",
        "pem",
    ]
    assert info["subject"] == {
        "common_name": "member1",
        "organization": "etcd",
        "organizational_unit": "peer",
        "names": ["etcd", "peer", "member1"],
    }
    assert list(info["issuer"]) == [
        "common_name",
        "country",
        "organization",
        "organizational_unit",
        "locality",
        "province",
        "names",
    ]
    assert info["issuer"]["names"] == ["US", "CA", "SF", "Acme", "etcd", "Test Etcd CA"]
    assert info["serial_number"] == str(leaf.cert.serial_number)
    assert info["sans"] == ["localhost", "member1.example.com", "127.0.0.1", "::1", "10.0.0.1"]
    assert info["not_before"] == "2026-11-28T12:44:00Z"
    assert info["not_after"] == "2027-11-28T12:44:00Z"
    assert info["sigalg"] == "ECDSAWithSHA256"
    assert info["authority_key_id"] == certinfo(ca.cert)["subject_key_id"]
    parts = info["subject_key_id"].split(":")
    assert len(parts) == 20 and all(len(p) == 2 and p == p.upper() for p in parts)
    assert info["pem"] == leaf.cert_pem().decode()


def test_certinfo_root(ca: KeyPair) -> None:
    info = certinfo(ca.cert)
    assert "sans" not in info
    assert info["authority_key_id"] == ""
    assert info["subject"] == info["issuer"]


def test_certinfo_json_is_go_indented(leaf: KeyPair) -> None:
    text = certinfo_json(leaf.cert)
    assert text.startswith('{\n  "subject": {\n    "common_name": "member1",')
    assert json.loads(text) == certinfo(leaf.cert)


def test_describe_rows(leaf: KeyPair) -> None:
    rows = dict(describe(leaf.cert, NOW + timedelta(days=10)))
    assert rows["key"] == "ecdsa-256"
    assert rows["key usage"] == "signing, key encipherment"
    assert rows["extended key usage"] == "server auth, client auth"
    assert rows["CA"] == "no"
    assert rows["days left"] == "354"
    assert "127.0.0.1" in rows["SANs"]
    assert rows["subject"] == "CN=member1,OU=peer,O=etcd"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_load_key_formats(tmp_path: Path, leaf: KeyPair) -> None:
    key = leaf.key
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    sec1 = leaf.key_pem()
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    for i, data in enumerate((pkcs8, sec1, params + sec1)):
        loaded = load_key(write(tmp_path / f"k{i}.pem", data))
        assert key_matches(leaf.cert, loaded)
    # cfssl tries every DER encoding whatever the label says
    relabelled = sec1.replace(b"EC PRIVATE KEY", b"PRIVATE KEY")
    assert key_matches(leaf.cert, load_key(write(tmp_path / "r.pem", relabelled)))


def test_load_key_errors(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    enc = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(PkiError, match="encrypted"):
        load_key(write(tmp_path / "enc.pem", enc))
    with pytest.raises(PkiError, match="no PEM private key"):
        load_key(write(tmp_path / "junk.pem", b"hello"))
    with pytest.raises(PkiError, match="cannot read"):
        load_key(tmp_path / "absent.pem")
    with pytest.raises(PkiError, match="not a PEM certificate"):
        load_cert(write(tmp_path / "c.pem", b"garbage"))


def test_key_matches(ca: KeyPair, leaf: KeyPair) -> None:
    assert key_matches(leaf.cert, leaf.key)
    assert not key_matches(leaf.cert, ca.key)
