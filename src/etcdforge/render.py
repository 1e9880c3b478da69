"""Pure rendering: (spec, member, paths) -> file contents as bytes.

Three artefacts per member: etcd's YAML config file, a systemd unit, and an etcdctl environment file.
Nothing here writes files; the callers decide where the bytes go (local workspace or a remote host).

etcd config-file traps this module avoids (etcd-facts §5):
- with ``--config-file`` every other flag and ``ETCD_*`` variable is ignored, so *everything* is in the
  file and the unit passes nothing else;
- TLS settings nest under ``client-transport-security``/``peer-transport-security`` with un-prefixed keys
  (``peer-cert-file`` at the top level is silently ignored);
- URL lists are comma-separated strings; ``log-outputs`` is a list;
- 3.4 turns the gRPC gateway *off* by default when a config file is used, so it is set explicitly;
- ``strict-reconfig-check`` is set explicitly to true (the sample file sets it to false).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from etcdforge import topology
from etcdforge.spec import ClusterSpec, MemberSpec
from etcdforge.yamlio import dump_yaml

ClusterState = Literal["new", "existing"]


@dataclass(frozen=True)
class MemberPaths:
    """Where a member's files live on the machine that runs it."""

    config: str
    data_dir: str
    ca_cert: str
    server_cert: str
    server_key: str
    peer_cert: str
    peer_key: str
    #: the CA(s) the peer listener trusts: the peers' own CA, so no client or server certificate is a peer
    peer_ca_cert: str


@dataclass(frozen=True)
class ClientPaths:
    ca_cert: str
    cert: str
    key: str


#: keys etcd reads only when a member starts with an empty data dir
INITIAL_KEYS = (
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "initial-advertise-peer-urls",
)


def etcd_config(
    spec: ClusterSpec,
    member: MemberSpec,
    paths: MemberPaths,
    *,
    state: ClusterState | None = None,
    initial_members: Sequence[MemberSpec] | None = None,
    for_version: tuple[int, int, int] | None = None,
) -> bytes:
    """The member's etcd YAML config file.

    ``initial_members`` is the membership the member is started into: all members for a new cluster;
    for a member joining an existing cluster (``joined``), the current members plus itself — which is
    the spec's member list once the spec records the new member. ``state`` defaults to ``existing`` for
    a joined member and ``new`` otherwise.
    """
    if state is None:
        state = "existing" if member.joined else "new"
    e = spec.etcd
    config: dict[str, object] = {
        "name": member.name,
        "data-dir": paths.data_dir,
        "listen-client-urls": ",".join(topology.listen_client_urls(spec, member)),
        "advertise-client-urls": topology.client_url(spec, member),
        "listen-peer-urls": topology.peer_url(spec, member),
        "initial-advertise-peer-urls": topology.peer_url(spec, member),
        "initial-cluster": topology.initial_cluster(spec, initial_members),
        "initial-cluster-token": spec.token,
        "initial-cluster-state": state,
        "heartbeat-interval": e.heartbeat_interval_ms,
        "election-timeout": e.election_timeout_ms,
    }
    metrics = topology.metrics_url(spec, member)
    if metrics is not None:
        config["listen-metrics-urls"] = metrics
    if e.initial_corrupt_check:
        config["experimental-initial-corrupt-check"] = True
    if e.snapshot_count is not None:
        config["snapshot-count"] = e.snapshot_count
    if e.quota_backend_bytes:
        config["quota-backend-bytes"] = e.quota_backend_bytes
    if e.max_request_bytes is not None:
        config["max-request-bytes"] = e.max_request_bytes
    config.update(
        {
            "auto-compaction-mode": e.auto_compaction_mode,
            "auto-compaction-retention": e.auto_compaction_retention,
            "strict-reconfig-check": True,
            "enable-v2": False,
            "enable-grpc-gateway": True,
            "logger": "zap",
            "log-level": "info",
            "log-outputs": ["stderr"],
            "client-transport-security": {
                "cert-file": paths.server_cert,
                "key-file": paths.server_key,
                "trusted-ca-file": paths.ca_cert,
                "client-cert-auth": True,
            },
            "peer-transport-security": {
                "cert-file": paths.peer_cert,
                "key-file": paths.peer_key,
                "trusted-ca-file": paths.peer_ca_cert,
                "client-cert-auth": True,
            },
        }
    )
    if e.tls.cipher_suites:
        config["cipher-suites"] = list(e.tls.cipher_suites)  # a top-level list (not under *-security)
    if e.tls.min_version is not None:
        config["tls-min-version"] = e.tls.min_version
    if e.auth_token is not None:
        config["auth-token"] = e.auth_token
    if for_version is None and e.version:
        from etcdforge.versions import parse

        for_version = parse(e.version)
    if for_version is not None:  # settings that release removed are left out (translated away)
        from etcdforge.versions import removed_settings

        for name in removed_settings(for_version):
            config.pop(name, None)
    header = (
        f"# etcd member {member.name} of cluster {spec.name}. "
        "Generated by etcdforge; edit cluster.yaml instead.\n"
    )
    return (header + dump_yaml(config)).encode()


