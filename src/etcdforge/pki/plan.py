"""Plan PKI changes: a pure function from (settings, requests, observation, now) to ordered steps.

Safety rules enforced here (and tested as pure code):

* an existing CA is never replaced: a ``ca.pem`` whose key is missing, unreadable or mismatched,
  or a CA file that cannot be parsed, is a :class:`PkiError` telling the user what to restore;
* a leaf is reissued only with a reason (:func:`needs_reissue`); a valid one is kept, so a second
  run with the same inputs plans only ``keep`` steps;
* when a reissue can keep the existing key (it matches and has the requested algorithm), it does,
  so etcd's per-handshake reload never sees a certificate next to a key of another pair.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from etcdforge.errors import PkiError
from etcdforge.pki.inspect import eku_label, is_ca, san_sets
from etcdforge.pki.issue import subject_name, usage_extensions
from etcdforge.pki.keys import KeyPair, describe_key, key_matches, key_spec_of
from etcdforge.pki.model import CaSettings, CertRequest
from etcdforge.pki.observe import ExternalCa, ObservedPair, PkiObserved

Action = Literal["create-ca", "install-ca-cert", "issue", "reissue", "keep"]

#: Reissue leaves this long before they expire.
DEFAULT_RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class PkiStep:
    """One planned change. ``reuse_key`` keeps the private key already on disk."""

    id: str
    action: Action
    name: str
    reason: str
    request: CertRequest | None = None
    reuse_key: bool = False


@dataclass(frozen=True)
class PkiPlan:
    """Ordered steps (CA first) plus where the signing CA lives and non-fatal warnings."""

    pki_dir: Path
    steps: tuple[PkiStep, ...]
    ca_settings: CaSettings
    ca_cert_path: Path
    ca_key_path: Path
    warnings: tuple[str, ...] = ()
    #: the peers' CA and the peer certificates it signs, when the workspace keeps peers apart
    #: (applied first: a new workspace gets its peer CA before its CA, so an interrupted first run
    #: never leaves a CA without the peer CA it would have had)
    peer: PkiPlan | None = None

    @property
    def all_steps(self) -> tuple[PkiStep, ...]:
        return (*(self.peer.steps if self.peer else ()), *self.steps)

    @property
    def changes(self) -> tuple[PkiStep, ...]:
        return tuple(s for s in self.all_steps if s.action != "keep")


def needs_reissue(
    existing: ObservedPair | KeyPair | None,
    req: CertRequest,
    ca_cert: x509.Certificate | None,
    now: datetime,
    renew_before: timedelta = DEFAULT_RENEW_BEFORE,
) -> str | None:
    """Why the leaf for ``req`` must be (re)issued, or None when the existing one is fine.

    ``ca_cert`` None means a new CA is about to be created, so nothing existing is signed by it.
    """
    if existing is None:
        return "missing"
    if isinstance(existing, KeyPair):
        cert, key = existing.cert, existing.key
    else:
        if existing.cert is None:
            return "missing" if existing.cert_problem == "missing" else f"certificate {existing.cert_problem}"
        if existing.key is None:
            return f"key {existing.key_problem}"
        cert, key = existing.cert, existing.key
    if not key_matches(cert, key):
        return "key does not match certificate"
    if ca_cert is None or not signed_by(cert, ca_cert):
        return "not signed by the current CA"
    have_key = describe_key(cert.public_key())
    if key_spec_of(cert.public_key()) != req.key:
        return f"key algorithm differs: {have_key}, want {req.key}"
    want_subject = subject_name(req.cn, req.subject).rfc4514_string()
    if cert.subject.rfc4514_string() != want_subject:
        return f"subject differs: {cert.subject.rfc4514_string()!r}, want {want_subject!r}"
    sans = _san_diff(cert, req)
    if sans:
        return f"SANs differ: {sans}"
    usages = _usage_diff(cert, req)
    if usages:
        return f"usages differ: {usages}"
    return _expiry_reason(cert, _utc(now), renew_before)


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True when ``ca_cert`` issued ``cert`` (issuer name matches and the signature verifies)."""
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def plan_pki(
    ca: CaSettings,
    requests: Sequence[CertRequest],
    observed: PkiObserved,
    now: datetime,
    *,
    external_ca: ExternalCa | None = None,
    renew_before: timedelta = DEFAULT_RENEW_BEFORE,
    force: frozenset[str] = frozenset(),
    new_keys: bool = False,
) -> PkiPlan:
    """Steps that bring ``observed`` to: a CA, and one valid leaf per request (see module rules).

    ``force`` names leaves to reissue even though they are valid (an explicit renewal); ``new_keys``
    makes every reissue generate a new key instead of keeping the one on disk.
    """
    now = _utc(now)
    names = [r.name for r in requests]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise PkiError(
            f"certificate names used twice: {', '.join(dups)}", hint="give each request its own name"
        )
    if external_ca != observed.external_ca:
        raise PkiError(
            "the PKI was observed with a different CA than the one planned with",
            hint="pass the same external CA to observe_pki and plan_pki",
        )
    steps: list[PkiStep] = []
    warnings: list[str] = []
    if external_ca is None:
        ca_step, ca_cert = _plan_own_ca(observed)
    else:
        ca_step, ca_cert = _plan_external_ca(observed, external_ca)
    steps.append(ca_step)
    if ca_cert is not None:
        left = ca_cert.not_valid_after_utc - now
        if left < renew_before:
            what = "the peers' CA" if observed.ca.name == "peer-ca" else "the CA"
            warnings.append(
                f"{what} expires on {ca_cert.not_valid_after_utc:%Y-%m-%d}; "
                "etcdforge does not replace a CA on its own, plan a CA rotation"
            )
    for req in requests:
        obs = observed.leaves.get(req.name)
        reason = needs_reissue(obs, req, ca_cert, now, renew_before)
        if reason is None and req.name in force:
            reason = "renewal requested"
        if reason is None:
            steps.append(PkiStep(f"pki/{req.name}", "keep", req.name, "valid", req))
            continue
        action: Action = "issue" if reason == "missing" else "reissue"
        if ca_cert is None and obs is not None and obs.cert is not None:
            reason = "not signed by the current CA (a new CA is being created)"
        reuse = (
            not new_keys
            and obs is not None and obs.key is not None and obs.cert is not None
            and key_matches(obs.cert, obs.key) and key_spec_of(obs.key) == req.key
        )  # fmt: skip
        steps.append(PkiStep(f"pki/{req.name}", action, req.name, reason, req, reuse_key=reuse))
    pki_dir = observed.pki_dir
    ca_paths = (
        (external_ca.cert_path, external_ca.key_path)
        if external_ca
        else (observed.ca.cert_path, observed.ca.key_path)
    )
    return PkiPlan(pki_dir, tuple(steps), ca, ca_paths[0], ca_paths[1], tuple(warnings))


