"""Import an existing cfssl PKI in the guide's layout: the CA, its signing config and CSR templates.

Input is a set of files by name (read from a directory, or fetched from hosts by ``adopt``); the
analysis is pure. Names recognised (cfssljson ``-bare`` output and the guide's JSON, shared/seed):

    etcd-ca.pem  etcd-ca-key.pem         the CA (any ``*ca.pem`` + ``*ca-key.pem`` pair)
    peer-ca.pem  peer-ca-key.pem         optional: the peers' own CA (``*peer-ca.pem``, what
                                         ``pki export-cfssl`` names it); without one, the CA signs peers
                                         too until ``pki rotate-ca --peer``
    etcd-ca-config.json                  the signing config (``*ca-config.json``)
    etcd-ca-csr.json                     the CA's CSR (``*ca-csr.json``)
    etcd-server-csr.json …               leaf CSRs (``*-csr.json``): the key and names of new leaves
    etcd-server*.pem                     server certificates   (reported, not reused)
    etcd-member*.pem / etcd-peer*.pem    peer certificates     (reported, not reused)
    etcd-client*.pem                     client certificates   (reported, not reused)

Invariants: the CA certificate must be a CA and its key must match; the leaves are checked (chain,
key, usages, expiry) and their problems reported, but never imported: etcdforge issues one server and
one peer certificate per member from the same CA. Reading a directory is the only I/O here; writing the
result into a workspace is :func:`etcdforge.verbs.pki_import.import_steps`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509

from etcdforge.errors import PkiError
from etcdforge.pki.cfssl import CfsslConfig, CsrSpec, load_ca_config, load_csr
from etcdforge.pki.inspect import eku_names, is_ca, san_sets
from etcdforge.pki.keys import describe_key, key_matches, key_spec_of, parse_cert, parse_key
from etcdforge.pki.model import KeySpec, SubjectNames
from etcdforge.pki.observe import CA_CERT, CA_KEY
from etcdforge.pki.plan import signed_by

Role = Literal["server", "peer", "client"]
#: where the imported JSON goes, relative to the workspace (the spec's pki.cfssl paths point here)
CFSSL_SUBDIR = "pki/cfssl"
#: usages etcdforge needs per role (server certs dial themselves through the gRPC gateway)
_NEEDED: dict[Role, tuple[str, ...]] = {
    "server": ("server auth", "client auth"),
    "peer": ("server auth", "client auth"),
    "client": ("client auth",),
}
_ROLE_WORDS: tuple[tuple[str, Role], ...] = (
    ("server", "server"), ("member", "peer"), ("peer", "peer"), ("client", "client"),
)  # fmt: skip
_PREFERRED_PROFILES: dict[Role, str] = {"server": "etcd", "peer": "etcd", "client": "client"}


@dataclass(frozen=True)
class ImportedLeaf:
    """A leaf certificate found next to the CA, and what is wrong with it (for the report)."""

    file: str
    role: Role
    cn: str
    sans: tuple[str, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class CfsslImport:
    """What an import found: the CA (cert + key bytes), the JSON to copy, the spec settings it implies."""

    ca_file: str
    ca_cert_pem: bytes
    ca_key_pem: bytes
    ca_cert: x509.Certificate
    configs: Mapping[str, bytes]  # file name -> bytes, copied to pki/cfssl/
    ca_config: str | None
    ca_csr: str | None
    leaf_csr: str | None
    profiles: Mapping[Role, str]
    #: the key and names of new leaves when no leaf CSR template was found (from a leaf certificate)
    leaf_key: KeySpec | None
    leaf_subject: SubjectNames | None
    leaves: tuple[ImportedLeaf, ...]
    warnings: tuple[str, ...]
    #: the peers' own CA, when the directory has one (file name, certificate PEM, key PEM)
    peer_ca: tuple[str, bytes, bytes] | None = None

    def cfssl_settings(self) -> dict[str, str]:
        """The spec's ``pki.cfssl`` section (paths relative to the workspace)."""
        out: dict[str, str] = {}
        for key, name in (("ca_config", self.ca_config), ("ca_csr", self.ca_csr), ("csr", self.leaf_csr)):
            if name is not None:
                out[key] = f"{CFSSL_SUBDIR}/{name}"
        if self.ca_config is not None:
            for role, profile in self.profiles.items():
                out[f"{role}_profile"] = profile
        return out

    def report(self) -> list[str]:
        """Human lines: what was imported, what will be reissued, what is wrong."""
        subject = self.ca_cert.subject.rfc4514_string()
        lines = [
            f"CA: {self.ca_file} ({subject}, {describe_key(self.ca_cert.public_key())}, "
            f"valid until {self.ca_cert.not_valid_after_utc:%Y-%m-%d}) -> pki/{CA_CERT}, pki/{CA_KEY} (0600)"
        ]
        if self.peer_ca is not None:
            lines.append(f"peers' CA: {self.peer_ca[0]} -> pki/peer-ca.pem, pki/peer-ca-key.pem (0600)")
        else:
            lines.append(
                "no peers' CA: this CA keeps signing peer certificates, so its client certificates are "
                "accepted as peers; `etcdforge pki rotate-ca --peer` gives peers their own (no downtime)"
            )
        for name in sorted(self.configs):
            lines.append(f"cfssl JSON: {name} -> {CFSSL_SUBDIR}/{name}")
        if self.ca_config is not None:
            used = ", ".join(f"{role}={name}" for role, name in self.profiles.items())
            lines.append(f"profiles used: {used} (usages and expiry as cfssl applies them)")
        if self.leaf_csr is not None:
            lines.append(f"new certificates take their key type and names from {self.leaf_csr}")
        elif self.leaf_key is not None:
            lines.append(f"new certificates keep the existing leaves' key type ({self.leaf_key})")
        for leaf in self.leaves:
            state = "; ".join(leaf.problems) if leaf.problems else "valid"
            sans = ", ".join(leaf.sans) or "no SANs"
            lines.append(f"{leaf.role} certificate {leaf.file} (CN {leaf.cn}; {sans}): {state}")
        if self.leaves:
            lines.append(
                "these certificates are not reused: etcdforge issues one server and one peer certificate "
                "per member (its own addresses only) and an admin client certificate, from this CA"
            )
        return lines + [f"warning: {w}" for w in self.warnings]