def differs_only_in_initial_keys(old: bytes, new: bytes) -> bool:
    """True if two rendered configs differ only in keys etcd ignores once the member has data.

    Membership changes alter every member's ``initial-cluster``; that must not restart running members.
    """
    import yaml

    try:
        a, b = yaml.safe_load(old), yaml.safe_load(new)
    except yaml.YAMLError:
        return False
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    return {k: v for k, v in a.items() if k not in INITIAL_KEYS} == {
        k: v for k, v in b.items() if k not in INITIAL_KEYS
    }


def systemd_quote(arg: str) -> str:
    """One ExecStart argument as systemd reads it (systemd.service "Command lines", systemd.unit
    "Specifiers"): ``%`` is a specifier and ``$`` a variable, so both are doubled; backslashes and
    double quotes are escaped and the argument is double-quoted when it has white space or quotes. A
    control character (a newline would start a new directive, e.g. ``User=root``) is refused: the spec
    never lets one through, this is the second line of defence."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in arg):
        raise ValueError(f"{arg!r}: a control character cannot be put into a systemd unit")
    if arg == ";":
        return "\\;"  # a lone semicolon separates commands
    out = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{out}"' if not out or any(c in out for c in " \t'\"") else out


def systemd_unit(spec: ClusterSpec, member: MemberSpec, *, etcd_binary: str, config_path: str) -> bytes:
    """The guide's unit, corrected.

    ``Type=notify``: etcd sends READY=1 only after the member has joined a quorum, so a blocking start of
    the first member would wait for the others: ``TimeoutStartSec=infinity`` keeps systemd from killing it
    (members are started together with ``--no-block``). ``Restart=on-failure`` rather than ``always``: a
    member removed from the cluster exits cleanly and must not be restarted in a loop.
    """
    argv = " ".join(systemd_quote(a) for a in (etcd_binary, "--config-file", config_path))
    return (
        "# Generated by etcdforge; edit cluster.yaml instead.\n"
        "[Unit]\n"
        f"Description=etcd member {member.name} of cluster {spec.name}\n"
        "Documentation=https://etcd.io/docs/\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        "User=etcd\n"
        "Group=etcd\n"
        f"ExecStart={argv}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "TimeoutStartSec=infinity\n"
        "LimitNOFILE=65536\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    ).encode()


#: the members' scheduled backup (``backup.on_members``): POSIX sh and coreutils only. Arguments: the
#: member's client URL, CA, client certificate and key, the backup dir, how many to keep, and the dir of
#: etcdctl/etcdutl. It saves a snapshot to ``.NAME.part``, checks etcd's SHA-256 trailer (the last 32
#: bytes hash everything before them) and ``snapshot status``, renames it, keeps the newest KEEP, and
#: records the outcome in ``last-run.json`` (atomically) whatever happens.
MEMBER_BACKUP_SCRIPT = """\
#!/bin/sh
# Generated by etcdforge; edit cluster.yaml (backup.on_members) instead.
set -u
umask 077
endpoint=$1 cacert=$2 cert=$3 key=$4 dir=$5 keep=$6 tools=$7
ts=$(date -u +%Y%m%dT%H%M%SZ)
part="$dir/.$ts.db.part" final="$dir/$ts.db" err="$dir/.last-error"
record() {
  printf '{"time": "%s", "ok": %s, "file": %s, "detail": %s}\\n' "$ts" "$1" "$2" "$3" \\
    > "$dir/.last-run.tmp" &&
    mv -f -- "$dir/.last-run.tmp" "$dir/last-run.json"
}
fail() {
  msg=$(printf '%s' "$1" | tr -d '"\\\\' | tr '\\n' ' ')
  record false '""' "\\"$msg\\""
  echo "etcdforge backup failed: $1" >&2
  rm -f -- "$part"
  exit 1
}
[ -d "$dir" ] || fail "no backup dir $dir"
ctl() {
  limit=$1
  shift
  ETCDCTL_API=3 timeout "$limit" "$tools/etcdctl" --endpoints="$endpoint" --cacert="$cacert" --cert="$cert" \\
    --key="$key" --dial-timeout=10s "$@"
}
# a member that does not answer a linearizable read is not backed up (and the run ends at once)
ctl 60 --command-timeout=30s endpoint health >/dev/null 2>"$err" ||
  fail "the member is not healthy: $(tail -n 1 "$err")"