def _plan_own_ca(observed: PkiObserved) -> tuple[PkiStep, x509.Certificate | None]:
    ca = observed.ca
    stem = ca.name  # "ca", or "peer-ca" for the peers' CA
    sid = f"pki/{stem}"
    if ca.cert is None and ca.cert_problem == "missing":
        if ca.key is not None:
            # An interrupted first run writes the key before the certificate; finish that CA.
            return PkiStep(sid, "create-ca", stem, f"{stem}.pem missing; made from the existing "
                           f"{stem}-key.pem", reuse_key=True), None  # fmt: skip
        if ca.key_problem != "missing":
            raise PkiError(
                f"{ca.key_path} is {ca.key_problem} and {ca.cert_path} is missing",
                hint=f"restore the CA files, or move {stem}-key.pem away to create a new CA",
            )
        return PkiStep(sid, "create-ca", stem, "missing"), None
    return _existing_ca_step(ca, sid, stem), ca.cert


def _plan_external_ca(observed: PkiObserved, ext: ExternalCa) -> tuple[PkiStep, x509.Certificate]:
    ca = observed.ca
    if ca.cert is None:
        raise PkiError(f"external CA certificate {ext.cert_path} is {ca.cert_problem}",
                       hint="pass the path of the CA's .pem file")  # fmt: skip
    _existing_ca_step(ca, "pki/ca")
    installed = observed.installed_ca
    if installed is None or installed.cert is None:
        if installed is not None and installed.cert_problem != "missing":
            raise PkiError(f"{installed.cert_path} is {installed.cert_problem}",
                           hint="remove it so the external CA's certificate can be installed")  # fmt: skip
        return PkiStep("pki/ca", "install-ca-cert", "ca", f"missing; copied from {ext.cert_path}"), ca.cert
    if installed.cert != ca.cert:
        raise PkiError(
            f"{installed.cert_path} is a different CA than {ext.cert_path}",
            hint="etcdforge never replaces a CA silently; move the old PKI directory away to switch CAs",
        )
    return PkiStep("pki/ca", "keep", "ca", f"valid (external CA {ext.cert_path})"), ca.cert


