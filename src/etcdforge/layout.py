"""Where a member's files live on a real host, and what their content must be (pure).

Layout on each host::

    /etc/etcd/etcd.conf.yml            config (root:root 0644; no secrets in it)
    /etc/etcd/pki/ca.pem               the CA certificate (never the CA key): clients and the client port
    /etc/etcd/pki/peer-ca.pem          the peers' CA certificate: all the peer port trusts
    /etc/etcd/pki/{server,peer}.pem    this member's certificates (root:etcd 0644)
    /etc/etcd/pki/{server,peer}-key.pem  this member's keys (etcd:etcd 0600)
    /etc/systemd/system/etcd.service   the unit (overrides a distribution's etcd.service)
    /var/lib/etcd                      data dir (etcd:etcd 0700), never wiped
    /usr/local/bin/etcd{,ctl,utl}      binaries when uploaded or downloaded
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from etcdforge import render, topology
from etcdforge.certs import BACKUP_CLIENT
from etcdforge.plan import PutFile
from etcdforge.render import ClusterState, MemberPaths
from etcdforge.spec import DEFAULT_DATA_DIR, ClusterSpec, MemberSpec

ETC_DIR = "/etc/etcd"
PKI_DIR = "/etc/etcd/pki"
CONFIG = "/etc/etcd/etcd.conf.yml"
UNIT = "/etc/systemd/system/etcd.service"
UNIT_NAME = "etcd.service"
#: what `systemctl enable` creates for our unit (WantedBy=multi-user.target). Made directly: on Debian,
#: `systemctl enable etcd` also runs update-rc.d for the package's SysV script (~0.4 s of Perl per host),
#: which a systemd host never uses.
WANTS_DIR = "/etc/systemd/system/multi-user.target.wants"
WANTS_LINK = f"{WANTS_DIR}/{UNIT_NAME}"
DEFAULT_SYSTEM_BINARY = "/usr/bin/etcd"
ETCD_USER = "etcd"
#: the members' scheduled backups (``backup.on_members``)
BACKUP_LIB_DIR = "/usr/local/lib/etcdforge"
BACKUP_SCRIPT = f"{BACKUP_LIB_DIR}/etcd-backup"
BACKUP_SERVICE = "/etc/systemd/system/etcdforge-backup.service"
BACKUP_TIMER_NAME = "etcdforge-backup.timer"
BACKUP_TIMER = f"/etc/systemd/system/{BACKUP_TIMER_NAME}"
BACKUP_CERT = f"{PKI_DIR}/backup-client.pem"
BACKUP_KEY = f"{PKI_DIR}/backup-client-key.pem"
#: files that must not be on a member: CA private keys, which hand-built clusters (the guide's
#: ``etcd-ca-key.pem``, copied to every node) leave there. Shell globs, expanded on the host; the planner
#: deletes a match only when it is byte-identical to the control machine's CA key (so a copy is kept).
STRAY_PATTERNS = (f"{PKI_DIR}/*ca-key*.pem", f"{ETC_DIR}/*ca-key*.pem")


def data_dir(spec: ClusterSpec) -> str:
    return spec.etcd.data_dir or DEFAULT_DATA_DIR


def guarded_dirs(spec: ClusterSpec) -> tuple[str, ...]:
    """Directories judged on each host before anything changes (hostpaths.host_path_problems): the data
    dir, our config and certificate dirs and, when etcdforge installs binaries, the install dir."""
    dirs = (data_dir(spec), ETC_DIR, PKI_DIR)
    return (*dirs, spec.etcd.install_dir) if spec.etcd.source != "system" else dirs


def member_paths(spec: ClusterSpec) -> MemberPaths:
    return MemberPaths(
        config=CONFIG,
        data_dir=data_dir(spec),
        ca_cert=f"{PKI_DIR}/ca.pem",
        server_cert=f"{PKI_DIR}/server.pem",
        server_key=f"{PKI_DIR}/server-key.pem",
        peer_cert=f"{PKI_DIR}/peer.pem",
        peer_key=f"{PKI_DIR}/peer-key.pem",
        peer_ca_cert=f"{PKI_DIR}/peer-ca.pem",
    )


def managed_paths(spec: ClusterSpec) -> tuple[str, ...]:
    """Every file etcdforge manages on a host (the same paths on every member)."""
    p = member_paths(spec)
    backups = (
        (BACKUP_CERT, BACKUP_KEY, BACKUP_SCRIPT, BACKUP_SERVICE, BACKUP_TIMER)
        if spec.backup.on_members is not None
        else ()
    )
    return (
        p.ca_cert, p.server_cert, p.server_key, p.peer_cert, p.peer_key, p.peer_ca_cert, CONFIG, UNIT,
        *backups,
    )  # fmt: skip


def backup_pki(spec: ClusterSpec) -> dict[str, str]:
    """Control-PKI file name -> destination of the members' backup client (none when not scheduled)."""
    if spec.backup.on_members is None:
        return {}
    stem = topology.client_cert_name(BACKUP_CLIENT)
    return {f"{stem}.pem": BACKUP_CERT, f"{stem}-key.pem": BACKUP_KEY}


def unit_argv(spec: ClusterSpec) -> tuple[str, ...]:
    """The argv our unit's ExecStart runs (:func:`render.systemd_unit`); a running etcd with another argv
    was started by something else, e.g. a hand-written unit with flags."""
    return (binary_path(spec), "--config-file", CONFIG)


