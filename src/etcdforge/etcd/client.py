"""The etcd v3 gRPC client of etcdforge: endpoint choice, fail-over, health, and the typed public API.

Role: what the rest of etcdforge talks to. It decides *which* endpoint serves a call; the RPCs
themselves live in :mod:`._rpc`.

Invariants:
- One grpc.aio channel per endpoint, created on first use and reused until :meth:`EtcdClient.close`.
- Read-only calls (and idempotent ones) fail over to the next endpoint when one is unreachable, has no
  leader, or fails TLS. Non-idempotent calls (put, delete, txn, membership changes) fail over only while
  *connecting* — once a request may have been sent it is never re-sent elsewhere, so nothing is applied
  twice.
- The endpoint that last worked is tried first, so a dead first endpoint costs one failure, not one per
  call.
- Auth administration follows the same rule: calls etcd answers alike when repeated (status, reads,
  enable/disable, granting) fail over; the others (add, delete, revoke) are sent once.
- Every call has a deadline (``timeout``); errors are always :class:`~etcdforge.errors.EtcdError`.
- grpc and protobuf are imported on the first call, not at import time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from etcdforge.errors import EtcdError, EtcdTLSError, EtcdUnavailable

from .failures import EtcdServerError, is_failover_error
from .tlsdiag import split_endpoint
from .types import (
    Alarm,
    AuthStatus,
    GetResult,
    HashKV,
    Health,
    Member,
    MemberStatus,
    Permission,
    TlsFiles,
    TxnResult,
)

if TYPE_CHECKING:
    from ._rpc import Rpc

T = TypeVar("T")

Key = bytes | str


def _b(value: Key) -> bytes:
    return value.encode() if isinstance(value, str) else value


class EtcdClient:
    """Async client for a set of member endpoints (``https://IP:PORT`` or ``http://IP:PORT``).

    Use as ``async with EtcdClient(...) as c:`` or call :meth:`close`. Methods accept ``endpoint=`` to
    address one member — any member's URL, also one the cluster listed that ``endpoints`` lacks (a
    learner an interrupted ``member add`` left, say); otherwise the first working endpoint serves.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        tls: TlsFiles | None,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(endpoints, str):
            raise TypeError("endpoints must be a sequence of URLs, not a single string")
        if not endpoints:
            raise ValueError("EtcdClient needs at least one endpoint")
        for ep in endpoints:
            split_endpoint(ep)  # validates early, before any network activity
        self.endpoints: tuple[str, ...] = tuple(dict.fromkeys(endpoints))
        self.tls = tls
        self.timeout = timeout
        self._clock = clock
        self._rpc_obj: Rpc | None = None
        self._preferred = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def _rpc(self) -> Rpc:
        if self._rpc_obj is None:
            from ._rpc import Rpc  # deferred: pulls in grpc and protobuf

            self._rpc_obj = Rpc(self.tls)
        return self._rpc_obj

    async def close(self) -> None:
        if self._rpc_obj is not None:
            rpc, self._rpc_obj = self._rpc_obj, None
            await rpc.close()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- endpoint selection ---------------------------------------------------------------------------

    def _order(self, endpoint: str | None) -> tuple[str, ...]:
        if endpoint is not None:
            split_endpoint(endpoint)  # a malformed URL is a bug: ValueError
            return (endpoint,)
        n = self._preferred
        return self.endpoints[n:] + self.endpoints[:n]

    def _remember(self, endpoint: str) -> None:
        if endpoint in self.endpoints:
            self._preferred = self.endpoints.index(endpoint)

    @staticmethod
    def _combine(errors: list[EtcdError]) -> EtcdError:
        if len(errors) == 1:
            return errors[0]
        text = "no endpoint could serve the request: " + "; ".join(e.message for e in errors)
        if all(isinstance(e, EtcdTLSError) for e in errors):
            return EtcdTLSError(text)
        return EtcdUnavailable(text)

    async def _read(self, endpoint: str | None, call: Callable[[str], Awaitable[T]]) -> T:
        """Run a read-only/idempotent call, failing over on errors another member may not have."""
        errors: list[EtcdError] = []
        for ep in self._order(endpoint):
            try:
                result = await call(ep)
            except EtcdError as exc:
                if not is_failover_error(exc):
                    raise
                errors.append(exc)
                continue
            self._remember(ep)
            return result
        raise self._combine(errors)

    async def _write(self, endpoint: str | None, call: Callable[[str], Awaitable[T]]) -> T:
        """Run a non-idempotent call on the first endpoint we can *connect* to; never re-send it."""
        errors: list[EtcdError] = []
        for ep in self._order(endpoint):
            try:
                await self._rpc.connect(ep, self.timeout)
            except EtcdError as exc:
                errors.append(exc)
                continue
            self._remember(ep)
            return await call(ep)
        raise self._combine(errors)

    # -- KV -------------------------------------------------------------------------------------------

    async def put(self, key: Key, value: Key, *, endpoint: str | None = None) -> int:
        """Store ``value`` at ``key``; return the store revision of the write."""
        k, v = _b(key), _b(value)
        return await self._write(endpoint, lambda ep: self._rpc.put(ep, k, v, timeout=self.timeout))

    async def get(
        self,
        key: Key,
        *,
        prefix: bool = False,
        keys_only: bool = False,
        serializable: bool = False,
        limit: int = 0,
        revision: int = 0,
        endpoint: str | None = None,
        count_only: bool = False,
    ) -> GetResult:
        """Read ``key`` (or every key under it with ``prefix``; ``b""`` with ``prefix``: every key).
        Linearizable unless ``serializable``; ``count_only``: only the count."""
        k = _b(key)
        return await self._read(
            endpoint,
            lambda ep: self._rpc.range(
                ep,
                k,
                prefix=prefix,
                keys_only=keys_only,
                count_only=count_only,
                serializable=serializable,
                limit=limit,
                revision=revision,
                timeout=self.timeout,
            ),
        )

    async def delete(self, key: Key, *, prefix: bool = False, endpoint: str | None = None) -> int:
        """Delete ``key`` (or every key under it); return how many keys were deleted."""
        k = _b(key)
        return await self._write(
            endpoint, lambda ep: self._rpc.delete(ep, k, prefix=prefix, timeout=self.timeout)
        )

    async def txn(self, key: Key, value: Key, *, mod_revision: int, endpoint: str | None = None) -> TxnResult:
        """Compare-and-swap: put ``value`` iff ``key``'s mod_revision is ``mod_revision`` (0 = absent).

        On failure the result carries the key's current state, ready for the next attempt.
        """
        k, v = _b(key), _b(value)
        return await self._write(
            endpoint, lambda ep: self._rpc.cas_put(ep, k, v, mod_revision=mod_revision, timeout=self.timeout)
        )

    async def compact(self, revision: int, *, physical: bool = False, endpoint: str | None = None) -> None:
        """Compact history up to ``revision`` (cluster-wide, idempotent)."""
        await self._read(
            endpoint, lambda ep: self._rpc.compact(ep, revision, physical=physical, timeout=self.timeout)
        )

    # -- membership -----------------------------------------------------------------------------------

    async def member_list(
        self, linearizable: bool = True, *, endpoint: str | None = None
    ) -> tuple[Member, ...]:
        """The members of the cluster. ``linearizable`` needs etcd ≥ 3.5; 3.4 ignores it."""
        return await self._read(
            endpoint, lambda ep: self._rpc.member_list(ep, linearizable=linearizable, timeout=self.timeout)
        )

    async def member_add(
        self, peer_urls: Sequence[str], *, learner: bool, endpoint: str | None = None
    ) -> tuple[Member, tuple[Member, ...]]:
        """Add a member; return it and the member list after the change."""
        urls = tuple(peer_urls)
        return await self._write(
            endpoint, lambda ep: self._rpc.member_add(ep, urls, learner=learner, timeout=self.timeout)
        )

    async def member_remove(self, member_id: int, *, endpoint: str | None = None) -> tuple[Member, ...]:
        """Remove a member; return the member list after the change."""
        return await self._write(
            endpoint, lambda ep: self._rpc.member_remove(ep, member_id, timeout=self.timeout)
        )

    async def member_promote(self, member_id: int, *, endpoint: str | None = None) -> tuple[Member, ...]:
        """Promote a learner to voter (it must have caught up: reason ``learner_not_ready`` otherwise)."""
        return await self._write(
            endpoint, lambda ep: self._rpc.member_promote(ep, member_id, timeout=self.timeout)
        )

    # -- maintenance ----------------------------------------------------------------------------------

    async def status(self, endpoint: str) -> MemberStatus:
        """Maintenance.Status of one member."""
        return await self._rpc.status(self._order(endpoint)[0], timeout=self.timeout)

    async def status_all(self) -> tuple[MemberStatus | EtcdError, ...]:
        """Status of every endpoint, concurrently; an endpoint that fails yields its error instead."""

        async def one(ep: str) -> MemberStatus | EtcdError:
            try:
                return await self.status(ep)
            except EtcdError as exc:
                return exc

        return tuple(await asyncio.gather(*(one(ep) for ep in self.endpoints)))

    async def leader(self) -> MemberStatus:
        """Status of the endpoint that is the leader (by its own account). Raises if none is reachable."""
        statuses = await self.status_all()
        for st in statuses:
            if isinstance(st, MemberStatus) and st.is_leader:
                return st
        errors = [s for s in statuses if isinstance(s, EtcdError)]
        detail = "; ".join(e.message for e in errors)
        raise EtcdUnavailable(
            "no reachable endpoint is the leader" + (f" ({detail})" if detail else ""),
            hint="pass every member's endpoint so the leader is among them",
        )

    async def move_leader(self, target_id: int) -> None:
        """Transfer leadership to ``target_id``; the request goes to the current leader, as etcd requires."""
        current = await self.leader()
        if current.member_id == target_id:
            return  # already the leader: nothing to transfer
        await self._rpc.move_leader(current.endpoint, target_id, timeout=self.timeout)

    async def health(self, endpoint: str) -> Health:
        """Probe like ``etcdctl endpoint health``: linearizable Get("health"), then AlarmList. Never raises
        for an unhealthy member; ``error`` holds the diagnosed cause."""
        ep = self._order(endpoint)[0]
        start = self._clock()

        def result(error: str | None) -> Health:
            return Health(endpoint=ep, healthy=error is None, took=self._clock() - start, error=error)

        try:
            await self._rpc.range(
                ep,
                b"health",
                prefix=False,
                keys_only=False,
                serializable=False,
                limit=0,
                revision=0,
                timeout=self.timeout,
            )
        except EtcdServerError as exc:
            if exc.reason != "permission_denied":  # etcdctl: auth says no, but the member answered
                return result(exc.message)
        except EtcdError as exc:
            return result(exc.message)
        try:
            alarms = await self._rpc.alarm_list(ep, timeout=self.timeout)
        except EtcdError as exc:
            return result(f"failed to list alarms: {exc.message}")
        if alarms:
            names = sorted({a.alarm for a in alarms})
            return result("Active Alarm(s): " + ", ".join(names))
        return result(None)

    async def health_all(self) -> tuple[Health, ...]:
        """:meth:`health` of every endpoint, concurrently, in endpoint order."""
        return tuple(await asyncio.gather(*(self.health(ep) for ep in self.endpoints)))

    async def alarms(self, *, endpoint: str | None = None) -> tuple[Alarm, ...]:
        """Active alarms (cluster-wide)."""
        return await self._read(endpoint, lambda ep: self._rpc.alarm_list(ep, timeout=self.timeout))

    async def disarm(self, alarm: Alarm | None = None, *, endpoint: str | None = None) -> tuple[Alarm, ...]:
        """Deactivate ``alarm``, or every active alarm when None (etcd has no "disarm all" on the wire).

        Returns the alarms that were deactivated. Deactivation is idempotent, hence safe to fail over.
        """
        targets = (alarm,) if alarm is not None else await self.alarms(endpoint=endpoint)
        done: list[Alarm] = []
        for target in targets:

            async def deactivate(ep: str, target: Alarm = target) -> tuple[Alarm, ...]:
                return await self._rpc.alarm_deactivate(ep, target, timeout=self.timeout)

            done.extend(await self._read(endpoint, deactivate))
        return tuple(done)

    async def defragment(self, endpoint: str, *, timeout: float = 120.0) -> None:
        """Defragment one member (blocks that member meanwhile). The generous deadline matches big DBs."""
        await self._rpc.defragment(self._order(endpoint)[0], timeout=timeout)

    async def hash_kv(self, endpoint: str, revision: int = 0) -> HashKV:
        """HashKV of one member at ``revision`` (0 = latest), for cross-member consistency checks."""
        return await self._rpc.hash_kv(self._order(endpoint)[0], revision, timeout=self.timeout)

    async def snapshot(self, endpoint: str, *, timeout: float | None = None) -> AsyncIterator[bytes]:
        """Stream the member's database. The concatenation is the DB followed by its 32-byte SHA-256,
        the layout ``etcdutl snapshot restore`` checks. No deadline unless ``timeout`` is given."""
        async for chunk in self._rpc.snapshot(self._order(endpoint)[0], timeout=timeout):
            yield chunk

    # -- auth (users authenticate by their client certificate's CN) ---------------------------------

    async def auth_status(self, *, endpoint: str | None = None) -> AuthStatus:
        """Whether authentication is on (asked so that no member of any release applies anything)."""
        return await self._read(endpoint, lambda ep: self._rpc.auth_status(ep, timeout=self.timeout))

    async def auth_enable(self, *, endpoint: str | None = None) -> None:
        """Turn authentication on; the user ``root`` must hold the role ``root`` (reasons
        ``root_user_not_exist`` / ``root_role_not_granted``). Enabling twice is a no-op in etcd."""
        await self._read(endpoint, lambda ep: self._rpc.auth_enable(ep, timeout=self.timeout))

    async def auth_disable(self, *, endpoint: str | None = None) -> None:
        """Turn authentication off (needs the root role while it is on; a no-op when already off)."""
        await self._read(endpoint, lambda ep: self._rpc.auth_disable(ep, timeout=self.timeout))

    async def user_add(self, name: str, *, endpoint: str | None = None) -> None:
        """Add a user without a password: it can only log in with a client certificate whose CN is
        ``name``. Reason ``user_already_exists`` if it exists."""
        await self._write(endpoint, lambda ep: self._rpc.user_add(ep, name, timeout=self.timeout))

    async def user_get(self, name: str, *, endpoint: str | None = None) -> tuple[str, ...]:
        """The roles granted to user ``name`` (reason ``user_not_found`` if there is no such user)."""
        return await self._read(endpoint, lambda ep: self._rpc.user_get(ep, name, timeout=self.timeout))

    async def user_list(self, *, endpoint: str | None = None) -> tuple[str, ...]:
        """Every user's name."""
        return await self._read(endpoint, lambda ep: self._rpc.user_list(ep, timeout=self.timeout))

    async def user_delete(self, name: str, *, endpoint: str | None = None) -> None:
        """Delete a user: its certificate is refused from then on. etcd keeps ``root`` while auth is on
        (reason ``invalid_auth_mgmt``)."""
        await self._write(endpoint, lambda ep: self._rpc.user_delete(ep, name, timeout=self.timeout))

    async def user_grant_role(self, user: str, role: str, *, endpoint: str | None = None) -> None:
        """Grant ``role`` to ``user`` (granting a held role is a no-op in etcd). The role ``root``
        need not be added first."""
        await self._read(endpoint, lambda ep: self._rpc.user_grant_role(ep, user, role, timeout=self.timeout))

    async def user_revoke_role(self, user: str, role: str, *, endpoint: str | None = None) -> None:
        """Take ``role`` from ``user`` (reason ``role_not_granted`` if the user lacks it)."""
        await self._write(
            endpoint, lambda ep: self._rpc.user_revoke_role(ep, user, role, timeout=self.timeout)
        )

    async def role_add(self, name: str, *, endpoint: str | None = None) -> None:
        """Add a role without permissions (reason ``role_already_exists`` if it exists)."""
        await self._write(endpoint, lambda ep: self._rpc.role_add(ep, name, timeout=self.timeout))

    async def role_get(self, name: str, *, endpoint: str | None = None) -> tuple[Permission, ...]:
        """The permissions of role ``name`` (reason ``role_not_found`` if there is no such role)."""
        return await self._read(endpoint, lambda ep: self._rpc.role_get(ep, name, timeout=self.timeout))

    async def role_list(self, *, endpoint: str | None = None) -> tuple[str, ...]:
        """Every role's name."""
        return await self._read(endpoint, lambda ep: self._rpc.role_list(ep, timeout=self.timeout))

    async def role_delete(self, name: str, *, endpoint: str | None = None) -> None:
        """Delete a role and take it from every user (``root`` stays while auth is on)."""
        await self._write(endpoint, lambda ep: self._rpc.role_delete(ep, name, timeout=self.timeout))

    async def role_grant_permission(
        self, role: str, permission: Permission, *, endpoint: str | None = None
    ) -> None:
        """Grant ``permission`` to ``role``; a permission on the same range has its kind replaced."""
        await self._read(
            endpoint,
            lambda ep: self._rpc.role_grant_permission(ep, role, permission, timeout=self.timeout),
        )

    async def role_revoke_permission(
        self, role: str, key: Key, range_end: Key = b"", *, endpoint: str | None = None
    ) -> None:
        """Revoke the permission of ``role`` whose key and range end are exactly these (reason
        ``permission_not_granted`` if there is none)."""
        k, end = _b(key), _b(range_end)
        await self._write(
            endpoint, lambda ep: self._rpc.role_revoke_permission(ep, role, k, end, timeout=self.timeout)
        )