def _existing_ca_step(ca: ObservedPair, step_id: str, stem: str = "ca") -> PkiStep:
    if ca.cert is None:
        raise PkiError(f"{ca.cert_path} is {ca.cert_problem}",
                       hint="etcdforge never replaces a CA; restore the file from a backup")  # fmt: skip
    if ca.key is None:
        raise PkiError(
            f"{ca.cert_path} exists but its key {ca.key_path} is {ca.key_problem}",
            hint="restore the CA key; etcdforge never replaces an existing CA silently",
        )
    if not key_matches(ca.cert, ca.key):
        raise PkiError(
            f"{ca.key_path} does not match {ca.cert_path}",
            hint="restore the matching CA key; etcdforge never replaces an existing CA silently",
        )
    if not is_ca(ca.cert):
        raise PkiError(f"{ca.cert_path} is not a CA certificate (no CA:TRUE basic constraint)",
                       hint="point etcdforge at the CA certificate, not a leaf")  # fmt: skip
    return PkiStep(step_id, "keep", stem, "valid")


def _san_diff(cert: x509.Certificate, req: CertRequest) -> str:
    have_dns, have_ip = san_sets(cert)
    want_dns = frozenset(req.dns_sans)
    want_ip = frozenset(str(ipaddress.ip_address(i)) for i in req.ip_sans)
    plus = sorted(want_dns - have_dns) + sorted(want_ip - have_ip)
    minus = sorted(have_dns - want_dns) + sorted(have_ip - want_ip)
    return " ".join([f"+{s}" for s in plus] + [f"-{s}" for s in minus])


def _usage_diff(cert: x509.Certificate, req: CertRequest) -> str:
    if is_ca(cert):
        return "certificate is a CA"
    want_ku, want_eku = usage_extensions(req.effective_usages)
    try:
        have_ku: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        have_ku = None
    try:
        have_eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        have_eku = set()
    wanted = set(want_eku) if want_eku else set()
    parts = []
    if want_ku != have_ku:
        parts.append("key usage")
    parts += [f"+{eku_label(oid)}" for oid in sorted(wanted - have_eku, key=str)]
    parts += [f"-{eku_label(oid)}" for oid in sorted(have_eku - wanted, key=str)]
    return " ".join(parts)


def _expiry_reason(cert: x509.Certificate, now: datetime, renew_before: timedelta) -> str | None:
    left = cert.not_valid_after_utc - now
    if left <= timedelta(0):
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    if left < renew_before:
        return f"expires in {left.days} days"
    if cert.not_valid_before_utc > now + timedelta(minutes=5):
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} (clock skew?)"
    return None


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
