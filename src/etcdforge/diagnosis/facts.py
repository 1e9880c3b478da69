"""What doctor judges, as gathered by :mod:`etcdforge.verbs.doctor` (None everywhere means "not known":
a rule that needs it says nothing rather than guess)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etcdforge.diagnosis.logs import LogLine
from etcdforge.exposition import Figures, Sample
from etcdforge.observe.cluster import ClusterView
from etcdforge.pki.check import Finding as PkiFinding
from etcdforge.spec import ClusterSpec


@dataclass(frozen=True)
class HostFacts:
    """One member's host (``doctor --hosts``)."""

    data_dir: str
    data_dir_owner: str | None = None
    data_dir_mode: int | None = None
    data_dir_fs: str | None = None
    swap_kb: int | None = None
    #: this host's clock minus this machine's, in seconds (the SSH round trip halved)
    clock_offset: float | None = None
    clock_uncertainty: float = 0.0
    #: peer address -> the source address this host sends peer traffic from (``ip route get``)
    peer_sources: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class MemberFacts:
    name: str
    #: the member's etcd config file as parsed (None: not read, see ``config_error``)
    config: Mapping[str, Any] | None = None
    config_error: str | None = None
    #: the config etcdforge renders for it from the spec (drift is the difference)
    wanted_config: Mapping[str, Any] | None = None
    metrics: tuple[Sample, ...] | None = None
    figures: Figures | None = None
    metrics_error: str | None = None
    #: its log lines of the last hour (None: not read)
    log: tuple[LogLine, ...] | None = None
    log_error: str | None = None
    #: the member's peer certificate (PEM) as installed, for the source-address check
    peer_cert: bytes | None = None
    host: HostFacts | None = None


@dataclass(frozen=True)
class BackupFacts:
    last_ok: datetime | None = None
    last_ok_id: str | None = None
    last_failure: str | None = None
    last_failure_id: str | None = None


@dataclass(frozen=True)
class DoctorFacts:
    spec: ClusterSpec
    now: datetime
    cluster: ClusterView
    #: raft index per member name (status), for the learner lag
    raft_index: Mapping[str, int] = field(default_factory=dict)
    pki: tuple[PkiFinding, ...] = ()
    #: every certificate read, with when it expires: (name, not-valid-after)
    expiry: tuple[tuple[str, datetime], ...] = ()
    #: client certificates the peer listeners would accept: (certificate name, why)
    peer_capable: tuple[tuple[str, str], ...] = ()
    members: tuple[MemberFacts, ...] = ()
    backups: BackupFacts = BackupFacts()
    #: the command that starts stopped members: `etcdforge up` (local) or `etcdforge apply` (hosts)
    reconcile: str = "etcdforge up"
    #: the command that makes members run the spec's configuration: local members are restarted by
    #: `etcdforge down` then `up`; on hosts `etcdforge apply` rolls it out member by member
    reconfigure: str = "etcdforge down && etcdforge up"
    #: `` --dir DIR`` when the workspace is not the default one (appended to every fix command)
    dir_arg: str = ""
