"""Mapping of gRPC statuses and etcd error texts onto etcdforge's error tree."""

from __future__ import annotations

import pytest

from etcdforge.errors import EtcdRequestError, EtcdTLSError, EtcdUnavailable
from etcdforge.etcd.failures import (
    EtcdServerError,
    EtcdServerUnavailable,
    classify_etcd_text,
    is_failover_error,
    map_status,
)

EP = "https://127.0.0.1:2379"


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        ("NOT_FOUND", "etcdserver: member not found", "member_not_found"),
        (
            "FAILED_PRECONDITION",
            "etcdserver: can only promote a learner member which is in sync with leader",
            "learner_not_ready",
        ),
        ("FAILED_PRECONDITION", "etcdserver: can only promote a learner member", "member_not_learner"),
        ("FAILED_PRECONDITION", "etcdserver: too many learner members in cluster", "too_many_learners"),
        ("UNAVAILABLE", "etcdserver: unhealthy cluster", "unhealthy_cluster"),
        ("UNAVAILABLE", "etcdserver: rpc not supported for learner", "learner_rpc_unsupported"),
        ("FAILED_PRECONDITION", "etcdserver: not leader", "not_leader"),
        ("FAILED_PRECONDITION", "etcdserver: bad leader transferee", "bad_leader_transferee"),
        ("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted", "compacted"),
        ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded", "no_space"),
        ("PERMISSION_DENIED", "etcdserver: permission denied", "permission_denied"),
        ("FAILED_PRECONDITION", "etcdserver: member ID already exist", "member_exists"),
        ("FAILED_PRECONDITION", "etcdserver: Peer URLs already exists", "peer_url_exists"),
        ("UNKNOWN", "etcdserver: something new", "other"),
    ],
)
def test_etcd_answers_become_typed_request_errors(code: str, text: str, reason: str) -> None:
    err = map_status(code, text, endpoint=EP)
    assert isinstance(err, EtcdServerError) and isinstance(err, EtcdRequestError)
    assert err.reason == reason and err.code == code and err.endpoint == EP
    assert err.message == f"{EP}: {text}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("etcdserver: no leader", "no_leader"),
        ("etcdserver: request timed out", "request_timed_out"),
        ("etcdserver: leader changed", "leader_changed"),
    ],
)
def test_transient_server_answers_are_unavailable(text: str, reason: str) -> None:
    err = map_status("UNAVAILABLE", text, endpoint=EP)
    assert isinstance(err, EtcdServerUnavailable) and isinstance(err, EtcdUnavailable)
    assert err.reason == reason and err.code == "UNAVAILABLE"
    assert is_failover_error(err)


def test_transport_failures() -> None:
    err = map_status("UNAVAILABLE", "failed to connect to all addresses", endpoint=EP)
    assert type(err) is EtcdUnavailable and EP in err.message and err.endpoint == EP
    err = map_status("DEADLINE_EXCEEDED", "Deadline Exceeded", endpoint=EP, timeout=5)
    assert type(err) is EtcdUnavailable and err.message == f"{EP}: request timed out after 5s"


def test_other_grpc_codes_keep_the_code() -> None:
    err = map_status("UNIMPLEMENTED", "unknown service etcdserverpb.Foo", endpoint=EP)
    assert type(err) is EtcdRequestError and err.code == "UNIMPLEMENTED"


def test_failover_policy() -> None:
    assert is_failover_error(EtcdTLSError("x"))
    assert is_failover_error(
        map_status("UNAVAILABLE", "etcdserver: rpc not supported for learner", endpoint=EP)
    )
    assert not is_failover_error(map_status("NOT_FOUND", "etcdserver: member not found", endpoint=EP))


def test_non_etcd_text() -> None:
    assert classify_etcd_text("failed to connect to all addresses") is None
