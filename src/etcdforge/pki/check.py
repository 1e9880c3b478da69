"""``pki check``: a pure health check of certificates and keys, for people and for monitoring.

The caller gathers (:mod:`etcdforge.verbs.pki_check`); this module only judges: :func:`check_pki`
takes file contents, modes and owners as plain data plus ``now`` and returns :class:`Finding` values. It
never reads a file, a clock or the network, so every verdict is unit-testable.

Invariants:

* every checked item yields at least one finding per check that applies to it, ``ok`` included, so
  the output shows what was checked and not only what failed;
* severities map to monitoring exit codes (:func:`exit_code`): 0 all ``ok``, 1 some ``warning``
  (inside the warning window, a group-readable key), 2 some ``broken`` (expired, wrong CA …);
* a file that cannot be read or parsed is one ``broken`` ``read`` finding; the checks that need its
  content are then skipped rather than reported as a cascade of follow-on failures.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from etcdforge.errors import PkiError
from etcdforge.pki.inspect import is_ca, san_sets
from etcdforge.pki.keys import PrivateKey, key_matches, parse_cert, parse_key
from etcdforge.pki.plan import signed_by

Severity = Literal["ok", "warning", "broken"]
#: ``peer-ca``: the peers' CA, or a member's copy of what its peer listener trusts
Role = Literal["ca", "peer-ca", "server", "peer", "client"]
CheckName = Literal[
    "read", "expiry", "chain", "key-match", "usages", "sans", "key-mode", "owner", "ca-key-absent", "revoked",
    "peer-trust",
]  # fmt: skip

_RANK: dict[Severity, int] = {"ok": 0, "warning": 1, "broken": 2}

#: Extended key usages each role needs. Server certificates need ``client auth`` as well: etcd's
#: gRPC gateway dials its own client port with the server certificate; peers are clients of each other.
REQUIRED_EKUS: dict[Role, tuple[x509.ObjectIdentifier, ...]] = {
    "ca": (),
    "peer-ca": (),
    "server": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    "peer": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
}
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "server auth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "client auth",
}


@dataclass(frozen=True)
class Finding:
    """One verdict: ``subject`` (which certificate or member), ``check`` (what was checked)."""

    subject: str
    check: CheckName
    severity: Severity
    message: str

    def to_json(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass(frozen=True)
class Thresholds:
    """When a finding turns into a warning. ``warn_days``: certificates expiring sooner warn."""

    warn_days: int = 30
    #: a key readable by its group (0640) is a warning; set False to accept it silently
    warn_group_readable: bool = True


@dataclass(frozen=True)
class FileFacts:
    """A file as gathered: content (None = missing), permission bits, owner and group names.

    ``problem`` is set when the file exists but could not be read (e.g. permission denied).
    ``public_sha256``: a private key read where it lives (on a member's host) — only the SHA-256 of its
    public half (SubjectPublicKeyInfo, DER) travels, never the key; ``data`` is then None.
    """

    path: str
    data: bytes | None
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    problem: str | None = None
    public_sha256: str | None = None


@dataclass(frozen=True)
class CertItem:
    """One certificate (and its key, except for an installed CA copy) with what it must satisfy.

    ``ips``/``dns`` are the SANs the certificate must cover (a member's addresses); ``key_owner`` is the
    user that must own the key file (None: not checked).
    """

    subject: str
    role: Role
    cert: FileFacts
    key: FileFacts | None = None
    ips: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    key_owner: str | None = None


@dataclass(frozen=True)
class MemberFiles:
    """Files found in one member's directory (name -> content digest), for the CA key check.

    ``digests`` maps each path to the hex SHA-256 of its content; ``pem_keys`` optionally holds the
    content of PEM files (local members), ``public_keys`` the SHA-256 of the public half of each private
    key found (members on hosts: computed there), so a CA key re-encoded (PKCS#8 instead of SEC 1) is
    recognised too.
    """

    member: str
    digests: Mapping[str, str]
    pem_keys: Mapping[str, bytes] = field(default_factory=dict)
    public_keys: Mapping[str, str] = field(default_factory=dict)
    #: set when the directory could not be scanned completely: absence of the CA key is then unproven
    problem: str | None = None


@dataclass(frozen=True)
class PkiFacts:
    """Everything :func:`check_pki` judges. ``ca`` is the configured CA certificate (the trust anchor)."""

    ca: FileFacts
    ca_key: bytes | None
    items: tuple[CertItem, ...]
    members: tuple[MemberFiles, ...] = ()
    #: file names that must never appear in a member's directory, whatever their content
    forbidden_names: tuple[str, ...] = ("ca-key.pem", "peer-ca-key.pem")
    #: the workspace's trust bundle (pki/trust.pem) once a CA rotation started: during a rotation members
    #: trust old + new CA, and leaves signed by the other CA of the bundle are expected
    trust: bytes | None = None
    #: revoked client certificates (``client remove``): serial (hex) -> client name
    revoked: Mapping[str, str] = field(default_factory=dict)
    #: the peers' CA (None: the workspace has none, the CA signs peer certificates too) and its key
    peer_ca: FileFacts | None = None
    peer_ca_key: bytes | None = None
    #: pki/peer-trust.pem once a rotation of the peers' CA started (like ``trust`` for the CA)
    peer_trust: bytes | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exit_code(findings: Sequence[Finding]) -> int:
    """0 all fine, 1 something in the warning window, 2 something expired or broken."""
    return max((_RANK[f.severity] for f in findings), default=0)


def worst(findings: Sequence[Finding]) -> Severity:
    code = exit_code(findings)
    return "broken" if code == 2 else "warning" if code == 1 else "ok"


def check_pki(facts: PkiFacts, now: datetime, thresholds: Thresholds = Thresholds()) -> tuple[Finding, ...]:
    """Judge every certificate, key and member directory in ``facts`` at time ``now``."""
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    out: list[Finding] = []
    ca_cert = _parse_cert(facts.ca, "ca", out)
    peers = ("peer", "peer-ca")
    out += _judge([i for i in facts.items if i.role not in peers], ca_cert, facts.trust, now, thresholds)
    peer_items = [replace(i, role="ca") if i.role == "peer-ca" else i for i in facts.items if i.role in peers]
    if facts.peer_ca is None:  # peers trust what clients trust: the CA signs them, and any client certificate
        out += _judge(peer_items, ca_cert, facts.trust, now, thresholds)
        if peer_items:
            out.append(
                Finding(
                    "peers",
                    "peer-trust",
                    "warning",
                    "the peer listeners trust the CA that signs client and server certificates, so any "
                    "client certificate of it is accepted as a peer; `etcdforge pki rotate-ca --peer` gives "
                    "peers a CA of their own (no downtime)",
                )
            )
    else:
        peer_ca = _parse_cert(facts.peer_ca, "peer-ca", out)
        out += _judge(peer_items, peer_ca, facts.peer_trust, now, thresholds)
        if peer_ca is not None and ca_cert is not None and peer_ca != ca_cert:
            out.append(Finding("peers", "peer-trust", "ok", "peers have a CA of their own"))
    out += check_revoked(facts.items, facts.revoked)
    ca_key = _quiet_key(facts.ca_key) if facts.ca_key is not None else None
    peer_key = [(facts.peer_ca_key, _quiet_key(facts.peer_ca_key))] if facts.peer_ca_key is not None else []
    for member in facts.members:
        out += check_member_files(member, facts.ca_key, ca_key, facts.forbidden_names, peer_key)
    return tuple(out)


def _judge(
    items: Sequence[CertItem],
    ca_cert: x509.Certificate | None,
    trust: bytes | None,
    now: datetime,
    thresholds: Thresholds,
) -> list[Finding]:
    """Judge ``items`` against the CA that signs them and the rotation bundle (``trust``) beside it."""
    out: list[Finding] = []
    trusted = _bundle(trust)
    if ca_cert is not None and trusted and ca_cert not in trusted:
        trusted = ()  # a stale trust bundle: the workspace ignores it too (Workspace.trusted_ca)
    for item in items:
        is_bundle = item.role == "ca" and trust is not None and item.cert.data == trust
        if is_bundle and ca_cert is not None and ca_cert not in trusted:
            stale = f"{item.cert.path}: a stale trust bundle without the configured CA"
            out.append(Finding(item.subject, "chain", "broken", stale))
            continue
        if is_bundle and not (len(trusted) == 1 and trusted[0] == ca_cert):
            names = ", ".join(f"serial {c.serial_number:x}" for c in trusted)
            out.append(Finding(item.subject, "chain", "ok", f"is the trust bundle ({names})"))
            continue
        found = check_item(item, ca_cert, now, thresholds)
        out += [_other_trusted(f, item, trusted, ca_cert) for f in found]
    return out


def check_revoked(items: Sequence[CertItem], revoked: Mapping[str, str]) -> list[Finding]:
    """A certificate whose serial ``client remove`` recorded, still in a file: broken (with auth on etcd
    refuses it, but the copy should go)."""
    out = []
    for item in items:
        if not revoked or item.cert.data is None:
            continue
        try:
            serial = f"{x509.load_pem_x509_certificate(item.cert.data).serial_number:x}"
        except ValueError:
            continue  # reported by the read check
        if serial in revoked:
            message = f"{item.cert.path} holds {revoked[serial]}'s revoked certificate (serial {serial})"
            out.append(Finding(item.subject, "revoked", "broken", message))
    return out


def _bundle(data: bytes | None) -> tuple[x509.Certificate, ...]:
    if not data:
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        return ()


def _other_trusted(
    finding: Finding, item: CertItem, trusted: Sequence[x509.Certificate], ca_cert: x509.Certificate | None
) -> Finding:
    """A leaf signed by another CA of the rotation's trust bundle is a warning, not a broken chain."""
    if finding.check != "chain" or finding.severity != "broken" or item.role == "ca" or not trusted:
        return finding
    try:
        cert = x509.load_pem_x509_certificate(item.cert.data or b"")
    except ValueError:
        return finding
    if any(c != ca_cert and signed_by(cert, c) for c in trusted):
        return Finding(
            finding.subject,
            "chain",
            "warning",
            "signed by the previous CA, which members still trust: a CA rotation is in progress "
            "(`etcdforge pki rotate-ca` finishes it)",
        )
    return finding


def check_item(
    item: CertItem, ca_cert: x509.Certificate | None, now: datetime, thresholds: Thresholds
) -> list[Finding]:
    """All checks of one certificate (and key): expiry, chain, key match, usages, SANs, key file."""
    out: list[Finding] = []
    s = item.subject
    cert = _parse_cert(item.cert, s, out)
    key: PrivateKey | None = None
    fingerprint = item.key.public_sha256 if item.key is not None else None
    if item.key is not None:
        if fingerprint is None:
            key = _parse_key(item.key, s, out)
        else:
            _unreadable(item.key, s, out)
        out += check_key_file(s, item.key, thresholds, item.key_owner)
    if cert is None:
        return out
    out.append(check_expiry(s, cert, now, thresholds))
    out.append(check_chain(s, item.role, cert, ca_cert, path=item.cert.path))
    if key is not None or fingerprint is not None:
        matches = (
            key_matches(cert, key) if key is not None else public_sha256(cert.public_key()) == fingerprint
        )
        if matches:
            out.append(Finding(s, "key-match", "ok", "key matches certificate"))
        else:
            out.append(
                Finding(
                    s,
                    "key-match",
                    "broken",
                    f"{item.key.path if item.key else 'key'} does not match {item.cert.path}",
                )
            )
    if item.role != "ca":
        out.append(check_usages(s, item.role, cert))
        if item.ips or item.dns:
            out.append(check_sans(s, cert, item.ips, item.dns, path=item.cert.path))
    return out


def check_expiry(subject: str, cert: x509.Certificate, now: datetime, thresholds: Thresholds) -> Finding:
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    left = after - now
    if left <= timedelta(0):
        return Finding(subject, "expiry", "broken", f"expired on {after:%Y-%m-%d %H:%M} UTC")
    if before > now:
        return Finding(
            subject, "expiry", "broken", f"not valid before {before:%Y-%m-%d %H:%M} UTC (clock skew?)"
        )
    days = left.days
    if left < timedelta(days=thresholds.warn_days):
        return Finding(subject, "expiry", "warning", f"expires in {days} days ({after:%Y-%m-%d}); renew it")
    return Finding(subject, "expiry", "ok", f"{days} days left (until {after:%Y-%m-%d})")


def check_chain(
    subject: str,
    role: Role,
    cert: x509.Certificate,
    ca_cert: x509.Certificate | None,
    *,
    path: str | None = None,
) -> Finding:
    """A leaf must be signed by the configured CA; an installed CA copy must *be* that CA.

    A broken verdict starts with ``path`` (the wrong file), when given.
    """
    at = f"{path}: " if path else ""
    if ca_cert is None:
        return Finding(subject, "chain", "broken", "the configured CA certificate is missing or unreadable")
    if role == "ca":
        if cert == ca_cert:
            return Finding(subject, "chain", "ok", "is the configured CA")
        return Finding(
            subject,
            "chain",
            "broken",
            f"{at}not the configured CA ({cert.subject.rfc4514_string()!r}, serial {cert.serial_number:x})",
        )
    if cert.issuer != ca_cert.subject:
        return Finding(
            subject,
            "chain",
            "broken",
            f"{at}issued by {cert.issuer.rfc4514_string()!r}, not the configured CA "
            f"{ca_cert.subject.rfc4514_string()!r}",
        )
    if not signed_by(cert, ca_cert):
        return Finding(
            subject,
            "chain",
            "broken",
            f"{at}issuer name matches but the signature does not verify (another CA)",
        )
    return Finding(subject, "chain", "ok", "signed by the configured CA")


def check_usages(subject: str, role: Role, cert: x509.Certificate) -> Finding:
    if is_ca(cert):
        return Finding(subject, "usages", "broken", "a CA certificate used as a leaf")
    try:
        ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = None  # no EKU extension: Go accepts any usage
    missing = (
        []
        if ekus is None or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in ekus
        else [_EKU_NAMES[oid] for oid in REQUIRED_EKUS[role] if oid not in ekus]
    )
    if missing:
        why = " (etcd's gateway and peers dial with it)" if role != "client" else ""
        return Finding(subject, "usages", "broken", f"{role} certificate lacks {', '.join(missing)}{why}")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            return Finding(subject, "usages", "broken", "key usage lacks digital signature (signing)")
    except x509.ExtensionNotFound:
        pass
    wanted = ", ".join(_EKU_NAMES[oid] for oid in REQUIRED_EKUS[role])
    return Finding(subject, "usages", "ok", f"has {wanted}")


def check_sans(
    subject: str,
    cert: x509.Certificate,
    ips: tuple[str, ...],
    dns: tuple[str, ...],
    *,
    path: str | None = None,
) -> Finding:
    """The certificate must name every address and DNS name; a broken verdict starts with ``path``."""
    have_dns, have_ips = san_sets(cert)
    missing = [d for d in dns if d not in have_dns]
    missing += [i for i in ips if str(ipaddress.ip_address(i)) not in have_ips]
    if missing:
        at = f"{path}: " if path else ""
        return Finding(subject, "sans", "broken", f"{at}SANs lack {', '.join(missing)}")
    return Finding(subject, "sans", "ok", f"covers {', '.join([*dns, *ips])}")


def check_key_file(
    subject: str, key: FileFacts, thresholds: Thresholds, expected_owner: str | None
) -> list[Finding]:
    """Key permission bits (0600/0400 ok, 0640 warning, anything wider broken) and owner."""
    out: list[Finding] = []
    if key.mode is not None:
        loose = key.mode & 0o077
        if loose == 0:
            out.append(Finding(subject, "key-mode", "ok", f"{key.path} is {key.mode:04o}"))
        elif loose == 0o040:
            sev: Severity = "warning" if thresholds.warn_group_readable else "ok"
            out.append(
                Finding(subject, "key-mode", sev, f"{key.path} is {key.mode:04o} (group-readable); want 0600")
            )
        else:
            out.append(
                Finding(
                    subject,
                    "key-mode",
                    "broken",
                    f"{key.path} is {key.mode:04o}: readable by others; chmod 0600 it and consider "
                    "reissuing the key",
                )
            )
    if expected_owner is not None and key.owner is not None:
        if key.owner == expected_owner:
            out.append(Finding(subject, "owner", "ok", f"{key.path} owned by {key.owner}"))
        else:
            out.append(
                Finding(
                    subject,
                    "owner",
                    "warning",
                    f"{key.path} owned by {key.owner}:{key.group}, want {expected_owner}",
                )
            )
    return out


def check_member_files(
    member: MemberFiles,
    ca_key_bytes: bytes | None,
    ca_key: PrivateKey | None,
    forbidden: tuple[str, ...],
    others: Sequence[tuple[bytes, PrivateKey | None]] = (),
) -> list[Finding]:
    """The CA private key (and ``others``: the peers' CA key) must not be anywhere in a member's
    directory, under any name or encoding.

    A copy found is ``broken``; an incomplete scan that found none is a ``warning`` (not a false ``ok``).
    """
    subject = member.member
    bad: list[str] = []
    keys = [(ca_key_bytes, ca_key), *others]
    digests = {sha256_hex(raw) for raw, _ in keys if raw is not None}
    parsed = [k for _, k in keys if k is not None]
    for path, file_digest in sorted(member.digests.items()):
        name = path.rsplit("/", 1)[-1]
        if name in forbidden or file_digest in digests:
            bad.append(path)
    for key in parsed:
        for path, data in sorted(member.pem_keys.items()):
            other = _quiet_key(data)
            if path not in bad and other is not None and _same_key(other, key):
                bad.append(path)
        public = public_sha256(key.public_key())
        bad += [p for p, fp in sorted(member.public_keys.items()) if fp == public and p not in bad]
    if bad:
        return [
            Finding(
                subject,
                "ca-key-absent",
                "broken",
                f"the CA private key is on this member: {', '.join(bad)}; delete it and consider "
                "rotating the CA",
            )
        ]
    if member.problem is not None:
        return [
            Finding(
                subject, "ca-key-absent", "warning", f"{member.problem}: a copy of the CA key could be there"
            )
        ]
    return [Finding(subject, "ca-key-absent", "ok", "no copy of the CA key")]


def public_sha256(key: PublicKeyTypes) -> str:
    """The hex SHA-256 of a public key's SubjectPublicKeyInfo (DER): what ``openssl pkey -pubout
    -outform DER | sha256sum`` prints for its private key."""
    from cryptography.hazmat.primitives import serialization

    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return hashlib.sha256(key.public_bytes(serialization.Encoding.DER, fmt)).hexdigest()


def _same_key(a: PrivateKey, b: PrivateKey) -> bool:
    from cryptography.hazmat.primitives import serialization

    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return a.public_key().public_bytes(der, fmt) == b.public_key().public_bytes(der, fmt)


def _quiet_key(data: bytes) -> PrivateKey | None:
    try:
        return parse_key(data)
    except PkiError:
        return None


def _unreadable(facts: FileFacts, subject: str, out: list[Finding]) -> bool:
    if facts.problem is not None:
        out.append(Finding(subject, "read", "broken", f"{facts.path}: {facts.problem}"))
        return True
    if facts.data is None and facts.public_sha256 is None:
        out.append(Finding(subject, "read", "broken", f"{facts.path} is missing"))
        return True
    return False


def _parse_cert(facts: FileFacts, subject: str, out: list[Finding]) -> x509.Certificate | None:
    if _unreadable(facts, subject, out):
        return None
    assert facts.data is not None
    try:
        return parse_cert(facts.data, origin=facts.path)
    except PkiError as exc:
        out.append(Finding(subject, "read", "broken", exc.message))
        return None


def _parse_key(facts: FileFacts, subject: str, out: list[Finding]) -> PrivateKey | None:
    if _unreadable(facts, subject, out):
        return None
    assert facts.data is not None
    try:
        return parse_key(facts.data, origin=facts.path)
    except PkiError as exc:
        out.append(Finding(subject, "read", "broken", exc.message))
        return None
