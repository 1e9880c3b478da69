"""Doctor's rules: each looks at one part of :class:`DoctorFacts` and returns findings (none when fine or
when what it needs is unknown)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from etcdforge import exposition, topology
from etcdforge.diagnosis import logs
from etcdforge.diagnosis.facts import DoctorFacts
from etcdforge.diagnosis.findings import Finding, Thresholds

Rule = Callable[[DoctorFacts, Thresholds], list[Finding]]

#: settings every member has its own value for (addresses, paths, bootstrap-only keys)
PER_MEMBER_KEYS = frozenset({
    "name", "data-dir", "wal-dir", "listen-client-urls", "advertise-client-urls", "listen-peer-urls",
    "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "listen-metrics-urls",
})  # fmt: skip
#: keys of the *-transport-security sections that are per-member file paths
PER_MEMBER_TLS_KEYS = frozenset({"cert-file", "key-file", "trusted-ca-file"})
URL_KEYS = ("listen-client-urls", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls")


def _cmd(facts: DoctorFacts, verb: str) -> str:
    return f"etcdforge {verb}{facts.dir_arg}"


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in PER_MEMBER_KEYS:
            continue
        if isinstance(value, Mapping) and key.endswith("transport-security"):
            for sub, v in value.items():
                if sub not in PER_MEMBER_TLS_KEYS:
                    out[f"{key}.{sub}"] = v
            continue
        out[key] = value
    return out


def _show(value: object) -> str:
    return "(unset)" if value is None else str(value)


# --- certificates ---------------------------------------------------------------------------------------


def certificates(facts: DoctorFacts, t: Thresholds) -> list[Finding]:
    out = []
    for f in facts.pki:
        if f.severity == "ok":
            continue
        fix = {
            "expiry": _cmd(facts, "pki renew"),
            "sans": _cmd(facts, "pki renew"),
            "usages": _cmd(facts, "pki renew"),
            "chain": _cmd(facts, "pki renew"),
            "revoked": f"{_cmd(facts, 'pki check')} names the file; delete it",
            "peer-trust": _cmd(facts, "pki rotate-ca --peer"),
        }.get(
            f.check,
            f"{_cmd(facts, 'pki check')} shows the details; {facts.reconfigure} rewrites members' files",
        )
        out.append(
            Finding(
                f"certificates.{f.check}",
                "problem" if f.severity == "broken" else "warning",
                f.subject,
                f.message,
                f"pki check: {f.subject} {f.check}",
                fix,
            )
        )
    for name, why in facts.peer_capable:
        out.append(
            Finding(
                "certificates.peer-capable",
                "warning",
                name,
                f"{name} is accepted by the members' peer listeners",
                why,
                f"{_cmd(facts, 'pki rotate-ca --peer')} gives peers their own CA (no downtime), so that no "
                "client certificate is ever a peer",
            )
        )
    out += _peer_sources(facts)
    return out


def _peer_sources(facts: DoctorFacts) -> list[Finding]:
    """A member's peer certificate must list the address its peer traffic leaves from: etcd checks a
    client certificate's IP SANs against the connection's source address."""
    from cryptography import x509

    out = []
    for m in facts.members:
        if m.peer_cert is None:
            continue
        try:
            cert = x509.load_pem_x509_certificate(m.peer_cert)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            continue
        ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        if not ips and not sans.get_values_for_type(x509.DNSName):
            continue  # no SANs at all: etcd skips the check (and the certificate rules say so)
        member = facts.spec.member(m.name) if m.name in {x.name for x in facts.spec.members} else None
        if member is None:
            continue
        sources = set(m.host.peer_sources.values()) if m.host is not None and m.host.peer_sources else set()
        if not sources:
            loopback = ipaddress.ip_address(member.address).is_loopback
            sources = {"127.0.0.1"} if loopback and not facts.spec.on_own_hosts else {member.address}
        missing = sorted(sources - ips)
        if missing:
            out.append(
                Finding(
                    "certificates.peer-source",
                    "problem",
                    m.name,
                    f"{m.name}'s peer certificate does not list {', '.join(missing)}, the address its peer "
                    "traffic comes from: the other members refuse its connections",
                    f"IP SANs: {', '.join(sorted(ips)) or 'none'}",
                    _cmd(facts, "pki renew --force"),
                )
            )
    return out


# --- configuration --------------------------------------------------------------------------------------


def configuration(facts: DoctorFacts, t: Thresholds) -> list[Finding]:
    out = []
    configs = {m.name: m.config for m in facts.members if m.config is not None}
    flat = {name: _comparable(c) for name, c in configs.items()}
    keys = sorted({k for c in flat.values() for k in c})
    for key in keys:
        values = {name: c.get(key) for name, c in flat.items()}
        if len({repr(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{n}: {_show(v)}" for n, v in values.items())
            out.append(
                Finding(
                    "configuration.differs",
                    "problem",
                    "cluster",
                    f"the members differ in {key}",
                    shown,
                    f"{facts.reconfigure} renders the spec's value on every member",
                )
            )
    for m in facts.members:
        if m.config_error:
            out.append(
                Finding("configuration.unreadable", "warning", m.name, m.config_error, "", facts.reconfigure)
            )
        if m.config is None:
            continue
        c = m.config
        if c.get("strict-reconfig-check") is False:
            out.append(
                Finding(
                    "configuration.strict-reconfig-check",
                    "warning",
                    m.name,
                    "strict-reconfig-check is off: a membership change that loses quorum is accepted",
                    "strict-reconfig-check: false",
                    facts.reconfigure,
                )
            )
        gates = str(c.get("feature-gates", ""))
        if not c.get("experimental-initial-corrupt-check") and "InitialCorruptCheck=true" not in gates:
            out.append(
                Finding(
                    "configuration.corrupt-check",
                    "warning",
                    m.name,
                    "no corruption check: a member whose data differs from its peers' starts anyway",
                    "experimental-initial-corrupt-check is not set",
                    f"etcd.initial_corrupt_check: true in cluster.yaml, then {facts.reconfigure}",
                )
            )
        plain = [
            f"{k}: {u}" for k in URL_KEYS for u in str(c.get(k, "")).split(",") if u.startswith("http://")
        ]
        metrics = [u for u in str(c.get("listen-metrics-urls", "")).split(",") if u.startswith("http://")]
        plain += [f"listen-metrics-urls: {u}" for u in metrics if not _loopback_url(u)]
        if plain:
            out.append(
                Finding(
                    "configuration.plain-http",
                    "problem",
                    m.name,
                    "a listener without TLS on the network",
                    "; ".join(plain),
                    facts.reconfigure,
                )
            )
        if m.wanted_config is not None:
            have, want = _comparable(c), _comparable(m.wanted_config)
            drift = [k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
            if drift:
                shown = "; ".join(
                    f"{k}: {_show(have.get(k))} (the spec: {_show(want.get(k))})" for k in drift
                )
                out.append(
                    Finding(
                        "configuration.drift",
                        "warning",
                        m.name,
                        f"{m.name}'s config differs from what the spec renders",
                        shown,
                        facts.reconfigure,
                    )
                )
    return out


def _loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- membership -----------------------------------------------------------------------------------------


def membership(facts: DoctorFacts, t: Thresholds) -> list[Finding]:
    view = facts.cluster
    if not view.reachable:
        return [
            Finding(
                "membership.unreachable",
                "problem",
                "cluster",
                "no member answers",
                ", ".join(topology.client_urls(facts.spec)),
                f"{facts.reconcile} starts the members; if they cannot start, "
                f"{_cmd(facts, 'recover')} rebuilds from the best member or a backup",
            )
        ]
    out = []
    spec_names = {m.name for m in facts.spec.members}
    voters = len(view.voters)
    if voters % 2 == 0:
        out.append(
            Finding(
                "membership.even",
                "warning",
                "cluster",
                f"{voters} voting members tolerate {topology.fault_tolerance(voters)} failure(s), "
                f"no more than {voters - 1} would",
                f"voters: {', '.join(m.name or f'{m.id:x}' for m in view.voters)}",
                f"{_cmd(facts, 'member add NAME')} or {_cmd(facts, 'member remove NAME')}",
            )
        )
    leader_index = max(facts.raft_index.values(), default=0)
    for m in view.members:
        label = m.name or f"{m.id:x}"
        if not m.started:
            out.append(
                Finding(
                    "membership.unstarted",
                    "problem",
                    label,
                    f"a member was added ({', '.join(m.peer_urls)}) but never started",
                    "etcd lists it without a name",
                    f"{_cmd(facts, 'member add NAME')} (re-run) finishes it, "
                    f"{_cmd(facts, 'member remove NAME')} undoes it",
                )
            )
            continue
        if m.is_learner:
            lag = leader_index - facts.raft_index.get(m.name, 0) if m.name in facts.raft_index else None
            stuck = lag is None or lag >= t.learner_lag or not m.serving
            out.append(
                Finding(
                    "membership.learner",
                    "problem" if stuck else "warning",
                    label,
                    f"{label} is a learner that was not promoted"
                    + (
                        f" ({lag} raft entries behind the leader)"
                        if lag is not None
                        else " (it does not answer)"
                    ),
                    f"raft index {facts.raft_index.get(m.name, '?')} against the leader's {leader_index}",
                    f"{_cmd(facts, f'member add {label}')} (re-run: promotes it once caught up) or "
                    f"{_cmd(facts, f'member remove {label}')}",
                )
            )
        if m.name not in spec_names:
            out.append(
                Finding(
                    "membership.not-in-spec",
                    "problem",
                    label,
                    f"etcd has a member {label} that cluster.yaml does not list",
                    f"peer URLs {', '.join(m.peer_urls)}",
                    f"{_cmd(facts, f'member remove {label}')}",
                )
            )
        elif not m.serving:
            out.append(
                Finding(
                    "membership.down",
                    "problem",
                    label,
                    f"{label} does not answer",
                    m.url or "no client URL",
                    f"{facts.reconcile} starts it; if its data is lost or corrupt, "
                    f"{_cmd(facts, f'member replace {label}')}",
                )
            )
    listed = {m.name for m in view.members}
    for name in sorted(spec_names - listed):
        out.append(
            Finding(
                "membership.not-in-etcd",
                "problem",
                name,
                f"cluster.yaml lists {name}, which is not a member of the running cluster",
                f"etcd's members: {', '.join(sorted(n for n in listed if n))}",
                _cmd(facts, f"member replace {name}"),
            )
        )
    if view.mixed_versions:
        newest = view.mixed_versions[-1]
        out.append(
            Finding(
                "membership.version-skew",
                "warning",
                "cluster",
                "the members run different etcd releases",
                ", ".join(f"{m.name}: {m.version}" for m in view.members if m.version),
                _cmd(facts, f"upgrade --to {newest}"),
            )
        )
    return out


# --- space ----------------------------------------------------------------------------------------------


def space(facts: DoctorFacts, t: Thresholds) -> list[Finding]:
    out = []
    quota = facts.spec.quota_bytes
    for m in facts.cluster.members:
        if not m.serving or m.db_size <= 0:
            continue
        used = m.db_size * 100.0 / quota if quota else 0.0
        if used >= t.quota_warn_pct:
            out.append(
                Finding(
                    "space.quota",
                    "problem" if used >= t.quota_problem_pct else "warning",
                    m.name,
                    f"the database uses {used:.0f}% of the quota (NOSPACE at 100%)",
                    f"db size {m.db_size} bytes, in use {m.db_in_use}, quota {quota}",
                    f"{_cmd(facts, 'compact --keep 1h')} then {_cmd(facts, 'defrag')}; "
                    "or raise etcd.quota_backend_bytes",
                )
            )
        free = m.db_size - m.db_in_use
        if m.fragmented_pct >= t.fragmented_pct and free >= t.fragmented_min_mb * 1e6:
            out.append(
                Finding(
                    "space.fragmented",
                    "warning",
                    m.name,
                    f"{m.fragmented_pct:.0f}% of the database file is free pages",
                    f"db size {m.db_size} bytes, in use {m.db_in_use}",
                    _cmd(facts, f"defrag --member {m.name}"),
                )
            )
    for member, alarm in facts.cluster.alarms:
        fix = _cmd(facts, "space recover") if alarm == "NOSPACE" else _cmd(facts, "alarms list")
        why = "writes are refused" if alarm == "NOSPACE" else "a member's data differs from its peers'"
        out.append(
            Finding("space.alarm", "problem", member, f"the {alarm} alarm is active: {why}", alarm, fix)
        )
    for mf in facts.members:
        if mf.config is None or mf.metrics is None:
            continue
        if str(mf.config.get("auto-compaction-retention", "0")) not in ("0", "0s", ""):
            continue
        current = exposition.total(mf.metrics, "etcd_debugging_mvcc_current_revision")
        compacted = exposition.total(mf.metrics, "etcd_debugging_mvcc_compact_revision")
        if current is None or compacted is None:
            continue
        if current - compacted >= t.uncompacted_revisions:
            out.append(
                Finding(
                    "space.no-compaction",
                    "warning",
                    mf.name,
                    f"{current - compacted:.0f} revisions are kept and nothing compacts them",
                    f"revision {current:.0f}, compacted up to {compacted:.0f}; auto-compaction-retention 0",
                    f"etcd.auto_compaction_retention (e.g. 1h) in cluster.yaml, then {facts.reconfigure}; "
                    f"now: {_cmd(facts, 'compact --keep 1h')}",
                )
            )
            break
    return out


# --- disk, leader, logs ---------------------------------------------------------------------------------


def disk(facts: DoctorFacts, t: Thresholds) -> list[Finding]:
    out = []
    serving = {m.name for m in facts.cluster.members if m.serving}
    for m in facts.members:
        f = m.figures
        if f is not None:
            for label, value, seen, limit, metric in (
                (
                    "WAL fsync",
                    f.wal_fsync_p99,
                    f.wal_fsyncs,
                    t.wal_fsync_p99_ms,
                    "etcd_disk_wal_fsync_duration_seconds",
                ),
                (
                    "backend commit",
                    f.backend_commit_p99,
                    f.backend_commits,
                    t.backend_commit_p99_ms,
                    "etcd_disk_backend_commit_duration_seconds",
                ),
            ):
                if value is None or (seen or 0) < t.min_disk_samples:
                    continue
                if value * 1000 > limit:
                    out.append(
                        Finding(
                            "disk.latency",
                            "warning",
                            m.name,
                            f"{label} p99 is {value * 1000:.1f} ms (over {limit:g} ms): the disk is too slow "
                            "for etcd, which causes elections",
                            f"{metric}: {seen:.0f} observations since the member started",
                            "move the data dir to a faster disk (SSD); "
                            f"{_cmd(facts, f'metrics --member {m.name}')} shows the figures",
                        )
                    )
            # on hosts systemd sets the limit (LimitNOFILE in etcdforge's unit); local members inherit
            # the shell's, which is a development machine's business
            if facts.spec.on_own_hosts and f.max_fds is not None and f.max_fds < t.min_open_files:
                out.append(
                    Finding(
                        "hosts.open-files",
                        "warning",
                        m.name,
                        f"etcd may open only {f.max_fds:.0f} files",
                        f"process_max_fds {f.max_fds:.0f} (etcdforge's unit sets LimitNOFILE=65536)",
                        facts.reconfigure,
                    )
                )
        if m.metrics_error is not None and m.name in serving:
            out.append(
                Finding(
                    "disk.metrics-unreadable",
                    "warning",
                    m.name,
                    "the member answers but its metrics cannot be read: the disk rules cannot judge it",
                    m.metrics_error,
                    f"{_cmd(facts, f'metrics --member {m.name} --raw')} shows the error",
                )
            )
        if m.log_error is not None:
            out.append(
                Finding(
                    "disk.log-unreadable",
                    "warning",
                    m.name,
                    "the member's log cannot be read: the log rules cannot judge it",
                    m.log_error,
                    "give the user running etcdforge read access to it",
                )
            )
        if m.log is None:
            continue
        for rule, needles, what in (
            ("disk.slow-fdatasync", logs.SLOW_DISK, "slow fdatasync"),
            ("disk.heartbeat", logs.HEARTBEAT, "late heartbeats (leader overloaded, slow disk or CPU)"),
        ):
            hits = logs.matching(m.log, needles)
            if hits:
                out.append(
                    Finding(
                        rule,
                        "warning",
                        m.name,
                        f"{len(hits)} × {what} in the last hour",
                        hits[-1].text[:300],
                        f"{_cmd(facts, f'metrics --member {m.name}')}; a faster disk, or less load on this "
                        "machine",
                    )
                )
    return out


def leader_changes(facts: DoctorFacts, t: Thresholds) -> list[Finding]:
    terms: set[int] = set()
    read = False
    for m in facts.members:
        if m.log is not None:
            read = True
            terms |= logs.elected_terms(m.log)
    changes = len(terms) - 1
    if not read or changes < t.leader_changes:
        return []
    return [
        Finding(
            "leader.changes",
            "warning",
            "cluster",
            f"{changes} leader changes in the last hour",
            f"leaders elected at terms {', '.join(map(str, sorted(terms)))}",
            f"{_cmd(facts, 'metrics')} (disk latency, peer round trip); etcd.heartbeat_interval_ms and "
            "election_timeout_ms in cluster.yaml suit the network",
        )
    ]


# --- hosts, clock ---------------------------------------------------------------------------------------


def hosts(facts: DoctorFacts, t: Thresholds) -> list[Finding]:
    out = []
    offsets: dict[str, float] = {}
    slack: dict[str, float] = {}
    for m in facts.members:
        h = m.host
        if h is None:
            continue
        if h.error:
            out.append(Finding("hosts.unreadable", "warning", m.name, h.error, "", "check SSH to the host"))
            continue
        if h.data_dir_owner is not None and h.data_dir_owner != "etcd":
            out.append(
                Finding(
                    "hosts.data-dir-owner",
                    "problem",
                    m.name,
                    f"{h.data_dir} is owned by {h.data_dir_owner}, not etcd",
                    f"owner {h.data_dir_owner}",
                    facts.reconfigure,
                )
            )
        if h.data_dir_mode is not None and h.data_dir_mode & 0o077:
            out.append(
                Finding(
                    "hosts.data-dir-mode",
                    "problem",
                    m.name,
                    f"{h.data_dir} is mode {h.data_dir_mode:04o}: others can read etcd's data",
                    f"mode {h.data_dir_mode:04o} (etcd wants 0700)",
                    facts.reconfigure,
                )
            )
        if h.data_dir_fs in ("tmpfs", "ramfs"):
            out.append(
                Finding(
                    "hosts.data-dir-fs",
                    "problem",
                    m.name,
                    f"{h.data_dir} is on {h.data_dir_fs}: the member's data is lost at a reboot",
                    f"filesystem {h.data_dir_fs}",
                    "etcd.data_dir on a disk (cluster.yaml), then `member replace` one member at a time",
                )
            )
        elif h.data_dir_fs == "overlayfs" or h.data_dir_fs == "overlay":
            out.append(
                Finding(
                    "hosts.data-dir-fs",
                    "warning",
                    m.name,
                    f"{h.data_dir} is on an overlay filesystem "
                    "(slow fsync, often a container's throwaway layer)",
                    f"filesystem {h.data_dir_fs}",
                    "etcd.data_dir on a disk of its own",
                )
            )
        if h.swap_kb:
            out.append(
                Finding(
                    "hosts.swap",
                    "warning",
                    m.name,
                    "swap is on: a swapped-out etcd misses heartbeats",
                    f"{h.swap_kb} kB of swap",
                    "swapoff -a (and remove swap from /etc/fstab) on the host",
                )
            )
        if h.clock_offset is not None:
            offsets[m.name] = h.clock_offset
            slack[m.name] = h.clock_uncertainty
    if len(offsets) >= 2:
        # the hosts against each other: whoever is far from the median (this machine's clock does not vote)
        ordered = sorted(offsets.values())
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        for name, offset in offsets.items():
            drift = offset - median
            # a reading is only as good as half its SSH round trip: never flag what that could explain
            if abs(drift) - slack[name] > t.clock_drift_s:
                out.append(
                    Finding(
                        "hosts.clock",
                        "warning",
                        name,
                        f"the host's clock is {drift:+.1f} s off the other hosts'",
                        ", ".join(f"{n}: {o:+.2f} s against this machine" for n, o in offsets.items()),
                        "run NTP (chrony or systemd-timesyncd) on every host",
                    )
                )
    return out


# --- backups --------------------------------------------------------------------------------------------


def backups(facts: DoctorFacts, t: Thresholds) -> list[Finding]:
    b = facts.backups
    now_ts = facts.now.timestamp()
    out = []
    if b.last_failure is not None:
        out.append(
            Finding(
                "backups.failed",
                "problem",
                "cluster",
                f"the last backup run ({b.last_failure_id}) failed",
                b.last_failure,
                _cmd(facts, "backup now"),
            )
        )
    if b.last_ok is None:
        if b.last_failure is None:
            out.append(
                Finding(
                    "backups.none",
                    "warning",
                    "cluster",
                    "no verified backup is recorded",
                    "backups/last-backup.json is missing",
                    f"{_cmd(facts, 'backup now')} (and `backup schedule --install`)",
                )
            )
        return out
    hours = (now_ts - b.last_ok.timestamp()) / 3600
    if hours > t.backup_age_h:
        out.append(
            Finding(
                "backups.stale",
                "warning",
                "cluster",
                f"the last verified backup is {hours:.0f} h old",
                f"{b.last_ok_id}",
                f"{_cmd(facts, 'backup now')}; `backup schedule --install` keeps them coming",
            )
        )
    return out


RULES: Mapping[str, Rule] = {
    "certificates": certificates,
    "configuration": configuration,
    "membership": membership,
    "space": space,
    "disk": disk,
    "leader": leader_changes,
    "hosts": hosts,
    "backups": backups,
}


DEFAULT_THRESHOLDS = Thresholds()


def diagnose(facts: DoctorFacts, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[Finding, ...]:
    out: list[Finding] = []
    for rule in RULES.values():
        out += rule(facts, thresholds)
    order = {"problem": 0, "warning": 1}
    return tuple(sorted(out, key=lambda f: (order[f.severity], f.rule, f.subject)))
