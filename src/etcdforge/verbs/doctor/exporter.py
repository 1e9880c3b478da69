"""``etcdforge exporter``: what etcd does not export, as Prometheus metrics (prometheus_client).

Every ``interval`` seconds doctor's facts are gathered again (the cluster, the members' metrics, the
workspace's certificates and backup records; never SSH) and turned into gauges; a scrape gets the latest
set at once, so a slow or unreachable cluster never makes a scrape time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from etcdforge.diagnosis.facts import DoctorFacts
from etcdforge.diagnosis.findings import Finding
from etcdforge.errors import SpecError
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace

#: the doctor rules that mean "the cluster is not what cluster.yaml says"
DRIFT_RULES = frozenset(
    {"configuration.drift", "membership.not-in-spec", "membership.not-in-etcd", "membership.unstarted"}
)


def families(facts: DoctorFacts, findings: Sequence[Finding], took: float) -> list[Any]:
    """The gauges for one refresh (pure: facts in, metric families out)."""
    from prometheus_client.core import GaugeMetricFamily

    cluster = facts.spec.name

    def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Any:
        return GaugeMetricFamily(name, doc, labels=["cluster", *labels])

    expiry = gauge(
        "etcdforge_certificate_expiry_timestamp_seconds", "When the certificate expires.", ["certificate"]
    )
    for subject, when in facts.expiry:
        expiry.add_metric([cluster, subject], when.timestamp())
    backup = gauge("etcdforge_backup_last_success_timestamp_seconds", "The last verified backup (0: none).")
    backup.add_metric([cluster], facts.backups.last_ok.timestamp() if facts.backups.last_ok else 0.0)
    failed = gauge("etcdforge_backup_last_run_failed", "1 if the last backup run failed.")
    failed.add_metric([cluster], 1.0 if facts.backups.last_failure else 0.0)
    lag = gauge("etcdforge_learner_lag_entries", "Raft entries a learner is behind the leader.", ["member"])
    leader_index = max(facts.raft_index.values(), default=0)
    for m in facts.cluster.members:
        if m.is_learner and m.name in facts.raft_index:
            lag.add_metric([cluster, m.name], float(leader_index - facts.raft_index[m.name]))
    versions = gauge("etcdforge_etcd_versions", "How many etcd releases the members run.")
    versions.add_metric([cluster], float(len({m.version for m in facts.cluster.members if m.version})))
    members = gauge("etcdforge_members", "Members by state.", ["state"])
    states = {"serving": 0, "down": 0, "learner": 0, "unstarted": 0}
    for m in facts.cluster.members:
        state = (
            "unstarted"
            if not m.started
            else "learner"
            if m.is_learner
            else "serving"
            if m.serving
            else "down"
        )
        states[state] += 1
    for state, count in states.items():
        members.add_metric([cluster, state], float(count))
    reachable = gauge("etcdforge_cluster_reachable", "1 if a member answered.")
    reachable.add_metric([cluster], 1.0 if facts.cluster.reachable else 0.0)
    drift = gauge("etcdforge_spec_drift", "Ways the cluster differs from cluster.yaml (doctor).")
    drift.add_metric([cluster], float(sum(f.rule in DRIFT_RULES for f in findings)))
    doctor = gauge("etcdforge_doctor_findings", "doctor's findings by severity.", ["severity"])
    for severity in ("problem", "warning"):
        doctor.add_metric([cluster, severity], float(sum(f.severity == severity for f in findings)))
    refreshed = gauge("etcdforge_last_refresh_timestamp_seconds", "When these figures were gathered.")
    refreshed.add_metric([cluster], facts.now.timestamp())
    duration = gauge("etcdforge_refresh_duration_seconds", "How long gathering them took.")
    duration.add_metric([cluster], took)
    return [expiry, backup, failed, lag, versions, members, reachable, drift, doctor, refreshed, duration]


class _Latest:
    """The prometheus_client collector: the families of the last refresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: list[Any] = []

    def set(self, families: list[Any]) -> None:
        with self._lock:
            self._families = families

    def collect(self) -> Iterator[Any]:
        with self._lock:
            families = list(self._families)
        return iter(families)


def parse_listen(listen: str, *, any_port: bool = False) -> tuple[str, int]:
    """``ADDRESS:PORT``; port 0 (a free one, for tests) only with ``any_port``."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not (0 if any_port else 1) <= int(port) < 65536:
        raise SpecError(f"--listen {listen!r}: use ADDRESS:PORT, e.g. 127.0.0.1:9479")
    return host.strip("[]") or "127.0.0.1", int(port)


async def refresh(spec: ClusterSpec, ws: Workspace) -> list[Any]:
    from etcdforge.diagnosis.rules import diagnose
    from etcdforge.verbs.doctor.gather import gather

    started = time.monotonic()
    facts = await gather(spec, ws, hosts=False)
    findings = diagnose(facts)
    return families(facts, findings, time.monotonic() - started)


async def serve(
    spec: ClusterSpec,
    ws: Workspace,
    listen: str,
    *,
    interval: float,
    stop: asyncio.Event,
    on_ready: Any = None,
    on_error: Any = None,
) -> None:
    """Serve until ``stop`` is set; ``on_ready(address, port)`` once the first figures are in,
    ``on_error(exc)`` when a later refresh fails (the last figures stay served)."""
    from prometheus_client import CollectorRegistry, start_http_server

    address, port = parse_listen(listen, any_port=True)
    latest = _Latest()
    latest.set(await refresh(spec, ws))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(latest)
    server, thread = start_http_server(port, addr=address, registry=registry)
    try:
        if on_ready is not None:
            on_ready(address, server.server_port)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
            try:
                latest.set(await refresh(spec, ws))
            except Exception as exc:
                # the last figures stay; etcdforge_last_refresh_timestamp_seconds ages (an alert says so)
                if on_error is not None:
                    on_error(exc)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
