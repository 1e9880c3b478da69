"""Pure mapping from a spec to the PKI's inputs: the CA settings and one request per certificate.

Per member a server and a peer certificate (SANs from :func:`topology.member_sans`); per client name a
client certificate. When the user brings a cfssl ``ca-config.json``, the usages and expiry of its
profiles (``etcd``/``client`` by default, as in the guide) replace ours, exactly as ``cfssl gencert
-profile=…`` would apply them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from etcdforge import topology
from etcdforge.pki import (
    CaSettings,
    CertRequest,
    CsrSpec,
    ExternalCa,
    KeySpec,
    SubjectNames,
    load_ca_config,
    load_csr,
)
from etcdforge.spec import ClusterSpec, expiry


def _leaf_template(spec: ClusterSpec, base_dir: Path | None) -> CsrSpec | None:
    cfssl = spec.pki.cfssl
    if cfssl is None or cfssl.csr is None:
        return None
    return load_csr(_resolve(cfssl.csr, base_dir))


def subject(spec: ClusterSpec, base_dir: Path | None = None) -> SubjectNames:
    """Leaf subject names: a cfssl CSR template's ``names`` if the spec names one, else the spec's."""
    template = _leaf_template(spec, base_dir)
    if template is not None:
        return template.subject
    s = spec.pki.subject
    return SubjectNames(C=s.C, ST=s.ST, L=s.L, O=s.O, OU=s.OU)


def key_spec(spec: ClusterSpec, base_dir: Path | None = None) -> KeySpec:
    template = _leaf_template(spec, base_dir)
    if template is not None:
        return template.key
    return KeySpec(algo=spec.pki.key.algo, size=spec.pki.key.size)


def ca_settings(spec: ClusterSpec, *, base_dir: Path | None = None) -> CaSettings:
    """The CA to create: from a cfssl CA CSR JSON (as `cfssl gencert -initca` reads it), else the spec."""
    cfssl = spec.pki.cfssl
    if cfssl is not None and cfssl.ca_csr is not None:
        return load_csr(_resolve(cfssl.ca_csr, base_dir)).to_ca_settings()
    s = spec.pki.subject
    return CaSettings(
        cn=spec.pki.ca_cn,
        subject=SubjectNames(C=s.C, ST=s.ST, L=s.L, O=s.O, OU=s.OU),
        key=KeySpec(algo=spec.pki.key.algo, size=spec.pki.key.size),
        expiry=expiry(spec.pki.ca_expiry),
    )


def peer_ca_settings(ca: CaSettings) -> CaSettings:
    """The peers' CA: the CA's settings under its own name (a CA of its own, made once)."""
    return replace(ca, cn=f"{ca.cn} (peers)")


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return base_dir / p if base_dir is not None and not p.is_absolute() else p


def external_ca(spec: ClusterSpec, *, base_dir: Path | None = None) -> ExternalCa | None:
    """The user's own CA (e.g. cfssl's etcd-ca.pem/etcd-ca-key.pem), or None to use the workspace's."""
    ca = spec.pki.ca
    if ca is None:
        return None
    return ExternalCa(cert_path=_resolve(ca.cert, base_dir), key_path=_resolve(ca.key, base_dir))


#: the client certificate the members' scheduled backups use (``backup.on_members``)
BACKUP_CLIENT = "etcdforge-backup"


def client_names(spec: ClusterSpec) -> tuple[str, ...]:
    """The client certificates to issue: ``pki.clients``, the applications' (``clients``), and the
    members' backup client when backups are scheduled on them."""
    names = list(spec.pki.clients)
    names += [c.name for c in spec.clients if c.name not in names]
    if spec.backup.on_members is not None and BACKUP_CLIENT not in names:
        names.append(BACKUP_CLIENT)
    return tuple(names)


def cert_requests(spec: ClusterSpec, *, base_dir: Path | None = None) -> tuple[CertRequest, ...]:
    """Every certificate the cluster needs, in a stable order (members first, then clients)."""
    profiles: dict[str, tuple[tuple[str, ...] | None, object]] = {}
    cfssl = spec.pki.cfssl
    if cfssl is not None and cfssl.ca_config is not None:
        config = load_ca_config(_resolve(cfssl.ca_config, base_dir))
        for role, name in (
            ("server", cfssl.server_profile),
            ("peer", cfssl.peer_profile),
            ("client", cfssl.client_profile),
        ):
            profile = config.profile(name)
            profiles[role] = (tuple(profile.usages), profile.expiry)

    def usages_and_expiry(role: str) -> tuple[tuple[str, ...] | None, object]:
        return profiles.get(role, (None, expiry(spec.pki.cert_expiry)))

    out: list[CertRequest] = []
    subj = subject(spec, base_dir)
    key = key_spec(spec, base_dir)
    for member in spec.members:
        sans = topology.member_sans(member)
        for role, stem in (
            ("server", topology.server_cert_name(member.name)),
            ("peer", topology.peer_cert_name(member.name)),
        ):
            usages, life = usages_and_expiry(role)
            out.append(
                CertRequest(
                    name=stem,
                    cn=member.name,
                    profile=role,  # type: ignore[arg-type]
                    ip_sans=sans.ips,
                    dns_sans=sans.dns,
                    key=key,
                    expiry=life,  # type: ignore[arg-type]
                    subject=subj,
                    usages=usages,
                )
            )
    for client in client_names(spec):
        usages, life = usages_and_expiry("client")
        own = spec.client(client)
        if own is not None and own.expiry is not None:
            life = expiry(own.expiry)
        out.append(
            CertRequest(
                name=topology.client_cert_name(client),
                cn=client,
                profile="client",
                ip_sans=(),
                dns_sans=(),
                key=key,
                expiry=life,  # type: ignore[arg-type]
                subject=subj,
                usages=usages,
            )
        )
    return tuple(out)