def read_source_dir(directory: Path) -> dict[str, bytes]:
    """The ``*.pem`` and ``*.json`` files of ``directory`` by name (read only)."""
    if not directory.is_dir():
        raise PkiError(f"{directory} is not a directory", hint="pass the directory holding etcd-ca.pem")
    files: dict[str, bytes] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in (".pem", ".json"):
            try:
                files[path.name] = path.read_bytes()
            except OSError as exc:
                raise PkiError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return files


def analyze(files: Mapping[str, bytes], now: datetime) -> CfsslImport:
    """Recognise and validate a cfssl PKI; raise :class:`PkiError` if there is no usable CA."""
    peer_files = {n: b for n, b in files.items() if _is_peer_ca(n)}
    ca_file, ca_key_file = _find_ca({n: b for n, b in files.items() if n not in peer_files})
    ca_cert = _ca_pair(files, ca_file, ca_key_file, now)
    peer_ca = None
    peer_cert = None
    if peer_files:
        peer_file, peer_key_file = _find_ca(peer_files)
        peer_cert = _ca_pair(files, peer_file, peer_key_file, now)
        if peer_cert == ca_cert:
            raise PkiError(f"{peer_file} is {ca_file}", hint="the peers' CA must be a CA of its own")
        peer_ca = (peer_file, files[peer_file], files[peer_key_file])
    warnings: list[str] = []

    configs = {n: b for n, b in files.items() if n.endswith(".json")}
    ca_config_name = _one(configs, "ca-config.json", "signing config")
    # (the peers' CA's CSR, peer-ca-csr.json from `pki export-cfssl`, is neither the CA's nor a leaf's)
    ca_csr_name = _one({n: b for n, b in configs.items() if not _is_peer_ca(n)}, "ca-csr.json", "CA CSR")
    config: CfsslConfig | None = None
    if ca_config_name is not None:
        config = load_ca_config(configs[ca_config_name], origin=ca_config_name)
        warnings += config.warnings
    if ca_csr_name is not None:
        warnings += load_csr(configs[ca_csr_name], origin=ca_csr_name).warnings
    leaf_csr, template = _leaf_template(configs, ca_csr_name)
    if template is not None:
        warnings += template.warnings
    profiles = _profiles(config, warnings) if config is not None else {}

    leaves = tuple(
        _leaf(name, role, files, peer_cert if role == "peer" and peer_cert is not None else ca_cert, now)
        for name, role in _leaf_files(files, ca_file)
        if not _is_peer_ca(name)
    )  # fmt: skip
    leaf_key: KeySpec | None = None
    leaf_subject: SubjectNames | None = None
    if template is None:
        # no CSR template: new leaves keep the key type and names of the existing ones (server first)
        readable = [lf for lf in leaves if lf.cn != "?"]
        sample = next((lf for lf in readable if lf.role == "server"), readable[0] if readable else None)
        if sample is not None:
            cert = parse_cert(files[sample.file], origin=sample.file)
            leaf_key = key_spec_of(cert.public_key())
            leaf_subject = _subject_names(cert.subject)
    return CfsslImport(
        ca_file=ca_file,
        ca_cert_pem=files[ca_file],
        ca_key_pem=files[ca_key_file],
        ca_cert=ca_cert,
        configs=configs,
        ca_config=ca_config_name,
        ca_csr=ca_csr_name,
        leaf_csr=leaf_csr,
        profiles=profiles,
        leaf_key=leaf_key,
        leaf_subject=leaf_subject,
        leaves=leaves,
        warnings=tuple(warnings),
        peer_ca=peer_ca,
    )


