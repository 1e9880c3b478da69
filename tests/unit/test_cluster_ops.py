"""The shared health gate as pure async code: a fake client at our own port, a fake clock, no sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from etcdforge.errors import MemberStartError
from etcdforge.etcd import Health
from etcdforge.runtime import cluster_ops


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


async def never_failed(pending: frozenset[str], polls: int) -> dict[str, MemberStartError]:
    return {}


async def timed_out(name: str, error: str) -> MemberStartError:
    return MemberStartError(f"{name}: {error}", member=name)


def test_waits_until_every_member_knows_a_leader_then_reads() -> None:
    client = FakeClient({"a": 0, "b": 3})
    clock = Clock()
    waited = asyncio.run(
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
    assert waited.took == pytest.approx(0.15)  # three polls of etcd2 before it knew a leader
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

    async def dies(pending: frozenset[str], polls: int) -> dict[str, MemberStartError]:
        return {"etcd2": MemberStartError("etcd2 exited", member="etcd2")} if polls == 2 else {}

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


def wait(
    ready_after: dict[str, int],
    *,
    need: int | None = None,
    dead: tuple[str, ...] = (),
    timeout: float = 60.0,
    polls_seen: list[int] | None = None,
) -> object:
    """One wait on a fake cluster: members ready after N polls; ``dead`` ones exit from the 2nd poll on."""
    clock = Clock()

    async def check_failed(pending: frozenset[str], polls: int) -> dict[str, MemberStartError]:
        if polls_seen is not None:
            polls_seen.append(polls)
        return {n: MemberStartError(f"{n} exited", member=n) for n in dead} if polls >= 1 else {}

    return asyncio.run(
        cluster_ops.wait_healthy(
            FakeClient({f"u{n}": ready for n, ready in ready_after.items()}),  # type: ignore[arg-type]
            {n: f"u{n}" for n in ready_after},
            timeout,
            need=need,
            poll_interval=0.5,
            check_failed=check_failed,
            timed_out=timed_out,
            sleep=clock.sleep,
            clock=clock,
        )
    )


def test_a_quorum_gate_does_not_wait_for_a_member_that_is_down() -> None:
    waited = wait({"etcd1": 0, "etcd2": 0, "etcd3": 0, "etcd5": 10**6}, need=3)
    assert isinstance(waited, cluster_ops.Waited)
    assert (waited.healthy, waited.down) == (("etcd1", "etcd2", "etcd3"), ("etcd5",))
    assert waited.took == 0.0
    assert waited.note() == "3 of 4 healthy in 0.0s (etcd5 not healthy)"
    with pytest.raises(MemberStartError, match="etcd2: no leader yet") as info:
        wait({"etcd1": 0, "etcd2": 10**6, "etcd5": 10**6}, need=2, timeout=5.0)
    assert info.value.healthy == ("etcd1",)


def test_waiting_for_all_a_dead_member_fails_the_wait_but_only_once_the_rest_is_known() -> None:
    """`up` must learn whether the others run with quorum before it decides to keep them running."""
    with pytest.raises(MemberStartError, match="etcd2 exited") as info:
        wait({"etcd1": 2, "etcd2": 10**6, "etcd3": 4}, dead=("etcd2",))
    assert info.value.healthy == ("etcd1", "etcd3")
    # two of three dead: no quorum can come up, so there is nothing to wait for
    polls: list[int] = []
    with pytest.raises(MemberStartError, match="etcd2 exited") as info:
        wait({"etcd1": 10**6, "etcd2": 10**6, "etcd3": 10**6}, dead=("etcd2", "etcd3"), polls_seen=polls)
    assert polls == [0, 1] and info.value.healthy == ()
