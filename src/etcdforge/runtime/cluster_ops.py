"""Membership and health calls, the same in every mode, against the :class:`ClusterPort`.

Each function is idempotent where etcd allows it: adding a learner whose peer URL is already registered
returns the existing one; removing a member that is already gone is not an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from etcdforge import topology
from etcdforge.errors import EtcdError, EtcdUnavailable, MemberStartError, StepError
from etcdforge.etcd import EtcdServerError, Health, Member, MemberStatus, format_member_id, retry
from etcdforge.etcd.types import Alarm, GetResult, HashKV
from etcdforge.plan import AddLearner, MoveLeader, PromoteLearner, RemoveMember


class ClusterPort(Protocol):
    """What the runtime asks of etcd (the admin client in practice; a fake cluster in unit tests)."""

    async def member_list(
        self, linearizable: bool = True, *, endpoint: str | None = None
    ) -> tuple[Member, ...]: ...

    async def member_add(
        self, peer_urls: Sequence[str], *, learner: bool, endpoint: str | None = None
    ) -> tuple[Member, tuple[Member, ...]]: ...

    async def member_remove(self, member_id: int, *, endpoint: str | None = None) -> tuple[Member, ...]: ...

    async def member_promote(self, member_id: int, *, endpoint: str | None = None) -> tuple[Member, ...]: ...

    async def move_leader(self, target_id: int) -> None: ...

    async def status(self, endpoint: str) -> MemberStatus: ...

    async def health(self, endpoint: str) -> Health: ...

    def snapshot(self, endpoint: str, *, timeout: float | None = None) -> AsyncIterator[bytes]: ...

    async def hash_kv(self, endpoint: str, revision: int = 0) -> HashKV: ...

    async def defragment(self, endpoint: str, *, timeout: float = 120.0) -> None: ...

    async def compact(
        self, revision: int, *, physical: bool = False, endpoint: str | None = None
    ) -> None: ...

    async def alarms(self, *, endpoint: str | None = None) -> tuple[Alarm, ...]: ...

    async def disarm(
        self, alarm: Alarm | None = None, *, endpoint: str | None = None
    ) -> tuple[Alarm, ...]: ...

    async def put(self, key: bytes, value: bytes, *, endpoint: str | None = None) -> int: ...

    async def delete(self, key: bytes, *, prefix: bool = False, endpoint: str | None = None) -> int: ...

    async def get(
        self,
        key: bytes,
        *,
        prefix: bool = False,
        count_only: bool = False,
        serializable: bool = False,
        revision: int = 0,
        endpoint: str | None = None,
    ) -> GetResult: ...


#: polled while waiting for a learner to catch up: etcd answers at once whether it is in sync, so a
#: short constant interval promotes as soon as it may (a backoff only adds idle waiting here)
PROMOTE_INTERVAL = 0.25
#: the learner's process/unit is checked every this many attempts (a check costs a round trip)
ALIVE_EVERY = 4


async def find_by_peer_url(client: ClusterPort, peer_url: str) -> Member | None:
    return next((m for m in await client.member_list() if peer_url in m.peer_urls), None)


# Every change below lists the members (a linearizable read on 3.5) right before it proposes: besides
# making a retry idempotent, that read is a barrier. raft drops a configuration change proposed before
# it has advanced past the previous one, and the proposer then waits out its whole deadline; etcd
# answers a change once applied, which on a leader can come before raft advances (it applies while
# still syncing the same entries). A linearizable read is answered from a later raft batch, so after
# it the previous change is behind raft. Measured on 3.5.1, one member, 120 back-to-back changes: 5
# timed out without the read, none with it (3.4.23: none either way).

#: etcd refuses membership changes until the leader has been connected to a quorum for its health
#: interval (5 s) — right after a start or a restart that is a wait, not an error
RECONFIG_RETRY_SECONDS = 30.0


def _reconfig_transient(exc: BaseException) -> bool:
    return isinstance(exc, EtcdUnavailable) or (
        isinstance(exc, EtcdServerError) and exc.reason == "unhealthy_cluster"
    )


async def add_learner(
    client: ClusterPort,
    peer_url: str,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    existing = await find_by_peer_url(client, peer_url)
    if existing is not None:
        return f"already registered as {format_member_id(existing.id)}"

    async def once() -> Member:
        found = await find_by_peer_url(client, peer_url)  # an earlier attempt may have gone through
        if found is not None:
            return found
        member, _ = await client.member_add([peer_url], learner=True)
        return member

    member = await retry(
        once, timeout=RECONFIG_RETRY_SECONDS, should_retry=_reconfig_transient, sleep=sleep, clock=clock
    )
    return f"learner {format_member_id(member.id)}"


async def promote_when_synced(
    client: ClusterPort,
    name: str,
    peer_url: str,
    timeout: float,
    *,
    alive: Callable[[], Awaitable[None]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Promote the learner at ``peer_url`` as soon as etcd allows it (in sync: raft match ≥ 90 %).

    ``alive`` raises if the learner's process or unit died, so a member that never joins is detected
    long before ``timeout``.
    """
    start = clock()
    attempt = 0
    while True:
        member = await find_by_peer_url(client, peer_url)
        if member is None:
            raise StepError(f"{name} is no longer registered in the cluster", step_id=f"{name}/promote")
        if not member.is_learner:
            return f"voting member {format_member_id(member.id)}"
        if attempt % ALIVE_EVERY == ALIVE_EVERY - 1:
            await alive()
        if member.name:  # started: etcd refuses to promote a learner that never started
            try:
                # to the leader: before 3.5.28 a follower forwarding a promote fails with auth on
                await client.member_promote(member.id, endpoint=await leader_url(client))
                return f"promoted after {clock() - start:.1f}s"
            except EtcdServerError as exc:
                if exc.reason != "learner_not_ready":
                    raise
            except EtcdError:
                pass  # a leader change or a busy member: try again
        if clock() - start > timeout:
            raise StepError(
                f"{name} did not catch up within {timeout:.0f}s (etcd: learner not in sync)",
                step_id=f"{name}/promote",
            )
        await sleep(PROMOTE_INTERVAL)
        attempt += 1


