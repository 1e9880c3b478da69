"""The record of a CA rotation in progress (pure data; :mod:`etcdforge.verbs.rotate_ca.run` runs it).

A rotation goes through these phases, in order; the record names the current one and, for the two
rolling-restart phases, the members already restarted in it, so an interrupted run resumes exactly there:

1. ``trust-both``: every member (and the admin client) trusts old + new CA — a rolling restart, because
   etcd reads its trusted CA only at start;
2. ``reissue``: the new CA becomes the signing CA and every leaf is reissued from it, installed hot (no
   restart; etcd reloads leaves per handshake);
3. ``trust-new``: every member trusts only the new CA — a rolling restart; from then on a certificate
   signed by the old CA is refused;
4. ``finish``: the old CA is archived under ``pki/retired/`` and the rotation files are removed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Literal, cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from etcdforge.errors import PkiError

Phase = Literal["trust-both", "reissue", "trust-new", "finish"]
#: which CA rotates: ``ca`` (clients, the client port, server and client certificates — and peers too in
#: a workspace without a peers' CA) or ``peer`` (the peers' CA; from a workspace without one, this makes
#: it: peers then trust only it, so no client or server certificate is ever accepted as a peer)
Target = Literal["ca", "peer"]
PHASES: tuple[Phase, ...] = ("trust-both", "reissue", "trust-new", "finish")

STATE_FILE = "state.json"
#: the rotation directory is renamed to this (in pki/) as the rotation's last act, then removed
FINISHED_DIR = ".rotation-finished"
NEW_CA = "new-ca.pem"
NEW_CA_KEY = "new-ca-key.pem"
OLD_CA = "old-ca.pem"
OLD_CA_KEY = "old-ca-key.pem"


def ca_stem(target: Target) -> str:
    """The workspace file stem of the rotating CA (``ca.pem`` / ``peer-ca.pem``)."""
    return "peer-ca" if target == "peer" else "ca"


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def bundle(*certs: x509.Certificate) -> bytes:
    """PEM certificates concatenated: the trusted-CA file etcd and clients read (old first)."""
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class RotationState:
    phase: Phase
    old_ca: str  # SHA-256 fingerprint of the old CA certificate
    new_ca: str
    started: str  # ISO timestamp, for humans
    restarted: tuple[str, ...] = ()
    #: the member being restarted right now: the only one a resumed run may find stopped
    restarting: str | None = None
    target: Target = "ca"

    def with_restarting(self, member: str) -> RotationState:
        return replace(self, restarting=member)

    def with_restarted(self, member: str) -> RotationState:
        done = self.restarted if member in self.restarted else (*self.restarted, member)
        return replace(self, restarted=done, restarting=None)

    def next_phase(self) -> RotationState:
        i = PHASES.index(self.phase)
        if i + 1 >= len(PHASES):
            raise PkiError("the CA rotation is already finishing")
        return replace(self, phase=PHASES[i + 1], restarted=(), restarting=None)

    def to_json(self) -> bytes:
        doc = {
            "phase": self.phase,
            "old_ca_sha256": self.old_ca,
            "new_ca_sha256": self.new_ca,
            "started": self.started,
            "restarted": list(self.restarted),
            "restarting": self.restarting,
            "target": self.target,
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @staticmethod
    def from_json(data: bytes, source: str) -> RotationState:
        try:
            doc = json.loads(data)
            phase = doc["phase"]
            if phase not in PHASES:
                raise ValueError(f"unknown phase {phase!r}")
            restarted = doc.get("restarted", [])
            if not isinstance(restarted, list) or not all(isinstance(m, str) for m in restarted):
                raise ValueError("restarted must be a list of member names")
            restarting = doc.get("restarting")
            if restarting is not None and not isinstance(restarting, str):
                raise ValueError("restarting must be a member name or null")
            target = doc.get("target", "ca")
            if target not in ("ca", "peer"):
                raise ValueError(f"unknown target {target!r}")
            return RotationState(
                phase=cast(Phase, phase),
                old_ca=str(doc["old_ca_sha256"]),
                new_ca=str(doc["new_ca_sha256"]),
                started=str(doc["started"]),
                restarted=tuple(restarted),
                restarting=restarting,
                target=cast(Target, target),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PkiError(
                f"{source} is not a CA rotation record: {exc}",
                hint="restore it from a backup; do not delete it while members trust two CAs",
            ) from None
