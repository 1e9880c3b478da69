"""Doctor's rules on hand-built facts: each rule fires on its broken state, with its evidence and fix, and
stays silent on a healthy cluster (the integration tests break real clusters)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etcdforge import exposition
from etcdforge.diagnosis import logs
from etcdforge.diagnosis.facts import BackupFacts, DoctorFacts, HostFacts, MemberFacts
from etcdforge.diagnosis.findings import Thresholds, exit_code
from etcdforge.diagnosis.rules import diagnose
from etcdforge.observe.cluster import ClusterView, MemberView
from etcdforge.verbs.up.plan import new_local_spec

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SPEC = new_local_spec(members=3, name="t", etcd_binary=None, is_free=lambda ip, port: True, token="t-1")
CONFIG: dict[str, Any] = {
    "heartbeat-interval": 100,
    "election-timeout": 1000,
    "strict-reconfig-check": True,
    "experimental-initial-corrupt-check": True,
    "auto-compaction-retention": "0",
    "listen-client-urls": "https://127.0.0.1:2379",
    "listen-metrics-urls": "http://127.0.0.1:2381",
    "peer-transport-security": {"cert-file": "/x", "client-cert-auth": True},
}


def view(**changes: Any) -> MemberView:
    base = MemberView(
        1, "etcd1", ("https://127.0.0.1:2380",), False, True, True, "3.5.1", "u", True, 100, 90, 5
    )
    return dataclasses.replace(base, **changes)


def healthy_cluster() -> ClusterView:
    return ClusterView(
        tuple(
            view(
                id=i + 1, name=f"etcd{i + 1}", is_leader=i == 0, peer_urls=(f"https://127.0.0.{i + 1}:2380",)
            )
            for i in range(3)
        )
    )


def member(name: str, **changes: Any) -> MemberFacts:
    base = MemberFacts(name, config=dict(CONFIG), wanted_config=dict(CONFIG), metrics=(), log=())
    return dataclasses.replace(base, **changes)


def facts(**changes: Any) -> DoctorFacts:
    base = DoctorFacts(
        spec=SPEC,
        now=NOW,
        cluster=healthy_cluster(),
        raft_index={"etcd1": 10, "etcd2": 10, "etcd3": 10},
        members=tuple(member(f"etcd{i}") for i in (1, 2, 3)),
        backups=BackupFacts(NOW - timedelta(hours=1), "20261207T110000Z"),
        dir_arg=" --dir /w",
        reconcile="etcdforge up --dir /w",
        reconfigure="etcdforge down --dir /w && etcdforge up --dir /w",
    )
    return dataclasses.replace(base, **changes)


def rules_of(f: DoctorFacts, thresholds: Thresholds | None = None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for finding in diagnose(f, thresholds or Thresholds()):
        out.setdefault(finding.rule, []).append(finding)
    return out


def test_a_healthy_cluster_has_no_findings() -> None:
    assert diagnose(facts()) == ()
    assert exit_code(()) == 0


def test_members_that_differ_and_drift_from_the_spec() -> None:
    other = member("etcd2", config={**CONFIG, "heartbeat-interval": 300})
    found = rules_of(facts(members=(member("etcd1"), other, member("etcd3"))))
    (differs,) = found["configuration.differs"]
    assert differs.severity == "problem" and "heartbeat-interval" in differs.message
    assert "etcd2: 300" in differs.evidence and "etcd1: 100" in differs.evidence
    assert differs.fix.startswith("etcdforge down --dir /w && etcdforge up --dir /w")
    (drift,) = found["configuration.drift"]
    assert drift.subject == "etcd2" and "heartbeat-interval: 300 (the spec: 100)" in drift.evidence


def test_unsafe_settings() -> None:
    bad = {
        **CONFIG,
        "strict-reconfig-check": False,
        "experimental-initial-corrupt-check": False,
        "listen-client-urls": "https://10.0.0.1:2379,http://10.0.0.1:2379",
        "listen-metrics-urls": "http://0.0.0.0:2381",
    }
    found = rules_of(
        facts(members=tuple(member(f"etcd{i}", config=bad, wanted_config=bad) for i in (1, 2, 3)))
    )
    assert len(found["configuration.strict-reconfig-check"]) == 3
    assert "etcd.initial_corrupt_check: true" in found["configuration.corrupt-check"][0].fix
    plain = found["configuration.plain-http"][0]
    assert "http://10.0.0.1:2379" in plain.evidence and "http://0.0.0.0:2381" in plain.evidence
    assert "127.0.0.1" not in plain.evidence


def test_membership_findings() -> None:
    cluster = healthy_cluster()
    members = list(cluster.members)
    members[1] = dataclasses.replace(members[1], serving=False, healthy=False)
    members.append(view(id=9, name="", peer_urls=("https://127.0.0.9:2380",), is_leader=False, serving=False))
    members.append(view(id=10, name="stray", peer_urls=("https://127.0.0.10:2380",), is_leader=False))
    members[2] = dataclasses.replace(members[2], version="3.4.23")
    found = rules_of(facts(cluster=ClusterView(tuple(members))))
    assert found["membership.down"][0].subject == "etcd2"
    assert "member replace etcd2" in found["membership.down"][0].fix
    assert "never started" in found["membership.unstarted"][0].message
    assert found["membership.not-in-spec"][0].fix == "etcdforge member remove stray --dir /w"
    assert "etcdforge upgrade --to 3.5.1" in found["membership.version-skew"][0].fix
    assert "membership.even" not in found  # 5 voters: the unstarted member votes too


def test_an_even_number_of_voters() -> None:
    four = ClusterView((*healthy_cluster().members, view(id=4, name="etcd4", is_leader=False)))
    (even,) = rules_of(facts(cluster=four))["membership.even"]
    assert even.message.startswith("4 voting members tolerate 1 failure(s)")


def test_a_learner_far_behind_and_a_member_only_in_the_spec() -> None:
    cluster = healthy_cluster()
    members = (*cluster.members[:2], dataclasses.replace(cluster.members[2], is_learner=True))
    found = rules_of(
        facts(cluster=ClusterView(members), raft_index={"etcd1": 5000, "etcd2": 5000, "etcd3": 3})
    )
    (learner,) = found["membership.learner"]
    assert learner.severity == "problem" and "4997 raft entries behind" in learner.message
    only_two = ClusterView(cluster.members[:2])
    assert rules_of(facts(cluster=only_two))["membership.not-in-etcd"][0].subject == "etcd3"


def test_an_unreachable_cluster_is_one_problem() -> None:
    found = diagnose(facts(cluster=ClusterView(reachable=False)))
    assert [f.rule for f in found if f.rule.startswith("membership")] == ["membership.unreachable"]


def test_space_quota_fragmentation_alarms_and_compaction() -> None:
    quota = SPEC.quota_bytes
    members = tuple(
        view(id=i, name=f"etcd{i}", db_size=int(quota * 0.96), db_in_use=int(quota * 0.3), is_leader=i == 1)
        for i in (1, 2, 3)
    )
    metrics = exposition.parse(
        "etcd_debugging_mvcc_current_revision 250000\netcd_debugging_mvcc_compact_revision 1\n"
    )
    found = rules_of(
        facts(
            cluster=ClusterView(members, alarms=(("etcd1", "NOSPACE"),)),
            members=tuple(member(f"etcd{i}", metrics=metrics) for i in (1, 2, 3)),
        )
    )
    assert {f.severity for f in found["space.quota"]} == {"problem"}
    assert "etcdforge defrag --member etcd1 --dir /w" in [f.fix for f in found["space.fragmented"]]
    assert found["space.alarm"][0].fix == "etcdforge space recover --dir /w"
    assert len(found["space.no-compaction"]) == 1


def test_disk_latency_logs_and_leader_changes() -> None:
    page = exposition.parse(
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 1\n'
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.032"} 100\n'
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 100\n'
        "etcd_disk_wal_fsync_duration_seconds_count 100\n"
        "process_max_fds 1024\n"
    )
    ts = NOW.timestamp() - 60
    lines = logs.parse(
        "\n".join(
            json.dumps({"ts": ts + i, "msg": msg})
            for i, msg in enumerate(
                [
                    "slow fdatasync",
                    "leader failed to send out heartbeat on time; took too long, leader is overloaded",
                    "raft.node: 1 elected leader 1 at term 2",
                    "raft.node: 1 elected leader 2 at term 4",
                    "raft.node: 1 elected leader 3 at term 5",
                    "raft.node: 1 elected leader 1 at term 7",
                ]
            )
        )
    )
    one = member("etcd1", metrics=page, figures=exposition.figures(page), log=lines)
    found = rules_of(facts(members=(one, member("etcd2"), member("etcd3"))))
    assert "disk.latency" not in found  # 100 observations say nothing yet
    found = rules_of(facts(members=(one,)), Thresholds().override({"min_disk_samples": "100"}))
    assert "WAL fsync p99 is 31.7 ms" in found["disk.latency"][0].message
    assert found["disk.slow-fdatasync"][0].message.startswith("1 × slow fdatasync")
    assert len(found["disk.heartbeat"]) == 1
    assert found["leader.changes"][0].message == "3 leader changes in the last hour"
    assert "hosts.open-files" not in found  # local members inherit the shell's limit (hosts: systemd's)
    # a higher threshold silences the latency rule
    relaxed = Thresholds().override({"wal_fsync_p99_ms": "50", "min_disk_samples": "100"})
    assert "disk.latency" not in rules_of(facts(members=(one,)), relaxed)


def test_hosts_and_clock() -> None:
    def host(**changes: Any) -> HostFacts:
        base = HostFacts("/var/lib/etcd", "etcd", 0o700, "ext2/ext3", 0, 0.0)
        return dataclasses.replace(base, **changes)

    members = (
        member("etcd1", host=host(data_dir_owner="root", data_dir_mode=0o755, data_dir_fs="tmpfs")),
        member("etcd2", host=host(swap_kb=2048, clock_offset=5.0)),
        member("etcd3", host=host(data_dir_fs="overlayfs")),
    )
    found = rules_of(facts(members=members))
    assert {"hosts.data-dir-owner", "hosts.data-dir-mode", "hosts.swap", "hosts.clock"} <= set(found)
    assert [f.severity for f in found["hosts.data-dir-fs"]] == ["problem", "warning"]
    assert [f.subject for f in found["hosts.clock"]] == ["etcd2"]
    # a reading whose SSH round trip could explain the offset is not flagged
    slow = (member("etcd1", host=host()), member("etcd2", host=host(clock_offset=1.8, clock_uncertainty=1.0)))
    assert "hosts.clock" not in rules_of(facts(members=slow))
    gone = (member("etcd1", host=HostFacts("/var/lib/etcd", error="cannot connect to etcd1's host")),)
    assert rules_of(facts(members=gone))["hosts.unreadable"][0].message == "cannot connect to etcd1's host"


def test_backups() -> None:
    assert rules_of(facts(backups=BackupFacts()))["backups.none"][0].severity == "warning"
    old = BackupFacts(NOW - timedelta(days=3), "20261204T120000Z")
    assert "72 h old" in rules_of(facts(backups=old))["backups.stale"][0].message
    failed = BackupFacts(NOW - timedelta(hours=1), "x", "store unreachable", "20261207T115000Z")
    assert rules_of(facts(backups=failed))["backups.failed"][0].severity == "problem"


def test_peer_capable_and_pki_findings_become_findings() -> None:
    from etcdforge.pki.check import Finding as PkiFinding

    found = rules_of(
        facts(
            pki=(PkiFinding("etcd1-server", "expiry", "warning", "expires in 3 days"),),
            peer_capable=(("admin-client", "signed by the peer CA"),),
        )
    )
    assert found["certificates.expiry"][0].fix == "etcdforge pki renew --dir /w"
    assert found["certificates.peer-capable"][0].subject == "admin-client"


def test_thresholds_refuse_unknown_names_and_non_numbers() -> None:
    with pytest.raises(ValueError, match="no threshold 'nope'"):
        Thresholds().override({"nope": "1"})
    with pytest.raises(ValueError, match="not a number"):
        Thresholds().override({"clock_drift_s": "soon"})


def test_unreadable_metrics_and_logs_are_said() -> None:
    members = (
        member("etcd1", metrics=None, metrics_error="cannot read http://127.0.0.1:2381/metrics: refused"),
        member("etcd2", log=None, log_error="cannot read etcd.log: permission denied"),
        member("etcd3"),
    )
    found = rules_of(facts(members=members))
    assert found["disk.metrics-unreadable"][0].subject == "etcd1"
    assert found["disk.log-unreadable"][0].evidence == "cannot read etcd.log: permission denied"
