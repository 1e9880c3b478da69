"""Execute a :class:`PkiPlan`: the only module of the PKI package that writes files.

Invariants:

* every write is atomic (temp file, fsync, rename) with the mode set at creation: certificates
  0644, private keys 0600 (:func:`etcdforge.fsutil.atomic_write`), so a key is never readable by
  others, not even briefly; the PKI directory is created 0700;
* a private key is written before its certificate, so an interruption leaves at worst a key
  without a matching certificate, which the next plan repairs (re-run converges);
* each step re-checks its guard before acting: the plan is a preview, and a CA that appeared
  since planning is never overwritten;
* the external CA's private key is only read, never copied into the PKI directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from etcdforge.errors import PkiError
from etcdforge.fsutil import atomic_write, ensure_dir
from etcdforge.pki.issue import create_ca, issue
from etcdforge.pki.keys import KeyPair, load_cert, load_key
from etcdforge.pki.observe import CA_CERT
from etcdforge.pki.plan import Action, PkiPlan, PkiStep

CERT_MODE = 0o644
KEY_MODE = 0o600


@dataclass(frozen=True)
class PkiEvent:
    """What one step did: ``paths`` are the files written (empty for ``keep``)."""

    step_id: str
    action: Action
    name: str
    reason: str
    paths: tuple[Path, ...] = ()


def apply_pki(pki_dir: Path, plan: PkiPlan, now: datetime) -> tuple[PkiEvent, ...]:
    """Run ``plan`` in order; stop with :class:`PkiError` at the first step that cannot be done."""
    if pki_dir != plan.pki_dir:
        raise PkiError(
            f"the plan was made for {plan.pki_dir}, not {pki_dir}", hint="plan again for this directory"
        )
    ensure_dir(pki_dir, 0o700)
    events: list[PkiEvent] = list(apply_pki(pki_dir, plan.peer, now)) if plan.peer is not None else []
    ca: KeyPair | None = None
    for step in plan.steps:
        if step.action == "keep":
            events.append(PkiEvent(step.id, step.action, step.name, step.reason))
        elif step.action == "create-ca":
            ca, paths = _create_ca(pki_dir, plan, step, now)
            events.append(PkiEvent(step.id, step.action, step.name, step.reason, paths))
        elif step.action == "install-ca-cert":
            dest = pki_dir / CA_CERT
            if dest.exists():
                raise PkiError(f"{dest} appeared after planning", hint="run the command again to re-plan")
            atomic_write(dest, load_cert(plan.ca_cert_path).public_bytes(Encoding.PEM), CERT_MODE)
            events.append(PkiEvent(step.id, step.action, step.name, step.reason, (dest,)))
        else:
            if ca is None:
                ca = _load_ca(plan)
            events.append(_issue_leaf(pki_dir, ca, step, now))
    return tuple(events)


def _create_ca(
    pki_dir: Path, plan: PkiPlan, step: PkiStep, now: datetime
) -> tuple[KeyPair, tuple[Path, ...]]:
    cert_path, key_path = plan.ca_cert_path, plan.ca_key_path
    if cert_path.parent != pki_dir:  # an external CA is never created here (a malformed plan)
        raise PkiError(f"{cert_path} is not in {pki_dir}; not creating a CA there")
    if cert_path.exists():
        raise PkiError(
            f"{cert_path} appeared after planning; not replacing a CA", hint="run the command again"
        )
    if step.reuse_key:
        ca = create_ca(plan.ca_settings, now, key=load_key(key_path))
        atomic_write(cert_path, ca.cert_pem(), CERT_MODE)
        return ca, (cert_path,)
    if key_path.exists():
        raise PkiError(
            f"{key_path} appeared after planning; not replacing a CA key", hint="run the command again"
        )
    ca = create_ca(plan.ca_settings, now)
    atomic_write(key_path, ca.key_pem(), KEY_MODE)
    atomic_write(cert_path, ca.cert_pem(), CERT_MODE)
    return ca, (key_path, cert_path)


def _load_ca(plan: PkiPlan) -> KeyPair:
    return KeyPair(cert=load_cert(plan.ca_cert_path), key=load_key(plan.ca_key_path))


def _issue_leaf(pki_dir: Path, ca: KeyPair, step: PkiStep, now: datetime) -> PkiEvent:
    req = step.request
    if req is None:
        raise PkiError(f"{step.id}: step has no certificate request")  # a malformed plan: a bug upstream
    cert_path, key_path = pki_dir / f"{req.name}.pem", pki_dir / f"{req.name}-key.pem"
    if step.reuse_key:
        pair = issue(ca, req, now, key=load_key(key_path))
        atomic_write(cert_path, pair.cert_pem(), CERT_MODE)
        paths: tuple[Path, ...] = (cert_path,)
    else:
        pair = issue(ca, req, now)
        atomic_write(key_path, pair.key_pem(), KEY_MODE)
        atomic_write(cert_path, pair.cert_pem(), CERT_MODE)
        paths = (key_path, cert_path)
    return PkiEvent(step.id, step.action, step.name, step.reason, paths)
