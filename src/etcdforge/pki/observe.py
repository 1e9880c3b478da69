"""Observe the PKI on disk: what certificates and keys exist and whether they can be read.

Observation never writes and never raises for a bad file: a missing, unreadable or garbled file
is recorded with a *problem* string, so the planner can give a reason instead of a traceback.

Layout (cfssljson ``-bare`` names, cfssl-compat.md B5)::

    PKI_DIR/ca.pem  PKI_DIR/ca-key.pem          the CA (unless an external CA is used)
    PKI_DIR/NAME.pem  PKI_DIR/NAME-key.pem      one pair per leaf
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from etcdforge.errors import PkiError
from etcdforge.pki.keys import KeyPair, PrivateKey, parse_cert, parse_key

_T = TypeVar("_T")

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
#: the peers' own CA: it signs the members' peer certificates and is the only CA their peer listeners
#: trust, so no client or server certificate can ever act as a peer
PEER_CA_STEM = "peer-ca"
PEER_CA_CERT = f"{PEER_CA_STEM}.pem"
PEER_CA_KEY = f"{PEER_CA_STEM}-key.pem"
#: files of the PKI directory that are CAs or trust bundles, never leaves
NOT_LEAVES = frozenset({"ca", "peer-ca", "trust", "peer-trust"})


@dataclass(frozen=True)
class ExternalCa:
    """A CA kept outside the PKI directory, e.g. ``etcd-ca.pem``/``etcd-ca-key.pem`` from cfssl."""

    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class ObservedPair:
    """One certificate/key file pair as found on disk.

    ``cert_problem``/``key_problem`` are None when the file was read and parsed, else ``"missing"``
    or ``"unreadable: <why>"``; ``cert``/``key`` are set exactly when there is no problem.
    """

    name: str
    cert_path: Path
    key_path: Path
    cert: x509.Certificate | None = None
    key: PrivateKey | None = None
    cert_problem: str | None = "missing"
    key_problem: str | None = "missing"

    @property
    def pair(self) -> KeyPair | None:
        """Both halves, when both were read."""
        if self.cert is None or self.key is None:
            return None
        return KeyPair(cert=self.cert, key=self.key)


@dataclass(frozen=True)
class PkiObserved:
    """Everything :func:`plan_pki` needs to know about the PKI directory.

    ``ca`` is the signing CA: ``PKI_DIR/ca.pem`` + ``ca-key.pem``, or the external pair when
    ``external_ca`` is set, in which case ``installed_ca`` is the copy at ``PKI_DIR/ca.pem``.
    """

    pki_dir: Path
    ca: ObservedPair
    leaves: Mapping[str, ObservedPair]
    external_ca: ExternalCa | None = None
    installed_ca: ObservedPair | None = None


def observe_pki(pki_dir: Path, external_ca: ExternalCa | None = None, *, ca_stem: str = "ca") -> PkiObserved:
    """Read the PKI directory (and the external CA, if given). Never writes, never raises on content.

    ``ca_stem`` names the signing CA's files (``peer-ca`` for the peers' CA)."""
    installed = _read_pair(ca_stem, pki_dir / f"{ca_stem}.pem", pki_dir / f"{ca_stem}-key.pem")
    if external_ca is None:
        ca, installed_ca = installed, None
    else:
        ca = _read_pair("ca", external_ca.cert_path, external_ca.key_path)
        installed_ca = installed
    leaves: dict[str, ObservedPair] = {}
    if pki_dir.is_dir():
        for path in sorted(pki_dir.glob("*.pem")):
            stem = path.name[: -len(".pem")]
            if stem in NOT_LEAVES or stem.endswith("-key"):
                continue
            leaves[stem] = _read_pair(stem, path, pki_dir / f"{stem}-key.pem")
        # A key left without its certificate (e.g. an interrupted write) is still worth reporting.
        for path in sorted(pki_dir.glob("*-key.pem")):
            stem = path.name[: -len("-key.pem")]
            if stem not in NOT_LEAVES and stem not in leaves:
                leaves[stem] = _read_pair(stem, pki_dir / f"{stem}.pem", path)
    return PkiObserved(
        pki_dir=pki_dir, ca=ca, leaves=leaves, external_ca=external_ca, installed_ca=installed_ca
    )


def _read_pair(name: str, cert_path: Path, key_path: Path) -> ObservedPair:
    cert, cert_problem = _read(cert_path, lambda data: parse_cert(data, origin=str(cert_path)))
    key, key_problem = _read(key_path, lambda data: parse_key(data, origin=str(key_path)))
    return ObservedPair(name, cert_path, key_path, cert, key, cert_problem, key_problem)


def _read(path: Path, parse: Callable[[bytes], _T]) -> tuple[_T | None, str | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    try:
        return parse(data), None
    except PkiError as exc:
        return None, f"unreadable: {exc.message}"
