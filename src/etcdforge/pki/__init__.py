"""etcdforge PKI: a cfssl-compatible CA and leaf certificates for mutual-TLS etcd.

Layers, pure core first:

* :mod:`~etcdforge.pki.model` — what to issue (frozen, validated values);
* :mod:`~etcdforge.pki.issue` — building certificates exactly like cfssl (clock injected);
* :mod:`~etcdforge.pki.keys` — key generation, cfssl's PEM formats, tolerant reading;
* :mod:`~etcdforge.pki.cfssl` — ca-config.json / CSR JSON in and out;
* :mod:`~etcdforge.pki.inspect` — ``cfssl certinfo`` JSON and human rows;
* :mod:`~etcdforge.pki.observe` → :mod:`~etcdforge.pki.plan` → :mod:`~etcdforge.pki.apply` —
  the workspace PKI as observe (read only), plan (pure), execute (the only writer).
"""

from etcdforge.durations import format_go_duration, parse_go_duration
from etcdforge.pki.apply import PkiEvent, apply_pki
from etcdforge.pki.cfssl import (
    CfsslConfig,
    CfsslProfile,
    CsrSpec,
    apply_profile,
    ca_config_json,
    ca_csr_json,
    classify_host,
    csr_json,
    load_ca_config,
    load_csr,
    profile_for,
)
from etcdforge.pki.inspect import certinfo, certinfo_json, describe
from etcdforge.pki.issue import create_ca, issue, validity
from etcdforge.pki.keys import KeyPair, PrivateKey, key_matches, key_pem, load_cert, load_key
from etcdforge.pki.model import (
    DEFAULT_USAGES,
    CaSettings,
    CertRequest,
    KeySpec,
    Profile,
    SubjectNames,
)
from etcdforge.pki.observe import ExternalCa, ObservedPair, PkiObserved, observe_pki
from etcdforge.pki.plan import PkiPlan, PkiStep, needs_reissue, plan_pki

__all__ = [
    "DEFAULT_USAGES",
    "CaSettings",
    "CertRequest",
    "CfsslConfig",
    "CfsslProfile",
    "CsrSpec",
    "ExternalCa",
    "KeyPair",
    "KeySpec",
    "ObservedPair",
    "PkiEvent",
    "PkiObserved",
    "PkiPlan",
    "PkiStep",
    "PrivateKey",
    "Profile",
    "SubjectNames",
    "apply_pki",
    "apply_profile",
    "ca_config_json",
    "ca_csr_json",
    "certinfo",
    "certinfo_json",
    "classify_host",
    "create_ca",
    "csr_json",
    "describe",
    "format_go_duration",
    "issue",
    "key_matches",
    "key_pem",
    "load_ca_config",
    "load_cert",
    "load_csr",
    "load_key",
    "needs_reissue",
    "observe_pki",
    "parse_go_duration",
    "plan_pki",
    "profile_for",
    "validity",
]
