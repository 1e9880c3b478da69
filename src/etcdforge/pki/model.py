"""Data model of the PKI: what to issue, described as frozen values with no I/O.

Invariants:

* every value here is immutable and validated at construction, so code that receives a
  :class:`CertRequest` never re-checks key sizes or usage names;
* usage names are cfssl's (``"signing"``, ``"server auth"`` …, see ``cfssl-compat.md`` B1), so a
  request and a cfssl ``ca-config.json`` profile speak the same language;
* subject attributes are single-valued; the DN is always encoded in Go's order C, ST, L, O, OU, CN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from etcdforge.errors import PkiError

KeyAlgo = Literal["ecdsa", "rsa"]
Profile = Literal["server", "peer", "client"]

#: cfssl usage name -> ``cryptography.x509.KeyUsage`` keyword (B1 KeyUsage table).
KEY_USAGE_NAMES: dict[str, str] = {
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}

#: cfssl usage name -> extended key usage OID dotted string (B1 ExtKeyUsage table).
EXT_KEY_USAGE_NAMES: dict[str, str] = {
    "any": "2.5.29.37.0",
    "server auth": "1.3.6.1.5.5.7.3.1",
    "client auth": "1.3.6.1.5.5.7.3.2",
    "code signing": "1.3.6.1.5.5.7.3.3",
    "email protection": "1.3.6.1.5.5.7.3.4",
    "s/mime": "1.3.6.1.5.5.7.3.4",
    "ipsec end system": "1.3.6.1.5.5.7.3.5",
    "ipsec tunnel": "1.3.6.1.5.5.7.3.6",
    "ipsec user": "1.3.6.1.5.5.7.3.7",
    "timestamping": "1.3.6.1.5.5.7.3.8",
    "ocsp signing": "1.3.6.1.5.5.7.3.9",
    "microsoft sgc": "1.3.6.1.4.1.311.10.3.3",
    "netscape sgc": "2.16.840.1.113730.4.1",
}

KNOWN_USAGES: frozenset[str] = frozenset(KEY_USAGE_NAMES) | frozenset(EXT_KEY_USAGE_NAMES)

#: Default usages per profile. Server certificates carry ``client auth`` too: etcd's gRPC gateway
#: dials its own client port presenting the server certificate (etcd-facts.md §1, "bad certificate").
DEFAULT_USAGES: dict[Profile, tuple[str, ...]] = {
    "server": ("signing", "key encipherment", "server auth", "client auth"),
    "peer": ("signing", "key encipherment", "server auth", "client auth"),
    "client": ("signing", "key encipherment", "client auth"),
}

#: What ``cfssl gencert -initca`` puts on a CA (B3): keyCertSign|cRLSign, no EKU.
CA_USAGES: tuple[str, ...] = ("cert sign", "crl sign")

_EC_SIZES = (256, 384, 521)
_RSA_MIN, _RSA_MAX = 2048, 8192


@dataclass(frozen=True)
class KeySpec:
    """Key algorithm and size, validated like cfssl's ``KeyRequest`` (B2)."""

    algo: KeyAlgo = "ecdsa"
    size: int = 256

    def __post_init__(self) -> None:
        if self.algo == "rsa":
            if self.size < _RSA_MIN:
                raise PkiError(
                    f"RSA key is too weak: {self.size} bits",
                    hint=f"use an RSA size from {_RSA_MIN} to {_RSA_MAX}, e.g. 2048",
                )
            if self.size > _RSA_MAX:
                raise PkiError(
                    f"RSA key is too strong: {self.size} bits",
                    hint=f"use an RSA size from {_RSA_MIN} to {_RSA_MAX}, e.g. 4096",
                )
        elif self.algo == "ecdsa":
            if self.size not in _EC_SIZES:
                raise PkiError(
                    f"invalid curve: ecdsa size {self.size}",
                    hint="use an ecdsa size of 256, 384 or 521",
                )
        else:
            raise PkiError(f"invalid key algorithm {self.algo!r}", hint='use "ecdsa" or "rsa"')

    def __str__(self) -> str:
        return f"{self.algo}-{self.size}"


@dataclass(frozen=True)
class SubjectNames:
    """The optional DN attributes of cfssl's ``names`` entry; empty strings count as absent."""

    C: str | None = None
    ST: str | None = None
    L: str | None = None
    O: str | None = None  # noqa: E741 - the attribute is called O in cfssl JSON and X.500
    OU: str | None = None


@dataclass(frozen=True)
class CertRequest:
    """One leaf certificate to issue.

    ``name`` is the file stem (``NAME.pem``, ``NAME-key.pem``). ``usages`` overrides the profile's
    default usages, e.g. with the usages of a user's cfssl profile.
    """

    name: str
    cn: str
    profile: Profile
    ip_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()
    key: KeySpec = KeySpec()
    expiry: timedelta = timedelta(hours=8760)
    subject: SubjectNames = SubjectNames()
    usages: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith(".") or self.name in ("ca", "ca-key"):
            raise PkiError(
                f"invalid certificate name {self.name!r}",
                hint="use a plain file stem such as 'etcd1-server' (not 'ca', no '/')",
            )
        if self.profile not in DEFAULT_USAGES:
            raise PkiError(f"unknown profile {self.profile!r}", hint="use server, peer or client")
        if self.expiry <= timedelta(0):
            raise PkiError(f"{self.name}: expiry must be positive", hint="e.g. 8760h")
        if self.usages is not None:
            check_usages(self.usages, what=f"certificate {self.name!r}")

    @property
    def effective_usages(self) -> tuple[str, ...]:
        """The usages the certificate gets: the override, else the profile default."""
        return self.usages if self.usages is not None else DEFAULT_USAGES[self.profile]


@dataclass(frozen=True)
class CaSettings:
    """How to create the CA when there is none (cfssl ``gencert -initca`` equivalent)."""

    cn: str
    subject: SubjectNames = SubjectNames()
    key: KeySpec = KeySpec()
    expiry: timedelta = timedelta(hours=43800)

    def __post_init__(self) -> None:
        if not self.cn:
            raise PkiError("the CA needs a common name", hint="set a CN such as 'etcd CA'")
        if self.expiry <= timedelta(0):
            raise PkiError("CA expiry must be positive", hint="e.g. 87600h")


def check_usages(usages: tuple[str, ...], *, what: str) -> None:
    """Reject usage names cfssl does not know, or a list with no usage at all."""
    unknown = [u for u in usages if u not in KNOWN_USAGES]
    if unknown:
        raise PkiError(
            f"{what}: unknown usage(s) {', '.join(repr(u) for u in unknown)}",
            hint="usage names are lower case with spaces, e.g. 'server auth'; known: "
            + ", ".join(sorted(KNOWN_USAGES)),
        )
    if not usages:
        raise PkiError(f"{what}: no usages", hint="give at least one, e.g. 'signing'")
