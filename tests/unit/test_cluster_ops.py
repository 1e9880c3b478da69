"""The shared health gate as pure async code: a fake client at our own port, a fake clock, no sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from etcdforge.errors import MemberStartError
from etcdforge.etcd import Health
from etcdforge.services import cluster_ops


@dataclass
class Status:
    leader: int


class FakeClient:
    """Members become ready after a number of polls; ``leader`` is 0 until then."""

    def __init__(self, ready_after: dict[str, int]) -> None:
        self.ready_after = ready_after
        self.polls: dict[str, int] = dict.fromkeys(ready_after, 0)
        self.linearizable_reads = 0

    async def status(self, endpoint: str) -> Status:
        self.polls[endpoint] += 1
        return Status(leader=1 if self.polls[endpoint] > self.ready_after[endpoint] else 0)

    async def health(self, endpoint: str) -> Health:
        self.linearizable_reads += 1
        return Health(endpoint=endpoint, healthy=True, took=0.0, error=None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def never_failed(pending: frozenset[str], polls: int) -> None:
    pass


async def timed_out(name: str, error: str) -> Exception:
    return MemberStartError(f"{name}: {error}", member=name)


def test_waits_until_every_member_knows_a_leader_then_reads() -> None:
    client = FakeClient({"a": 0, "b": 3})
    clock = Clock()
    took = asyncio.run(
        cluster_ops.wait_healthy(
            client,  # type: ignore[arg-type]
            {"etcd1": "a", "etcd2": "b"},
            10.0,
            poll_interval=0.05,
            check_failed=never_failed,
            timed_out=timed_out,
            sleep=clock.sleep,
            clock=clock,
        )
    )
    assert took == pytest.approx(0.15)  # three polls of etcd2 before it knew a leader
    assert client.linearizable_reads == 2  # only members that know a leader get the linearizable read


def test_times_out_with_the_modes_error_and_a_dead_member_stops_the_wait_early() -> None:
    clock = Clock()
    with pytest.raises(MemberStartError, match="etcd2: no leader yet"):
        asyncio.run(
            cluster_ops.wait_healthy(
                FakeClient({"a": 0, "b": 10**6}),  # type: ignore[arg-type]
                {"etcd1": "a", "etcd2": "b"},
                2.0,
                poll_interval=0.5,
                check_failed=never_failed,
                timed_out=timed_out,
                sleep=clock.sleep,
                clock=clock,
            )
        )

    async def dies(pending: frozenset[str], polls: int) -> None:
        if polls == 2:
            raise MemberStartError("etcd2 exited", member="etcd2")

    with pytest.raises(MemberStartError, match="etcd2 exited"):
        asyncio.run(
            cluster_ops.wait_healthy(
                FakeClient({"b": 10**6}),  # type: ignore[arg-type]
                {"etcd2": "b"},
                60.0,
                poll_interval=0.5,
                check_failed=dies,
                timed_out=timed_out,
                sleep=Clock().sleep,
                clock=Clock(),
            )
        )
