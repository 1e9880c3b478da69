"""WaitPeerServing: wait (briefly) until a new member's peer port completes a handshake; never fail.

The handshake itself is :func:`etcdforge.etcd.presented.presented_certificate` (real TLS, covered by the
integration tests); here the injected handshake plays each answer a port can give, on a fake clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from etcdforge.errors import EtcdTLSError, EtcdUnavailable
from etcdforge.plan import WaitPeerServing
from etcdforge.runtime import cert_verify
from etcdforge.testing.fakes import FakeClock
from etcdforge.workspace import Workspace

URL = "https://127.0.0.1:2380"


def wait(
    tmp_path: Path, answers: list[object], *, running: bool = True
) -> tuple[str, list[tuple[str, Path | None]], FakeClock]:
    clock = FakeClock()
    calls: list[tuple[str, Path | None]] = []

    async def presented(url: str, tls: object, *, timeout: float = 3.0) -> object:
        calls.append((url, getattr(tls, "cert", None)))
        answer = answers.pop(0) if answers else EtcdUnavailable("connection refused")
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def alive() -> bool:
        return running

    note = asyncio.run(
        cert_verify.wait_peer_serving(
            Workspace(tmp_path),
            WaitPeerServing("etcd1", URL, 2.0),
            running=alive,
            sleep=clock.sleep,
            clock=clock,
            handshake=presented,
        )
    )
    return note, calls, clock


def test_a_port_not_bound_yet_is_tried_again_until_it_serves(
    tmp_path: Path,
) -> None:
    refused = EtcdUnavailable("connection refused")
    note, calls, clock = wait(tmp_path, [refused, refused, object()])
    assert note.startswith("serving after") and len(calls) == 3
    # the member's own peer certificate: a peer port accepts nothing else
    assert {c for _, c in calls} == {Workspace(tmp_path).cert_path("etcd1-peer")}
    assert clock() == pytest.approx(2 * cert_verify.SERVING_INTERVAL)


def test_a_port_that_never_serves_is_left_to_the_health_wait(
    tmp_path: Path,
) -> None:
    note, calls, clock = wait(tmp_path, [])
    assert note == "not serving after 2s (left to the health wait)"
    assert clock() >= 2.0 and len(calls) > 100


def test_a_member_that_exited_is_not_waited_for(tmp_path: Path) -> None:
    note, calls, _ = wait(tmp_path, [], running=False)
    assert note == "not running (left to the health wait)" and len(calls) == 1


def test_a_tls_problem_or_unreadable_certificate_does_not_fail_the_start(
    tmp_path: Path,
) -> None:
    note, _, _ = wait(tmp_path, [EtcdTLSError("certificate verify failed")])
    assert note.startswith("answers, but certificate verify failed")
    note, _, _ = wait(tmp_path, [FileNotFoundError(2, "No such file or directory")])
    assert note.startswith("not checked:")
