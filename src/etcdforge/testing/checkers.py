"""Checkers of the reliability suite (reliability.md C1–C6, C9) over a recorded workload history.

Role: the stable import path for the checkers, which live in two modules: the pure C1–C5 (plus sentinel
and throughput) in :mod:`etcdforge.testing.history_checks`, and the ones that talk to etcd or run the CLI
(the authoritative history, C6 convergence, C9 tool view, :func:`check_all`/:class:`Report`) in
:mod:`etcdforge.testing.cluster_checks`. This module only re-exports them; it defines nothing.
"""

from __future__ import annotations

from .cluster_checks import (
    CertFacts,
    Report,
    SpecMember,
    cert_view_problems,
    check_all,
    check_convergence,
    check_tool_view,
    convergence_problems,
    observe_convergence,
    read_kv_history,
    tool_view_problems,
)
from .history_checks import (
    Event,
    KvHistory,
    check_at_most_once,
    check_distinct_revisions,
    check_history_against,
    check_no_lost_write,
    check_no_phantom,
    check_real_time_order,
    check_sentinel,
    check_throughput,
)

__all__ = [
    "CertFacts",
    "Event",
    "KvHistory",
    "Report",
    "SpecMember",
    "cert_view_problems",
    "check_all",
    "check_at_most_once",
    "check_convergence",
    "check_distinct_revisions",
    "check_history_against",
    "check_no_lost_write",
    "check_no_phantom",
    "check_real_time_order",
    "check_sentinel",
    "check_throughput",
    "check_tool_view",
    "convergence_problems",
    "observe_convergence",
    "read_kv_history",
    "tool_view_problems",
]
