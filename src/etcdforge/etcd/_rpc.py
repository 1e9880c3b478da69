"""Typed, single-endpoint etcd RPCs: build the protobuf request, call, convert the answer.

Role: the layer between :class:`~etcdforge.etcd.client.EtcdClient` (endpoint choice, fail-over, health
logic) and the generated stubs. Every method targets exactly one endpoint, applies a deadline, and
returns only :mod:`.types` values; errors leave through :meth:`ChannelPool.guard`.

Invariant: this module (and so grpc and protobuf) is imported only when a client makes its first call,
keeping ``import etcdforge.etcd`` cheap for the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from etcdforge.errors import EtcdRequestError

from ._channels import ChannelPool
from ._gen import auth_pb2, auth_pb2_grpc, cluster_pb2, common_pb2, kv_pb2, maintenance_pb2
from .failures import EtcdServerError
from .types import (
    Alarm,
    AlarmName,
    AuthStatus,
    GetResult,
    HashKV,
    KeyValue,
    Member,
    MemberStatus,
    Permission,
    PermissionKind,
    TlsFiles,
    TxnResult,
    prefix_end,
)


def _kv(kv: common_pb2.KeyValue) -> KeyValue:
    return KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
    )


def _member(m: cluster_pb2.Member) -> Member:
    return Member(
        id=m.ID,
        name=m.name,
        peer_urls=tuple(m.peerURLs),
        client_urls=tuple(m.clientURLs),
        is_learner=m.isLearner,
    )


def _alarm_name(value: int) -> AlarmName:
    name = maintenance_pb2.AlarmType.Name(value)
    return cast(AlarmName, name)


_PERM_TYPES: dict[PermissionKind, auth_pb2.Permission.Type] = {
    "read": auth_pb2.Permission.READ,
    "write": auth_pb2.Permission.WRITE,
    "readwrite": auth_pb2.Permission.READWRITE,
}
_PERM_KINDS: dict[int, PermissionKind] = {wire: kind for kind, wire in _PERM_TYPES.items()}


def permission_message(p: Permission) -> auth_pb2.Permission:
    return auth_pb2.Permission(permType=_PERM_TYPES[p.kind], key=p.key, range_end=p.range_end)


def permission_value(p: auth_pb2.Permission, endpoint: str) -> Permission:
    """A role's permission as etcd reports it; a permission type newer than etcd's three is refused."""
    kind = _PERM_KINDS.get(p.permType)
    if kind is None:
        raise EtcdRequestError(
            f"{endpoint}: etcd reported an unknown permission type {int(p.permType)}",
            code="UNKNOWN",
            endpoint=endpoint,
        )
    return Permission(kind=kind, key=p.key, range_end=p.range_end)


class Rpc:
    """Per-endpoint RPCs over a :class:`ChannelPool`. Each method's ``timeout`` is its gRPC deadline."""

    def __init__(self, tls: TlsFiles | None) -> None:
        self.pool = ChannelPool(tls)
        self._auth_stubs: dict[str, Any] = {}

    async def connect(self, endpoint: str, timeout: float) -> None:
        await self.pool.connect(endpoint, timeout)

    async def _unary(
        self, endpoint: str, service: str, method: str, request: Any, timeout: float | None
    ) -> Any:
        stub = getattr(self.pool.stubs(endpoint), service)
        async with self.pool.guard(endpoint, timeout):
            return await getattr(stub, method)(request, timeout=timeout)

    async def _auth(self, endpoint: str, method: str, request: Any, timeout: float) -> Any:
        stub = self._auth_stubs.get(endpoint)
        if stub is None:
            channel = self.pool.channel(endpoint)
            stub = self._auth_stubs[endpoint] = auth_pb2_grpc.AuthStub(channel)  # type: ignore[no-untyped-call]
        async with self.pool.guard(endpoint, timeout):
            return await getattr(stub, method)(request, timeout=timeout)

    # -- KV -------------------------------------------------------------------------------------------

    async def range(
        self,
        endpoint: str,
        key: bytes,
        *,
        prefix: bool,
        keys_only: bool,
        count_only: bool = False,
        serializable: bool,
        limit: int,
        revision: int,
        timeout: float,
    ) -> GetResult:
        if prefix:
            # etcd treats key b"\0" with range_end b"\0" as "every key" — what a prefix of b"" means.
            start, end = (key or b"\0"), prefix_end(key)
        else:
            start, end = key, b""
        req = kv_pb2.RangeRequest(
            key=start,
            range_end=end,
            keys_only=keys_only,
            count_only=count_only,
            serializable=serializable,
            limit=limit,
            revision=revision,
        )
        resp: kv_pb2.RangeResponse = await self._unary(endpoint, "kv", "Range", req, timeout)
        return GetResult(
            kvs=tuple(_kv(kv) for kv in resp.kvs),
            revision=resp.header.revision,
            count=resp.count,
            more=resp.more,
        )

    async def put(self, endpoint: str, key: bytes, value: bytes, *, timeout: float) -> int:
        req = kv_pb2.PutRequest(key=key, value=value)
        resp: kv_pb2.PutResponse = await self._unary(endpoint, "kv", "Put", req, timeout)
        return resp.header.revision

    async def delete(self, endpoint: str, key: bytes, *, prefix: bool, timeout: float) -> int:
        req = kv_pb2.DeleteRangeRequest(
            key=(key or b"\0") if prefix else key, range_end=prefix_end(key) if prefix else b""
        )
        resp: kv_pb2.DeleteRangeResponse = await self._unary(endpoint, "kv", "DeleteRange", req, timeout)
        return resp.deleted

    async def cas_put(
        self, endpoint: str, key: bytes, value: bytes, *, mod_revision: int, timeout: float
    ) -> TxnResult:
        """If ``key``'s mod_revision equals ``mod_revision`` (0 = key absent) put ``value``, else read it."""
        req = kv_pb2.TxnRequest(
            compare=[
                kv_pb2.Compare(
                    result=kv_pb2.Compare.EQUAL, target=kv_pb2.Compare.MOD, key=key, mod_revision=mod_revision
                )
            ],
            success=[kv_pb2.RequestOp(request_put=kv_pb2.PutRequest(key=key, value=value))],
            failure=[kv_pb2.RequestOp(request_range=kv_pb2.RangeRequest(key=key))],
        )
        resp: kv_pb2.TxnResponse = await self._unary(endpoint, "kv", "Txn", req, timeout)
        current = None
        if not resp.succeeded and resp.responses:
            kvs = resp.responses[0].response_range.kvs
            current = _kv(kvs[0]) if kvs else None
        return TxnResult(succeeded=resp.succeeded, revision=resp.header.revision, current=current)

    async def compact(self, endpoint: str, revision: int, *, physical: bool, timeout: float) -> None:
        req = kv_pb2.CompactionRequest(revision=revision, physical=physical)
        await self._unary(endpoint, "kv", "Compact", req, timeout)

    # -- Cluster --------------------------------------------------------------------------------------

    async def member_list(self, endpoint: str, *, linearizable: bool, timeout: float) -> tuple[Member, ...]:
        req = cluster_pb2.MemberListRequest(linearizable=linearizable)
        resp: cluster_pb2.MemberListResponse = await self._unary(
            endpoint, "cluster", "MemberList", req, timeout
        )
        return tuple(_member(m) for m in resp.members)

    async def member_add(
        self, endpoint: str, peer_urls: Sequence[str], *, learner: bool, timeout: float
    ) -> tuple[Member, tuple[Member, ...]]:
        req = cluster_pb2.MemberAddRequest(peerURLs=list(peer_urls), isLearner=learner)
        resp: cluster_pb2.MemberAddResponse = await self._unary(
            endpoint, "cluster", "MemberAdd", req, timeout
        )
        return _member(resp.member), tuple(_member(m) for m in resp.members)

    async def member_remove(self, endpoint: str, member_id: int, *, timeout: float) -> tuple[Member, ...]:
        req = cluster_pb2.MemberRemoveRequest(ID=member_id)
        resp: cluster_pb2.MemberRemoveResponse = await self._unary(
            endpoint, "cluster", "MemberRemove", req, timeout
        )
        return tuple(_member(m) for m in resp.members)

    async def member_promote(self, endpoint: str, member_id: int, *, timeout: float) -> tuple[Member, ...]:
        req = cluster_pb2.MemberPromoteRequest(ID=member_id)
        resp: cluster_pb2.MemberPromoteResponse = await self._unary(
            endpoint, "cluster", "MemberPromote", req, timeout
        )
        return tuple(_member(m) for m in resp.members)

    # -- Maintenance ----------------------------------------------------------------------------------

    async def status(self, endpoint: str, *, timeout: float) -> MemberStatus:
        req = maintenance_pb2.StatusRequest()
        r: maintenance_pb2.StatusResponse = await self._unary(endpoint, "maintenance", "Status", req, timeout)
        return MemberStatus(
            endpoint=endpoint,
            member_id=r.header.member_id,
            cluster_id=r.header.cluster_id,
            version=r.version,
            db_size=r.dbSize,
            db_size_in_use=r.dbSizeInUse,
            leader=r.leader,
            raft_term=r.raftTerm,
            raft_index=r.raftIndex,
            raft_applied_index=r.raftAppliedIndex,
            is_learner=r.isLearner,
            errors=tuple(r.errors),
            revision=r.header.revision,
        )

    async def alarm(
        self, endpoint: str, *, action: int, member_id: int = 0, alarm: int = 0, timeout: float
    ) -> tuple[Alarm, ...]:
        req = maintenance_pb2.AlarmRequest(action=action, memberID=member_id, alarm=alarm)  # type: ignore[arg-type]
        resp: maintenance_pb2.AlarmResponse = await self._unary(
            endpoint, "maintenance", "Alarm", req, timeout
        )
        return tuple(Alarm(member_id=a.memberID, alarm=_alarm_name(a.alarm)) for a in resp.alarms)

    async def alarm_list(self, endpoint: str, *, timeout: float) -> tuple[Alarm, ...]:
        return await self.alarm(endpoint, action=maintenance_pb2.AlarmRequest.GET, timeout=timeout)

    async def alarm_deactivate(self, endpoint: str, alarm: Alarm, *, timeout: float) -> tuple[Alarm, ...]:
        return await self.alarm(
            endpoint,
            action=maintenance_pb2.AlarmRequest.DEACTIVATE,
            member_id=alarm.member_id,
            alarm=maintenance_pb2.AlarmType.Value(alarm.alarm),
            timeout=timeout,
        )

    async def defragment(self, endpoint: str, *, timeout: float) -> None:
        await self._unary(endpoint, "maintenance", "Defragment", maintenance_pb2.DefragmentRequest(), timeout)

    async def hash_kv(self, endpoint: str, revision: int, *, timeout: float) -> HashKV:
        req = maintenance_pb2.HashKVRequest(revision=revision)
        r: maintenance_pb2.HashKVResponse = await self._unary(endpoint, "maintenance", "HashKV", req, timeout)
        return HashKV(
            endpoint=endpoint,
            member_id=r.header.member_id,
            hash=r.hash,
            compact_revision=r.compact_revision,
            revision=r.header.revision,
        )

    async def move_leader(self, endpoint: str, target_id: int, *, timeout: float) -> None:
        req = maintenance_pb2.MoveLeaderRequest(targetID=target_id)
        await self._unary(endpoint, "maintenance", "MoveLeader", req, timeout)

    async def snapshot(self, endpoint: str, *, timeout: float | None) -> AsyncIterator[bytes]:
        stub = self.pool.stubs(endpoint).maintenance
        call = stub.Snapshot(maintenance_pb2.SnapshotRequest(), timeout=timeout)
        try:
            async with self.pool.guard(endpoint, timeout):
                async for chunk in call:
                    resp = cast(maintenance_pb2.SnapshotResponse, chunk)
                    if resp.blob:
                        yield resp.blob
        finally:
            call.cancel()  # a consumer that stops early must not leave the stream running

    # -- Auth ---------------------------------------------------------------------------------------

    async def auth_status(self, endpoint: str, *, timeout: float) -> AuthStatus:
        # Not the AuthStatus RPC: etcd 3.4 lacks it, and 3.5 proposes it through raft, so in a cluster
        # of 3.4 and 3.5 members (a rolling upgrade) every 3.4 member panics applying it ("not
        # implemented"; seen in our upgrade test). Authenticate with an empty name answers before raft on
        # every release: "authentication is not enabled" when auth is off, "authentication failed" when
        # it is on (no user has an empty name). Nothing changes; the member logs the refused login.
        try:
            await self._auth(endpoint, "Authenticate", auth_pb2.AuthenticateRequest(), timeout)
        except EtcdServerError as exc:
            if exc.reason == "auth_not_enabled":
                return AuthStatus(enabled=False)
            if exc.reason == "auth_failed":
                return AuthStatus(enabled=True)
            raise
        raise EtcdRequestError(
            f"{endpoint}: etcd accepted a login without a user name", code="UNKNOWN", endpoint=endpoint
        )

    async def auth_enable(self, endpoint: str, *, timeout: float) -> None:
        await self._auth(endpoint, "AuthEnable", auth_pb2.AuthEnableRequest(), timeout)

    async def auth_disable(self, endpoint: str, *, timeout: float) -> None:
        await self._auth(endpoint, "AuthDisable", auth_pb2.AuthDisableRequest(), timeout)

    async def user_add(self, endpoint: str, name: str, *, timeout: float) -> None:
        # Always without a password: our users log in with their certificate's CN, never with a password.
        req = auth_pb2.AuthUserAddRequest(name=name, options=auth_pb2.UserAddOptions(no_password=True))
        await self._auth(endpoint, "UserAdd", req, timeout)

    async def user_get(self, endpoint: str, name: str, *, timeout: float) -> tuple[str, ...]:
        req = auth_pb2.AuthUserGetRequest(name=name)
        resp: auth_pb2.AuthUserGetResponse = await self._auth(endpoint, "UserGet", req, timeout)
        return tuple(resp.roles)

    async def user_list(self, endpoint: str, *, timeout: float) -> tuple[str, ...]:
        resp: auth_pb2.AuthUserListResponse = await self._auth(
            endpoint, "UserList", auth_pb2.AuthUserListRequest(), timeout
        )
        return tuple(resp.users)

    async def user_delete(self, endpoint: str, name: str, *, timeout: float) -> None:
        await self._auth(endpoint, "UserDelete", auth_pb2.AuthUserDeleteRequest(name=name), timeout)

    async def user_grant_role(self, endpoint: str, user: str, role: str, *, timeout: float) -> None:
        req = auth_pb2.AuthUserGrantRoleRequest(user=user, role=role)
        await self._auth(endpoint, "UserGrantRole", req, timeout)

    async def user_revoke_role(self, endpoint: str, user: str, role: str, *, timeout: float) -> None:
        req = auth_pb2.AuthUserRevokeRoleRequest(name=user, role=role)
        await self._auth(endpoint, "UserRevokeRole", req, timeout)

    async def role_add(self, endpoint: str, name: str, *, timeout: float) -> None:
        await self._auth(endpoint, "RoleAdd", auth_pb2.AuthRoleAddRequest(name=name), timeout)

    async def role_get(self, endpoint: str, name: str, *, timeout: float) -> tuple[Permission, ...]:
        req = auth_pb2.AuthRoleGetRequest(role=name)
        resp: auth_pb2.AuthRoleGetResponse = await self._auth(endpoint, "RoleGet", req, timeout)
        return tuple(permission_value(p, endpoint) for p in resp.perm)

    async def role_list(self, endpoint: str, *, timeout: float) -> tuple[str, ...]:
        resp: auth_pb2.AuthRoleListResponse = await self._auth(
            endpoint, "RoleList", auth_pb2.AuthRoleListRequest(), timeout
        )
        return tuple(resp.roles)

    async def role_delete(self, endpoint: str, name: str, *, timeout: float) -> None:
        await self._auth(endpoint, "RoleDelete", auth_pb2.AuthRoleDeleteRequest(role=name), timeout)

    async def role_grant_permission(
        self, endpoint: str, role: str, permission: Permission, *, timeout: float
    ) -> None:
        req = auth_pb2.AuthRoleGrantPermissionRequest(name=role, perm=permission_message(permission))
        await self._auth(endpoint, "RoleGrantPermission", req, timeout)

    async def role_revoke_permission(
        self, endpoint: str, role: str, key: bytes, range_end: bytes, *, timeout: float
    ) -> None:
        req = auth_pb2.AuthRoleRevokePermissionRequest(role=role, key=key, range_end=range_end)
        await self._auth(endpoint, "RoleRevokePermission", req, timeout)

    async def close(self) -> None:
        self._auth_stubs.clear()
        await self.pool.close()