# --------------------------------------------------------------------------------------------- helpers


def _is_peer_ca(name: str) -> bool:
    return name.endswith(("peer-ca.pem", "peer-ca-key.pem", "peer-ca-csr.json"))


def _ca_pair(files: Mapping[str, bytes], cert_file: str, key_file: str, now: datetime) -> x509.Certificate:
    """A CA certificate and its key, checked: a CA, the key matches, not expired."""
    cert = parse_cert(files[cert_file], origin=cert_file)
    if not is_ca(cert):
        raise PkiError(
            f"{cert_file} is not a CA certificate (no CA:TRUE)", hint="point at the CA, not a leaf"
        )
    key = parse_key(files[key_file], origin=key_file)
    if not key_matches(cert, key):
        raise PkiError(f"{key_file} is not the key of {cert_file}", hint="import the matching pair")
    if cert.not_valid_after_utc <= now:
        raise PkiError(f"{cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                       hint="a cluster cannot be secured with an expired CA; rotate it first")  # fmt: skip
    return cert


def _find_ca(files: Mapping[str, bytes]) -> tuple[str, str]:
    certs = sorted(n for n in files if n.endswith("ca.pem"))
    if not certs:
        raise PkiError("no CA certificate (etcd-ca.pem or *ca.pem) found",
                       hint="pass the directory that holds the cfssl CA, e.g. /etc/etcd/pki")  # fmt: skip
    if len(certs) > 1:
        certs = [n for n in certs if n in ("etcd-ca.pem", "ca.pem")] or certs
        if len(certs) > 1:
            raise PkiError(f"several CA certificates: {', '.join(certs)}", hint="keep one CA per directory")
    cert = certs[0]
    key = cert.removesuffix(".pem") + "-key.pem"
    if key not in files:
        raise PkiError(
            f"{cert} is there but its key {key} is not",
            hint="etcdforge signs the members' certificates with the CA key; import the directory with it",
        )
    return cert, key


def _one(configs: Mapping[str, bytes], suffix: str, what: str) -> str | None:
    found = sorted(n for n in configs if n.endswith(suffix))
    if len(found) > 1:
        raise PkiError(f"several {what} files: {', '.join(found)}", hint="keep one per directory")
    return found[0] if found else None


def _leaf_template(configs: Mapping[str, bytes], ca_csr: str | None) -> tuple[str | None, CsrSpec | None]:
    """The leaf CSR whose key and names new leaves take: the server's, else a peer's, else a client's."""
    csrs = sorted(n for n in configs if n.endswith("-csr.json") and n != ca_csr and not _is_peer_ca(n))
    for word, _ in _ROLE_WORDS:
        for name in csrs:
            if word in name:
                return name, load_csr(configs[name], origin=name)
    if csrs:
        return csrs[0], load_csr(configs[csrs[0]], origin=csrs[0])
    return None, None


def _profiles(config: CfsslConfig, warnings: list[str]) -> dict[Role, str]:
    """The profile per role: the guide's names (etcd/etcd/client) if present, else one with the usages."""
    out: dict[Role, str] = {}
    for role, preferred in _PREFERRED_PROFILES.items():
        needed = _NEEDED[role]
        if preferred in config.profiles and all(u in config.profiles[preferred].usages for u in needed):
            out[role] = preferred
            continue
        fitting = sorted(n for n, p in config.profiles.items() if all(u in p.usages for u in needed))
        if not fitting:
            raise PkiError(
                f"{config.origin}: no profile gives a {role} certificate {' + '.join(needed)}",
                hint=f'add a profile like "etcd" with usages signing, key encipherment, {", ".join(needed)}',
            )
        out[role] = fitting[0]
        warnings.append(f"{config.origin}: using profile {fitting[0]!r} for {role} certificates")
    return out


def _leaf_files(files: Mapping[str, bytes], ca_file: str) -> list[tuple[str, Role]]:
    out: list[tuple[str, Role]] = []
    for name in sorted(files):
        if (
            not name.endswith(".pem")
            or name.endswith("-key.pem")
            or name == ca_file
            or "ca" in name.split("-")
        ):
            continue
        role = next((r for word, r in _ROLE_WORDS if word in name), None)
        if role is not None:
            out.append((name, role))
    return out


def _leaf(
    name: str, role: Role, files: Mapping[str, bytes], ca: x509.Certificate, now: datetime
) -> ImportedLeaf:
    try:
        cert = parse_cert(files[name], origin=name)
    except PkiError as exc:
        return ImportedLeaf(name, role, "?", (), (exc.message,))
    problems: list[str] = []
    if not signed_by(cert, ca):
        problems.append("not signed by this CA")
    key_name = name.removesuffix(".pem") + "-key.pem"
    if key_name in files:
        try:
            if not key_matches(cert, parse_key(files[key_name], origin=key_name)):
                problems.append(f"{key_name} does not match it")
        except PkiError as exc:
            problems.append(exc.message)
    ekus = eku_names(cert)
    missing = [u for u in _NEEDED[role] if u not in ekus]
    if missing:
        why = " (etcd's gRPC gateway dials itself with it: 'tls: bad certificate')"
        why = why if role == "server" else ""
        problems.append(f"lacks {', '.join(missing)}{why}")
    if cert.not_valid_after_utc <= now:
        problems.append(f"expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    dns, ips = san_sets(cert)
    if role != "client" and not (dns or ips):
        problems.append("no SANs: clients and peers cannot verify it")
    cn_attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(cn_attrs[0].value) if cn_attrs else ""
    return ImportedLeaf(name, role, cn, (*sorted(dns), *sorted(ips)), tuple(problems))


def _subject_names(name: x509.Name) -> SubjectNames:
    def first(oid: x509.ObjectIdentifier) -> str | None:
        attrs = name.get_attributes_for_oid(oid)
        return str(attrs[0].value) if attrs else None

    oid = x509.NameOID
    return SubjectNames(
        C=first(oid.COUNTRY_NAME),
        ST=first(oid.STATE_OR_PROVINCE_NAME),
        L=first(oid.LOCALITY_NAME),
        O=first(oid.ORGANIZATION_NAME),
        OU=first(oid.ORGANIZATIONAL_UNIT_NAME),
    )