async def leader_url(client: ClusterPort) -> str | None:
    """The leader's client URL as the voters report it; None when it cannot be told (any member then)."""
    try:
        members = await client.member_list()
    except EtcdError:
        return None
    urls = {m.id: m.client_urls[0] for m in members if m.client_urls and not m.is_learner}
    for url in urls.values():
        try:
            leader = (await client.status(url)).leader
        except EtcdError:
            continue
        return urls.get(leader)
    return None


async def remove(
    client: ClusterPort,
    member_id: int,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    async def once() -> str:
        members = await client.member_list()
        if not any(m.id == member_id for m in members):
            return "already removed"
        # ask another member: the removed one shuts down while answering ("server stopped"); one that is
        # down (degraded is normal) is passed over for the next
        others: list[str | None] = [
            url for m in members if m.id != member_id and not m.is_learner for url in m.client_urls[:1]
        ]
        last: EtcdError | None = None
        for endpoint in others or [None]:
            try:
                await client.member_remove(member_id, endpoint=endpoint)
                return f"removed {format_member_id(member_id)}"
            except EtcdError as exc:
                if not any(m.id == member_id for m in await client.member_list()):
                    return f"removed {format_member_id(member_id)}"
                if not isinstance(exc, EtcdUnavailable):
                    raise
                last = exc
        assert last is not None
        raise last

    return await retry(
        once, timeout=RECONFIG_RETRY_SECONDS, should_retry=_reconfig_transient, sleep=sleep, clock=clock
    )


async def move_leader(client: ClusterPort, to: str) -> str:
    target = next((m for m in await client.member_list() if m.name == to), None)
    if target is None:
        raise EtcdError(f"{to} is not a member of the cluster")
    await client.move_leader(target.id)
    return f"leader is now {to}"


ClusterAction = AddLearner | PromoteLearner | RemoveMember | MoveLeader


async def perform(
    client: ClusterPort,
    action: ClusterAction,
    *,
    alive: Callable[[str], Awaitable[None]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Carry out a membership action (the same in every mode; ``alive(member)`` is the mode's liveness
    check for a starting member)."""
    if isinstance(action, AddLearner):
        return await add_learner(client, action.peer_url, sleep=sleep, clock=clock)
    if isinstance(action, PromoteLearner):
        return await promote_when_synced(
            client,
            action.member,
            action.peer_url,
            action.timeout,
            alive=lambda: alive(action.member),
            sleep=sleep,
            clock=clock,
        )
    if isinstance(action, RemoveMember):
        return await remove(client, action.member_id, sleep=sleep, clock=clock)
    return await move_leader(client, action.to)


async def ready_health(client: ClusterPort, endpoint: str, *, despite_alarms: bool = False) -> Health:
    """Health for a poller: first a Status (serializable, answers at once) to see that the member knows
    a leader, and only then the linearizable read of :meth:`EtcdClient.health`.

    Without the first step a read sent before the first election waits for etcd's read-index retry
    (up to 0.5 s after the leader appears), which would be pure idle time in every bootstrap.
    """
    start = time.monotonic()
    try:
        status = await client.status(endpoint)
    except EtcdError as exc:
        return Health(endpoint=endpoint, healthy=False, took=time.monotonic() - start, error=exc.message)
    if not status.leader:
        return Health(endpoint=endpoint, healthy=False, took=time.monotonic() - start, error="no leader yet")
    if despite_alarms:  # the linearizable read alone (etcd's health adds "no active alarm")
        try:
            await client.get(b"health", count_only=True, endpoint=endpoint)
        except EtcdError as exc:
            return Health(endpoint=endpoint, healthy=False, took=time.monotonic() - start, error=exc.message)
        return Health(endpoint=endpoint, healthy=True, took=time.monotonic() - start, error=None)
    return await client.health(endpoint)


@dataclass(frozen=True)
class Waited:
    """What a health wait saw: how long it took and who was not healthy when it ended."""

    took: float
    healthy: tuple[str, ...]
    down: tuple[str, ...]

    def note(self) -> str:
        if not self.down:
            return f"{len(self.healthy)} healthy in {self.took:.1f}s"
        return (
            f"{len(self.healthy)} of {len(self.healthy) + len(self.down)} healthy in {self.took:.1f}s "
            f"({', '.join(self.down)} not healthy)"
        )


async def wait_healthy(
    client: ClusterPort,
    urls: Mapping[str, str],
    timeout: float,
    *,
    need: int | None = None,
    despite_alarms: bool = False,
    poll_interval: float,
    check_failed: Callable[[frozenset[str], int], Awaitable[Mapping[str, MemberStartError]]],
    timed_out: Callable[[str, str], Awaitable[MemberStartError]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Waited:
    """Poll the members in ``urls`` (name -> client URL) until enough are healthy.

    ``need`` None: every member must be healthy; a number: that many suffice (a quorum gate, so a member
    that is down does not hold up an operation that does not need it). Before each poll
    ``check_failed(pending, polls)`` names members that died (the mode knows how: a process that exited,
    a unit that failed); the wait goes on for the others while ``need`` (or, waiting for all, a quorum)
    can still be reached, so the caller learns whether the cluster runs without them. A failure that
    leaves too few is raised at once; so is, at the end, a failure when every member was needed. After
    ``timeout`` the error from ``timed_out(member, last_error)`` is raised. Raised errors carry the
    members that were healthy (:attr:`MemberStartError.healthy`).
    """
    start = clock()
    names = tuple(urls)
    enough = len(names) if need is None else need
    # with every member needed, keep waiting after a failure only to learn if a quorum runs
    floor = topology.quorum(len(names)) if need is None else need
    pending = set(names)
    healthy: list[str] = []
    failed: dict[str, MemberStartError] = {}
    last: dict[str, str] = {}
    polls = 0

    def done(error: MemberStartError) -> MemberStartError:
        error.healthy = tuple(n for n in names if n in healthy)
        return error

    while True:
        for name, error in (await check_failed(frozenset(pending), polls)).items():
            if name in pending:
                pending.discard(name)
                failed[name] = error
        if len(names) - len(failed) < floor:
            raise done(next(iter(failed.values())))
        checking = sorted(pending)
        results = await asyncio.gather(
            *(ready_health(client, urls[n], despite_alarms=despite_alarms) for n in checking)
        )
        for name, health in zip(checking, results, strict=True):
            if health.healthy:
                pending.discard(name)
                healthy.append(name)
            else:
                last[name] = health.error or "unhealthy"
        if len(healthy) >= enough or not pending:
            break
        polls += 1
        if clock() - start > timeout:
            name = sorted(pending)[0]
            raise done(await timed_out(name, last.get(name, "?")))
        await sleep(poll_interval)
    if failed and need is None:
        raise done(next(iter(failed.values())))
    return Waited(
        clock() - start, tuple(n for n in names if n in healthy), tuple(n for n in names if n not in healthy)
    )
