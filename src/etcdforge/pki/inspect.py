"""Reading certificates back: cfssl's ``certinfo`` JSON and human-readable rows.

:func:`certinfo` reproduces ``cfssl certinfo -cert FILE`` (cfssl-compat.md B7) field for field and in
the same key order, so scripts written against cfssl's output keep working. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from etcdforge.pki.keys import describe_key
from etcdforge.pki.model import EXT_KEY_USAGE_NAMES

# helpers.SignatureString in cfssl; anything else prints as Go's fallback.
_SIGALG: dict[x509.ObjectIdentifier, str] = {
    SignatureAlgorithmOID.RSA_WITH_MD5: "MD5WithRSA",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "SHA1WithRSA",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "SHA256WithRSA",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "SHA384WithRSA",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "SHA512WithRSA",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "DSAWithSHA1",
    SignatureAlgorithmOID.DSA_WITH_SHA256: "DSAWithSHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ECDSAWithSHA1",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ECDSAWithSHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ECDSAWithSHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ECDSAWithSHA512",
    SignatureAlgorithmOID.ED25519: "Ed25519",
}

# certinfo.Name fields in struct order: (json key, OID, single-valued?)
_NAME_FIELDS = (
    ("common_name", NameOID.COMMON_NAME, True),
    ("serial_number", NameOID.SERIAL_NUMBER, True),
    ("country", NameOID.COUNTRY_NAME, False),
    ("organization", NameOID.ORGANIZATION_NAME, False),
    ("organizational_unit", NameOID.ORGANIZATIONAL_UNIT_NAME, False),
    ("locality", NameOID.LOCALITY_NAME, False),
    ("province", NameOID.STATE_OR_PROVINCE_NAME, False),
    ("street_address", NameOID.STREET_ADDRESS, False),
    ("postal_code", NameOID.POSTAL_CODE, False),
)
_EKU_LABELS: dict[str, str] = {v: k for k, v in reversed(EXT_KEY_USAGE_NAMES.items())}


def certinfo(cert: x509.Certificate) -> dict[str, Any]:
    """The object ``cfssl certinfo -cert`` prints, with the same keys, order and omissions."""
    out: dict[str, Any] = {"subject": _name(cert.subject), "issuer": _name(cert.issuer)}
    out["serial_number"] = str(cert.serial_number)
    sans = _sans(cert)
    if sans:  # omitempty
        out["sans"] = sans
    out["not_before"] = _rfc3339(cert.not_valid_before_utc)
    out["not_after"] = _rfc3339(cert.not_valid_after_utc)
    out["sigalg"] = _SIGALG.get(cert.signature_algorithm_oid, "Unknown Signature")
    out["authority_key_id"] = _key_id(_aki(cert))
    out["subject_key_id"] = _key_id(_ski(cert))
    out["pem"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    return out


def certinfo_json(cert: x509.Certificate) -> str:
    """:func:`certinfo` serialised as Go's ``json.MarshalIndent(v, "", "  ")`` does (HTML-escaped)."""
    text = json.dumps(certinfo(cert), indent=2, ensure_ascii=False)
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(ch, esc)
    return text


def describe(cert: x509.Certificate, now: datetime | None = None) -> list[tuple[str, str]]:
    """(label, value) rows for a human table; ``now`` sets the 'days left' row (omitted if None)."""
    rows: list[tuple[str, str]] = [
        ("subject", cert.subject.rfc4514_string()),
        ("issuer", cert.issuer.rfc4514_string()),
        ("serial", f"{cert.serial_number:x}"),
        ("not before", _rfc3339(cert.not_valid_before_utc)),
        ("not after", _rfc3339(cert.not_valid_after_utc)),
    ]
    if now is not None:
        left = cert.not_valid_after_utc - (now if now.tzinfo else now.replace(tzinfo=UTC))
        rows.append(("days left", str(left.days) if left.total_seconds() > 0 else "expired"))
    rows.append(("key", describe_key(cert.public_key())))
    rows.append(("signature", _SIGALG.get(cert.signature_algorithm_oid, "unknown")))
    rows.append(("key usage", ", ".join(key_usage_names(cert)) or "-"))
    rows.append(("extended key usage", ", ".join(eku_names(cert)) or "-"))
    rows.append(("SANs", ", ".join(_sans(cert)) or "-"))
    rows.append(("CA", "yes" if is_ca(cert) else "no"))
    return rows


def key_usage_names(cert: x509.Certificate) -> list[str]:
    """cfssl names of the KeyUsage bits set ('signing' for digitalSignature)."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    names = [
        ("signing", ku.digital_signature), ("content commitment", ku.content_commitment),
        ("key encipherment", ku.key_encipherment), ("data encipherment", ku.data_encipherment),
        ("key agreement", ku.key_agreement), ("cert sign", ku.key_cert_sign), ("crl sign", ku.crl_sign),
        ("encipher only", ku.key_agreement and ku.encipher_only),
        ("decipher only", ku.key_agreement and ku.decipher_only),
    ]  # fmt: skip
    return [n for n, on in names if on]


def eku_names(cert: x509.Certificate) -> list[str]:
    """cfssl names of the extended key usages (dotted OID for ones cfssl has no name for)."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [eku_label(oid) for oid in eku]


def eku_label(oid: x509.ObjectIdentifier) -> str:
    """cfssl's name for an EKU OID, or the dotted OID."""
    return _EKU_LABELS.get(oid.dotted_string, oid.dotted_string)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def san_sets(cert: x509.Certificate) -> tuple[frozenset[str], frozenset[str]]:
    """(DNS names, IP addresses as canonical text) in the certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    ips = frozenset(_go_ip(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return frozenset(san.get_values_for_type(x509.DNSName)), ips


def _name(name: x509.Name) -> dict[str, Any]:
    # Go's pkix.Name: single-valued fields keep the last value, list fields join with ","; then every
    # attribute value in DN order goes to "names". All fields are omitempty.
    out: dict[str, Any] = {}
    attrs = [a for rdn in name.rdns for a in rdn]
    for key, oid, single in _NAME_FIELDS:
        values = [str(a.value) for a in attrs if a.oid == oid]
        text = (values[-1] if values else "") if single else ",".join(values)
        if text:
            out[key] = text
    if attrs:
        out["names"] = [str(a.value) for a in attrs]
    return out


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns: list[str] = san.get_values_for_type(x509.DNSName)
    return dns + [_go_ip(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _go_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | object) -> str:
    # Go's net.IP.String prints an IPv4-mapped IPv6 address in dotted form.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aki(cert: x509.Certificate) -> bytes:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return b""
    return aki.key_identifier or b""


def _ski(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return b""


def _key_id(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in raw)
