"""Certificate issuance that matches ``cfssl gencert`` field for field (cfssl-compat.md B3/B4/B9).

Pure apart from randomness (keys, serials): the clock is the ``now`` parameter.

Invariants of every certificate made here:

* serial = 20 random bytes with the top bit cleared (positive, at most 159 bits);
* notBefore = ``now`` rounded to the nearest minute minus 5 minutes; notAfter = notBefore + expiry;
* KeyUsage critical, ExtendedKeyUsage non-critical, BasicConstraints critical and always present;
* SKI = SHA-1 of the public key; AKI = the issuer's SKI on leaves, absent on the self-signed root;
* subject DN in Go's order C, ST, L, O, OU, CN; the leaf's issuer is the CA's *parsed* subject,
  so the issuer bytes equal the CA subject bytes even for a CA another tool encoded;
* the signature hash follows the CA key (B2 table), never the leaf key.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from etcdforge.errors import PkiError
from etcdforge.pki.keys import KeyPair, PrivateKey, describe_key, generate_key, key_matches
from etcdforge.pki.model import (
    CA_USAGES,
    EXT_KEY_USAGE_NAMES,
    KEY_USAGE_NAMES,
    CaSettings,
    CertRequest,
    SubjectNames,
)

#: cfssl's default backdate (B1: ``backdate`` 0 means this default, it cannot be switched off).
BACKDATE = timedelta(minutes=5)

_KU_FIELDS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def random_serial() -> int:
    """cfssl's serial: 20 random bytes, top bit cleared so the DER INTEGER stays positive."""
    while True:
        raw = bytearray(os.urandom(20))
        raw[0] &= 0x7F
        serial = int.from_bytes(raw, "big")
        if serial:  # RFC 5280 wants a positive serial; zero has probability 2**-159
            return serial


def validity(now: datetime, expiry: timedelta) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) as cfssl computes them: Go ``Round(time.Minute)`` (halves up) − 5 min."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    floor = now.replace(second=0, microsecond=0)
    rounded = floor + timedelta(minutes=1) if now - floor >= timedelta(seconds=30) else floor
    not_before = rounded - BACKDATE
    return not_before, not_before + expiry


def signature_hash(ca_key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The hash cfssl's ``DefaultSigAlgo`` picks for a CA key."""
    if isinstance(ca_key, rsa.RSAPrivateKey):
        if ca_key.key_size >= 4096:
            return hashes.SHA512()
        if ca_key.key_size >= 3072:
            return hashes.SHA384()
        if ca_key.key_size >= 2048:
            return hashes.SHA256()
        # cfssl would fall back to SHA-1 here; we refuse to sign with a weak CA at all.
        raise PkiError(
            f"the CA key is {describe_key(ca_key)}, too weak to sign with",
            hint="create a new CA with an RSA key of at least 2048 bits or an ECDSA key",
        )
    by_curve: dict[str, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
        "secp256r1": hashes.SHA256(),
        "secp384r1": hashes.SHA384(),
        "secp521r1": hashes.SHA512(),
    }
    try:
        return by_curve[ca_key.curve.name]
    except KeyError:
        raise PkiError(
            f"unsupported CA curve {ca_key.curve.name}", hint="use P-256, P-384 or P-521"
        ) from None


def subject_name(cn: str, names: SubjectNames) -> x509.Name:
    """DN in Go's fixed order C, ST, L, O, OU, CN; absent or empty attributes are left out."""
    order = (
        (NameOID.COUNTRY_NAME, names.C),
        (NameOID.STATE_OR_PROVINCE_NAME, names.ST),
        (NameOID.LOCALITY_NAME, names.L),
        (NameOID.ORGANIZATION_NAME, names.O),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, names.OU),
        (NameOID.COMMON_NAME, cn),
    )
    try:
        return x509.Name([x509.NameAttribute(oid, value) for oid, value in order if value])
    except ValueError as exc:
        # e.g. a country code that is not two letters
        raise PkiError(f"invalid subject: {exc}", hint="C must be a two-letter country code") from exc