def binary_path(spec: ClusterSpec) -> str:
    """The etcd binary the unit runs on the hosts."""
    if spec.etcd.source == "system":
        return spec.etcd.binary or DEFAULT_SYSTEM_BINARY
    return f"{spec.etcd.install_dir.rstrip('/')}/etcd"


@dataclass(frozen=True)
class DesiredFile:
    path: str
    content: bytes
    mode: int
    owner: str
    group: str
    secret: bool
    #: what a change of this file needs from a running member
    #: "restart" (read at start) | "reload" (systemd unit) | "none" (hot-reloaded certificate, a script) |
    #: "backup" (the scheduled backup's units: a daemon-reload and the timer restarted, etcd untouched)
    effect: str

    def put(self, host: str, *, source: str | None = None, diff: str = "") -> PutFile:
        """The action writing this file on ``host``; with ``source`` its bytes are a deferred value
        (that workspace file, read when the step runs)."""
        content = b"" if source else self.content
        return PutFile(host, self.path, content, self.mode, self.owner, self.group, self.secret, diff, source)


def desired_files(
    spec: ClusterSpec,
    member: MemberSpec,
    pki: Mapping[str, bytes],
    *,
    state: ClusterState | None = None,
    initial_members: tuple[MemberSpec, ...] | None = None,
) -> tuple[DesiredFile, ...]:
    """Every managed file of ``member`` with its content.

    ``pki`` maps the control PKI's file names (``ca.pem``, ``etcd1-server.pem``, ``etcd1-server-key.pem``…)
    to bytes. etcd reloads its own certificate and key on each new handshake, so a renewed leaf needs no
    restart; the trusted CA is read only at start, so a CA change does.
    """
    paths = member_paths(spec)
    server = topology.server_cert_name(member.name)
    peer = topology.peer_cert_name(member.name)
    return (
        *_member_files(spec, member, pki, paths, server, peer, state, initial_members),
        *_backup_files(spec, member, pki),
    )


def _backup_files(spec: ClusterSpec, member: MemberSpec, pki: Mapping[str, bytes]) -> tuple[DesiredFile, ...]:
    """The members' scheduled backup: its client certificate, script, service and timer."""
    if spec.backup.on_members is None:
        return ()
    stem = topology.client_cert_name(BACKUP_CLIENT)
    tools = binary_path(spec).rsplit("/", 1)[0] or "/"
    service = render.member_backup_service(
        spec, member, script=BACKUP_SCRIPT, tools=tools, cert=BACKUP_CERT, key=BACKUP_KEY,
        ca=member_paths(spec).ca_cert,
    )  # fmt: skip
    return (
        DesiredFile(BACKUP_CERT, pki.get(f"{stem}.pem", b""), 0o644, "root", "root", False, "none"),
        DesiredFile(BACKUP_KEY, pki.get(f"{stem}-key.pem", b""), 0o600, "root", "root", True, "none"),
        DesiredFile(
            BACKUP_SCRIPT, render.MEMBER_BACKUP_SCRIPT.encode(), 0o755, "root", "root", False, "none"
        ),
        DesiredFile(BACKUP_SERVICE, service, 0o644, "root", "root", False, "backup"),
        DesiredFile(BACKUP_TIMER, render.member_backup_timer(spec), 0o644, "root", "root", False, "backup"),
    )


def _member_files(
    spec: ClusterSpec,
    member: MemberSpec,
    pki: Mapping[str, bytes],
    paths: MemberPaths,
    server: str,
    peer: str,
    state: ClusterState | None,
    initial_members: tuple[MemberSpec, ...] | None,
) -> tuple[DesiredFile, ...]:
    u = ETCD_USER
    return (
        DesiredFile(paths.ca_cert, pki["ca.pem"], 0o644, "root", "root", False, "restart"),
        DesiredFile(paths.server_cert, pki[f"{server}.pem"], 0o644, "root", u, False, "none"),
        DesiredFile(paths.server_key, pki[f"{server}-key.pem"], 0o600, u, u, True, "none"),
        DesiredFile(paths.peer_cert, pki[f"{peer}.pem"], 0o644, "root", u, False, "none"),
        DesiredFile(paths.peer_key, pki[f"{peer}-key.pem"], 0o600, u, u, True, "none"),
        DesiredFile(paths.peer_ca_cert, pki["peer-ca.pem"], 0o644, "root", "root", False, "restart"),
        DesiredFile(
            CONFIG,
            render.etcd_config(spec, member, paths, state=state, initial_members=initial_members),
            0o644,
            "root",
            "root",
            False,
            "restart",
        ),
        DesiredFile(
            UNIT,
            render.systemd_unit(spec, member, etcd_binary=binary_path(spec), config_path=CONFIG),
            0o644,
            "root",
            "root",
            False,
            "reload",
        ),
    )


def pki_destinations(spec: ClusterSpec, member: str) -> dict[str, str]:
    """Control-PKI file name -> where that file goes on the member's host."""
    p = member_paths(spec)
    dests = (p.ca_cert, p.server_cert, p.server_key, p.peer_cert, p.peer_key, p.peer_ca_cert)
    return dict(zip(pki_names(member), dests, strict=True))


def pki_names(member: str) -> tuple[str, ...]:
    """Control-PKI file names a member's files are made from (no CA key among them). ``ca.pem`` and
    ``peer-ca.pem`` stand for what clients and peers trust (:meth:`Workspace.trusted_source`)."""
    server = topology.server_cert_name(member)
    peer = topology.peer_cert_name(member)
    return (
        "ca.pem", f"{server}.pem", f"{server}-key.pem", f"{peer}.pem", f"{peer}-key.pem", "peer-ca.pem"
    )  # fmt: skip
