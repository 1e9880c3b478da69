"""Issuance matches cfssl field for field (cfssl-compat.md B3/B4/B9)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdforge.errors import PkiError
from etcdforge.pki import CaSettings, CertRequest, KeyPair, KeySpec, SubjectNames, create_ca, issue, validity
from etcdforge.pki.issue import random_serial

NOW = datetime(2026, 11, 28, 12, 48, 40, tzinfo=UTC)
CA_NAMES = SubjectNames(C="CN", ST="ShangHai", L="ShangHai", O="CA", OU="China")


@pytest.fixture(scope="module")
def ec_ca() -> KeyPair:
    return create_ca(CaSettings("ETCD CA", CA_NAMES, KeySpec("ecdsa", 256), timedelta(hours=87600)), NOW)


@pytest.fixture(scope="module")
def rsa_ca() -> KeyPair:
    return create_ca(CaSettings("RSA CA", CA_NAMES, KeySpec("rsa", 2048), timedelta(hours=87600)), NOW)


def req(profile: str = "server", **kw: object) -> CertRequest:
    base: dict[str, object] = {
        "name": "etcd1-" + profile,
        "cn": "etcd1",
        "profile": profile,
        "ip_sans": ("127.0.0.1", "10.0.0.1", "::1"),
        "dns_sans": ("localhost", "etcd1.example.com"),
        "expiry": timedelta(hours=8760),
    }
    base.update(kw)
    return CertRequest(**base)  # type: ignore[arg-type]


def ext(cert: x509.Certificate, cls: type) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


@pytest.mark.parametrize(
    ("profile", "ekus"),
    [
        ("server", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("peer", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("client", [ExtendedKeyUsageOID.CLIENT_AUTH]),
    ],
)
def test_usages_per_profile(ec_ca: KeyPair, profile: str, ekus: list[x509.ObjectIdentifier]) -> None:
    cert = issue(ec_ca, req(profile), NOW).cert
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature and ku.value.key_encipherment
    assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.content_commitment)
    eku = ext(cert, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == ekus
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False and bc.value.path_length is None


def test_usage_override(ec_ca: KeyPair) -> None:
    cert = issue(ec_ca, req("server", usages=("signing", "key encipherment", "server auth")), NOW).cert
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_unknown_usage_rejected() -> None:
    with pytest.raises(PkiError, match="unknown usage"):
        req("server", usages=("signing", "sever auth"))


def test_sans_exact(ec_ca: KeyPair) -> None:
    cert = issue(ec_ca, req(), NOW).cert
    san = ext(cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "etcd1.example.com"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    # Go's order: DNS names first, then IPs.
    assert isinstance(next(iter(san.value)), x509.DNSName)


def test_client_without_sans_has_no_san_extension(ec_ca: KeyPair) -> None:
    cert = issue(ec_ca, req("client", ip_sans=(), dns_sans=()), NOW).cert
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)


def test_bad_ip_rejected(ec_ca: KeyPair) -> None:
    with pytest.raises(PkiError, match="not an IP"):
        issue(ec_ca, req(ip_sans=("10.0.0.300",)), NOW)


@pytest.mark.parametrize(
    ("now", "not_before"),
    [
        (datetime(2026, 1, 1, 12, 0, 29, 999999, tzinfo=UTC), datetime(2026, 1, 1, 11, 55, tzinfo=UTC)),
        (datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC), datetime(2026, 1, 1, 11, 56, tzinfo=UTC)),
        (datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 11, 55, tzinfo=UTC)),
        (datetime(2026, 1, 1, 23, 59, 45, tzinfo=UTC), datetime(2026, 1, 1, 23, 55, tzinfo=UTC)),
    ],
)
def test_validity_rounding_and_backdate(now: datetime, not_before: datetime) -> None:
    nb, na = validity(now, timedelta(hours=8760))
    assert nb == not_before
    assert na - nb == timedelta(hours=8760)


def test_validity_in_certificate(ec_ca: KeyPair) -> None:
    cert = issue(ec_ca, req(expiry=timedelta(hours=100)), NOW).cert
    assert cert.not_valid_before_utc == datetime(2026, 11, 28, 12, 44, tzinfo=UTC)
    assert cert.not_valid_after_utc == datetime(2026, 11, 28, 12, 44, tzinfo=UTC) + timedelta(hours=100)
    assert ec_ca.cert.not_valid_after_utc - ec_ca.cert.not_valid_before_utc == timedelta(hours=87600)


@pytest.mark.parametrize(("size", "curve"), [(256, "secp256r1"), (384, "secp384r1"), (521, "secp521r1")])
def test_ecdsa_leaf_keys(ec_ca: KeyPair, size: int, curve: str) -> None:
    pair = issue(ec_ca, req(key=KeySpec("ecdsa", size)), NOW)
    assert isinstance(pair.key, ec.EllipticCurvePrivateKey)
    assert pair.key.curve.name == curve
    assert pair.key_pem().startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    assert b"EC PARAMETERS" not in pair.key_pem()


@pytest.mark.parametrize("size", [2048, 3072])
def test_rsa_leaf_keys(ec_ca: KeyPair, size: int) -> None:
    pair = issue(ec_ca, req(key=KeySpec("rsa", size)), NOW)
    assert isinstance(pair.key, rsa.RSAPrivateKey)
    assert pair.key.key_size == size
    assert pair.key_pem().startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    # the signature follows the CA key (EC P-256), not the RSA leaf key
    assert isinstance(pair.cert.signature_hash_algorithm, hashes.SHA256)
    assert pair.cert.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.2"


def test_rsa_4096_ca_signs_with_sha512() -> None:
    ca = create_ca(CaSettings("big", key=KeySpec("rsa", 4096)), NOW)
    assert isinstance(ca.key, rsa.RSAPrivateKey) and ca.key.key_size == 4096
    assert isinstance(ca.cert.signature_hash_algorithm, hashes.SHA512)


@pytest.mark.parametrize(
    ("spec", "hash_cls"),
    [
        (KeySpec("ecdsa", 256), hashes.SHA256),
        (KeySpec("ecdsa", 384), hashes.SHA384),
        (KeySpec("ecdsa", 521), hashes.SHA512),
    ],
)
def test_signature_hash_follows_ca_key(spec: KeySpec, hash_cls: type) -> None:
    ca = create_ca(CaSettings("ca", key=spec), NOW)
    leaf = issue(ca, req(key=KeySpec("ecdsa", 256)), NOW)
    assert isinstance(ca.cert.signature_hash_algorithm, hash_cls)
    assert isinstance(leaf.cert.signature_hash_algorithm, hash_cls)


def test_rsa_2048_ca_signs_with_sha256(rsa_ca: KeyPair) -> None:
    leaf = issue(rsa_ca, req(), NOW)
    assert leaf.cert.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.11"  # sha256WithRSA


@pytest.mark.parametrize(("algo", "size"), [("rsa", 1024), ("rsa", 8200), ("ecdsa", 300), ("ecdsa", 2048)])
def test_keyspec_validation(algo: str, size: int) -> None:
    with pytest.raises(PkiError) as info:
        KeySpec(algo, size)  # type: ignore[arg-type]
    assert info.value.hint


def test_serials() -> None:
    serials = [random_serial() for _ in range(300)]
    assert len(set(serials)) == len(serials)
    assert all(0 < s < 2**159 for s in serials)
    # 20 bytes with the top bit cleared: most serials use (nearly) all 159 bits
    assert max(s.bit_length() for s in serials) == 159


def test_certificate_serial_is_20_byte_positive(ec_ca: KeyPair) -> None:
    a, b = issue(ec_ca, req(), NOW).cert, issue(ec_ca, req(), NOW).cert
    assert a.serial_number != b.serial_number
    for s in (a.serial_number, b.serial_number, ec_ca.cert.serial_number):
        assert 0 < s < 2**159


def test_ca_extensions(ec_ca: KeyPair) -> None:
    cert = ec_ca.cert
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is True and bc.value.path_length is None
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not (ku.value.digital_signature or ku.value.key_encipherment)
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.ExtendedKeyUsage)
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.AuthorityKeyIdentifier)  # no AKI on a self-signed root (Go >= 1.15)
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ec_ca.key.public_key())
    assert cert.issuer == cert.subject


def test_leaf_aki_is_ca_ski(ec_ca: KeyPair) -> None:
    leaf = issue(ec_ca, req(), NOW)
    aki = ext(leaf.cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ec_ca.cert, x509.SubjectKeyIdentifier).value.digest
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None
    ski = ext(leaf.cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.key.public_key())
    leaf.cert.verify_directly_issued_by(ec_ca.cert)


def test_dn_order_is_go_order(ec_ca: KeyPair) -> None:
    oids = [a.oid for rdn in ec_ca.cert.subject.rdns for a in rdn]
    assert oids == [
        NameOID.COUNTRY_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.COMMON_NAME,
    ]
    leaf = issue(ec_ca, req(subject=SubjectNames(OU="peer", O="etcd")), NOW).cert
    assert leaf.subject.rfc4514_string() == "CN=etcd1,OU=peer,O=etcd"  # rfc4514 prints reversed
    assert leaf.issuer.public_bytes() == ec_ca.cert.subject.public_bytes()


def test_reuse_key(ec_ca: KeyPair) -> None:
    first = issue(ec_ca, req(), NOW)
    second = issue(ec_ca, req(ip_sans=("10.0.0.9",)), NOW, key=first.key)
    assert second.key_pem() == first.key_pem()
    assert second.cert.serial_number != first.cert.serial_number


def test_mismatched_ca_pair_refused(ec_ca: KeyPair, rsa_ca: KeyPair) -> None:
    with pytest.raises(PkiError, match="does not match"):
        issue(KeyPair(cert=ec_ca.cert, key=rsa_ca.key), req(), NOW)


def test_invalid_names_rejected() -> None:
    with pytest.raises(PkiError):
        CertRequest("ca", "x", "server")
    with pytest.raises(PkiError):
        CertRequest("a/b", "x", "server")
    with pytest.raises(PkiError):
        CertRequest("x", "x", "nope")  # type: ignore[arg-type]