ctl 3600 snapshot save "$part" >/dev/null 2>"$err" || fail "snapshot save: $(tail -n 1 "$err")"
size=$(stat -c %s -- "$part") || fail "no snapshot file"
[ "$size" -gt 32 ] || fail "the snapshot is $size bytes"
want=$(tail -c 32 -- "$part" | od -An -v -tx1 | tr -d ' \\n')
have=$(head -c $((size - 32)) -- "$part" | sha256sum | cut -d ' ' -f 1)
[ "$want" = "$have" ] || fail "the snapshot's SHA-256 trailer does not match its contents"
if [ -x "$tools/etcdutl" ]; then
  status=$("$tools/etcdutl" snapshot status "$part" -w json 2>"$err") ||
    fail "snapshot status: $(tail -n 1 "$err")"
else
  status=$(ETCDCTL_API=3 "$tools/etcdctl" snapshot status "$part" -w json 2>"$err") ||
    fail "snapshot status: $(tail -n 1 "$err")"
fi
sync -- "$part" && mv -- "$part" "$final" || fail "cannot keep $final"
ls -1 -- "$dir" | grep -E '^[0-9]{8}T[0-9]{6}Z\\.db$' | sort -r | tail -n +$((keep + 1)) |
  while read -r old; do rm -f -- "$dir/$old"; done
rm -f -- "$err"
record true "\\"$final\\"" "$status"
"""


def member_backup_service(
    spec: ClusterSpec, member: MemberSpec, *, script: str, tools: str, cert: str, key: str, ca: str
) -> bytes:
    """A oneshot unit running the member's backup script against its own client URL."""
    assert spec.backup.on_members is not None
    s = spec.backup.on_members
    argv = (script, topology.client_url(spec, member), ca, cert, key, s.dir, str(s.keep), tools)
    return (
        "# Generated by etcdforge; edit cluster.yaml (backup.on_members) instead.\n"
        "[Unit]\n"
        f"Description=etcdforge backup of etcd member {member.name} (cluster {spec.name})\n"
        "After=etcd.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={' '.join(systemd_quote(a) for a in argv)}\n"
        "TimeoutStartSec=2h\n"
        "Nice=10\n"
        "IOSchedulingClass=idle\n"
        "UMask=0077\n"
    ).encode()


def member_backup_timer(spec: ClusterSpec) -> bytes:
    assert spec.backup.on_members is not None
    every = spec.backup.on_members.every
    return (
        "# Generated by etcdforge; edit cluster.yaml (backup.on_members) instead.\n"
        "[Unit]\n"
        f"Description=etcdforge backup of this etcd member, every {every}\n"
        "\n"
        "[Timer]\n"
        "OnBootSec=10min\n"
        f"OnUnitActiveSec={every}\n"
        "RandomizedDelaySec=120\n"
        "Persistent=true\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    ).encode()


def etcdctl_env(endpoints: Sequence[str], client: ClientPaths) -> bytes:
    """Shell exports so that ``eval "$(etcdforge env)"`` makes plain etcdctl work (the guide's ~/.bashrc)."""
    values = [
        ("ETCDCTL_API", "3"),
        ("ETCDCTL_CACERT", client.ca_cert),
        ("ETCDCTL_CERT", client.cert),
        ("ETCDCTL_KEY", client.key),
        ("ETCDCTL_ENDPOINTS", ",".join(endpoints)),
    ]
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values).encode()


def etcdctl_tls_args(endpoints: Sequence[str], client: ClientPaths) -> list[str]:
    """etcdctl flags equivalent to :func:`etcdctl_env` (for ``etcdforge ctl``)."""
    return [
        f"--endpoints={','.join(endpoints)}",
        f"--cacert={client.ca_cert}",
        f"--cert={client.cert}",
        f"--key={client.key}",
    ]
