"""Private keys and certificates as bytes: generation, cfssl's PEM formats, and tolerant reading.

Invariants (cfssl-compat.md B6):

* written keys use cfssl's exact encodings: RSA as PKCS#1 ``RSA PRIVATE KEY``, ECDSA as SEC 1
  ``EC PRIVATE KEY`` with named-curve parameters and no ``EC PARAMETERS`` block;
* reading accepts PKCS#8, PKCS#1 and SEC 1 whatever the PEM label says, and skips the
  ``EC PARAMETERS`` blocks openssl writes, so keys made by cfssl or openssl both load;
* only RSA and ECDSA (P-256/384/521) are supported; anything else is a :class:`PkiError`.

Reading files is the only I/O here; writing belongs to :mod:`etcdforge.pki.apply`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from etcdforge.errors import PkiError
from etcdforge.pki.model import KeySpec

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}
_CURVE_SIZES: dict[str, int] = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return key_pem(self.key)


def generate_key(spec: KeySpec) -> PrivateKey:
    """A fresh private key for ``spec`` (RSA with exponent 65537, as Go's ``rsa.GenerateKey``)."""
    if spec.algo == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.size)
    return ec.generate_private_key(_CURVES[spec.size])


def key_pem(key: PrivateKey) -> bytes:
    """PEM exactly as cfssl writes it: PKCS#1 for RSA, SEC 1 for ECDSA (``TraditionalOpenSSL``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def key_spec_of(key: object) -> KeySpec | None:
    """The :class:`KeySpec` of a private or public key, or None outside what cfssl can generate."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        try:
            return KeySpec("rsa", key.key_size)
        except PkiError:
            return None
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        size = _CURVE_SIZES.get(key.curve.name)
        return KeySpec("ecdsa", size) if size else None
    return None


def describe_key(key: object) -> str:
    """``rsa-2048`` / ``ecdsa-256`` style label, or the key's type name."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"ecdsa-{_CURVE_SIZES.get(key.curve.name, key.curve.key_size)}"
    return type(key).__name__


def parse_cert(data: bytes, *, origin: str = "certificate") -> x509.Certificate:
    """The first certificate in PEM ``data``; ``origin`` names the source in errors."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(
            f"{origin}: not a PEM certificate ({exc})",
            hint="expected a '-----BEGIN CERTIFICATE-----' block",
        ) from exc


def parse_key(data: bytes, *, origin: str = "private key") -> PrivateKey:
    """The private key in PEM ``data`` (PKCS#8, PKCS#1 or SEC 1), skipping ``EC PARAMETERS``."""
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1)
        if label == b"EC PARAMETERS":
            continue  # openssl ecparam -genkey writes this first; cfssl skips it too
        if b"ENCRYPTED" in label or b"Proc-Type: 4,ENCRYPTED" in match.group(2):
            raise PkiError(
                f"{origin}: the key is encrypted",
                hint="etcd needs unencrypted keys; decrypt it with 'openssl pkey -in KEY -out KEY.pem'",
            )
        # Re-armour as a neutral block: cfssl tries every DER encoding whatever the label says.
        der = _pem_body_to_der(match.group(2), origin)
        key = _parse_key_der(der, origin)
        return key
    raise PkiError(f"{origin}: no PEM private key found", hint="expected '-----BEGIN ... PRIVATE KEY-----'")


def _pem_body_to_der(body: bytes, origin: str) -> bytes:
    lines = [ln for ln in body.splitlines() if ln.strip() and b":" not in ln]
    try:
        return base64.b64decode(b"".join(lines), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PkiError(f"{origin}: corrupt PEM base64 ({exc})") from exc


def _parse_key_der(der: bytes, origin: str) -> PrivateKey:
    try:
        # load_der_private_key tries PKCS#8 first, then the traditional PKCS#1 and SEC 1 forms.
        key = serialization.load_der_private_key(der, password=None)
    except TypeError as exc:
        raise PkiError(f"{origin}: the key is encrypted", hint="etcd needs unencrypted keys") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{origin}: not a PKCS#8, PKCS#1 or SEC 1 private key ({exc})") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVE_SIZES:
            raise PkiError(f"{origin}: unsupported curve {key.curve.name}", hint="use P-256, P-384 or P-521")
        return key
    raise PkiError(f"{origin}: unsupported key type {type(key).__name__}", hint="use an RSA or ECDSA key")


def load_cert(path: Path) -> x509.Certificate:
    """Read a PEM certificate file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read certificate {path}: {exc.strerror or exc}") from exc
    return parse_cert(data, origin=str(path))


def load_key(path: Path) -> PrivateKey:
    """Read a PEM private key file in any encoding cfssl or openssl writes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read private key {path}: {exc.strerror or exc}") from exc
    return parse_key(data, origin=str(path))


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, fmt) == key.public_key().public_bytes(der, fmt)