def usage_extensions(usages: tuple[str, ...]) -> tuple[x509.KeyUsage | None, x509.ExtendedKeyUsage | None]:
    """Map cfssl usage names to (KeyUsage, ExtendedKeyUsage); None where no bit/EKU is set."""
    bits = {KEY_USAGE_NAMES[u] for u in usages if u in KEY_USAGE_NAMES}
    ekus: list[ObjectIdentifier] = []
    for u in usages:
        oid = EXT_KEY_USAGE_NAMES.get(u)
        if oid is not None and ObjectIdentifier(oid) not in ekus:
            ekus.append(ObjectIdentifier(oid))
    ku: x509.KeyUsage | None = None
    if bits:
        try:
            ku = x509.KeyUsage(**{f: f in bits for f in _KU_FIELDS})
        except ValueError as exc:
            raise PkiError(f"invalid usages {list(usages)}: {exc}") from exc
    return ku, (x509.ExtendedKeyUsage(ekus) if ekus else None)


def create_ca(settings: CaSettings, now: datetime, key: PrivateKey | None = None) -> KeyPair:
    """A self-signed CA like ``cfssl gencert -initca``: keyCertSign|cRLSign, CA:TRUE, no pathlen."""
    ca_key = key if key is not None else generate_key(settings.key)
    name = subject_name(settings.cn, settings.subject)
    not_before, not_after = validity(now, settings.expiry)
    ku, _ = usage_extensions(CA_USAGES)
    assert ku is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(ku, critical=True)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
    )
    # No AKI on a self-signed root: Go >= 1.15 (and so current cfssl) leaves it out.
    cert = builder.sign(ca_key, signature_hash(ca_key))
    return KeyPair(cert=cert, key=ca_key)


def issue(ca: KeyPair, req: CertRequest, now: datetime, key: PrivateKey | None = None) -> KeyPair:
    """Sign a leaf for ``req`` with ``ca``; reuse ``key`` when given, else generate ``req.key``."""
    if not key_matches(ca.cert, ca.key):
        raise PkiError("the CA key does not match the CA certificate", hint="check ca.pem and ca-key.pem")
    leaf_key = key if key is not None else generate_key(req.key)
    not_before, not_after = validity(now, req.expiry)
    ku, eku = usage_extensions(req.effective_usages)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name(req.cn, req.subject))
        .issuer_name(ca.cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ku is not None:
        builder = builder.add_extension(ku, critical=True)
    if eku is not None:
        builder = builder.add_extension(eku, critical=False)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
    )
    builder = builder.add_extension(_authority_key_id(ca.cert), critical=False)
    sans = san_entries(req.dns_sans, req.ip_sans)
    if sans:
        # Go marks the SAN extension critical only when the subject is empty (RFC 5280 4.2.1.6).
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans),
            critical=not req.cn
            and not any((req.subject.C, req.subject.ST, req.subject.L, req.subject.O, req.subject.OU)),
        )
    cert = builder.sign(ca.key, signature_hash(ca.key))
    return KeyPair(cert=cert, key=leaf_key)


def san_entries(dns: tuple[str, ...], ips: tuple[str, ...]) -> list[x509.GeneralName]:
    """SANs in Go's encoding order (DNS, then IP), duplicates dropped, IPs validated."""
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(dns):
        out.append(x509.DNSName(name))
    seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for text in ips:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError as exc:
            raise PkiError(f"{text!r} is not an IP address", hint="put host names in dns_sans") from exc
        if ip not in seen:
            seen.add(ip)
            out.append(x509.IPAddress(ip))
    return out


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Go copies the parent's SKI verbatim; fall back to computing it for a CA without one.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        pub = ca_cert.public_key()
        if not isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise PkiError("unsupported CA public key type") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(pub)
