"""The Auth part of EtcdClient: our auth.proto against etcd's wire facts, the requests the client builds
and the answers it parses (through an in-process gRPC server on 127.0.0.1 speaking our stubs), the
fail-over rule per call, and the reasons etcd's auth errors map to.

Expected numbers are etcd's (api/etcdserverpb/rpc.proto, api/authpb/auth.proto), written out as facts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from etcdforge.errors import EtcdRequestError, EtcdUnavailable
from etcdforge.etcd import AuthStatus, EtcdClient, EtcdServerError, Permission
from etcdforge.etcd._gen import auth_pb2, auth_pb2_grpc
from etcdforge.etcd.failures import EtcdServerUnavailable, is_failover_error, map_status

EP = "https://127.0.0.1:2379"
AUTH = auth_pb2.DESCRIPTOR.services_by_name["Auth"]

# -- the wire contract ------------------------------------------------------------------------------

FIELDS: dict[str, dict[str, tuple[int, int]]] = {
    "Permission": {"permType": (1, F.TYPE_ENUM), "key": (2, F.TYPE_BYTES), "range_end": (3, F.TYPE_BYTES)},
    "UserAddOptions": {"no_password": (1, F.TYPE_BOOL)},
    "AuthenticateRequest": {"name": (1, F.TYPE_STRING), "password": (2, F.TYPE_STRING)},
    "AuthUserAddRequest": {
        "name": (1, F.TYPE_STRING),
        "password": (2, F.TYPE_STRING),
        "options": (3, F.TYPE_MESSAGE),
    },
    "AuthUserGetRequest": {"name": (1, F.TYPE_STRING)},
    "AuthUserGetResponse": {"header": (1, F.TYPE_MESSAGE), "roles": (2, F.TYPE_STRING)},
    "AuthUserListResponse": {"header": (1, F.TYPE_MESSAGE), "users": (2, F.TYPE_STRING)},
    "AuthUserDeleteRequest": {"name": (1, F.TYPE_STRING)},
    "AuthUserGrantRoleRequest": {"user": (1, F.TYPE_STRING), "role": (2, F.TYPE_STRING)},
    "AuthUserRevokeRoleRequest": {"name": (1, F.TYPE_STRING), "role": (2, F.TYPE_STRING)},
    "AuthRoleAddRequest": {"name": (1, F.TYPE_STRING)},
    "AuthRoleGetRequest": {"role": (1, F.TYPE_STRING)},
    "AuthRoleGetResponse": {"header": (1, F.TYPE_MESSAGE), "perm": (2, F.TYPE_MESSAGE)},
    "AuthRoleListResponse": {"header": (1, F.TYPE_MESSAGE), "roles": (2, F.TYPE_STRING)},
    "AuthRoleDeleteRequest": {"role": (1, F.TYPE_STRING)},
    "AuthRoleGrantPermissionRequest": {"name": (1, F.TYPE_STRING), "perm": (2, F.TYPE_MESSAGE)},
    "AuthRoleRevokePermissionRequest": {
        "role": (1, F.TYPE_STRING),
        "key": (2, F.TYPE_BYTES),
        "range_end": (3, F.TYPE_BYTES),
    },
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_field_numbers_and_types(name: str) -> None:
    desc = auth_pb2.DESCRIPTOR.message_types_by_name[name]
    got = {f.name: (f.number, f.type) for f in desc.fields}
    assert got == FIELDS[name], name


def test_permission_type_values() -> None:
    assert dict(auth_pb2.Permission.Type.items()) == {"READ": 0, "WRITE": 1, "READWRITE": 2}


def test_service_and_method_paths() -> None:
    assert AUTH.full_name == "etcdserverpb.Auth"
    assert sorted(m.name for m in AUTH.methods) == sorted(
        [
            "AuthEnable",
            "AuthDisable",
            "Authenticate",
            "UserAdd",
            "UserGet",
            "UserList",
            "UserDelete",
            "UserGrantRole",
            "UserRevokeRole",
            "RoleAdd",
            "RoleGet",
            "RoleList",
            "RoleDelete",
            "RoleGrantPermission",
            "RoleRevokePermission",
        ]
    )
    assert not any(m.client_streaming or m.server_streaming for m in AUTH.methods)
    # the paths the stub dials are /<package>.<service>/<method>, the ones etcd serves
    stub_source = Path(auth_pb2_grpc.__file__).read_text()
    for method in AUTH.methods:
        assert f"'/etcdserverpb.Auth/{method.name}'" in stub_source


def test_known_wire_bytes() -> None:
    # name=1 (0x0a); options=3 (0x1a) holding no_password=1 (0x08 0x01); the empty password is not sent.
    req = auth_pb2.AuthUserAddRequest(name="app", options=auth_pb2.UserAddOptions(no_password=True))
    assert req.SerializeToString() == b"\x0a\x03app\x1a\x02\x08\x01"
    # permType=1 (0x08) READWRITE=2, key=2 (0x12), range_end=3 (0x1a)
    perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"/a/", range_end=b"/a0")
    assert perm.SerializeToString() == b"\x08\x02\x12\x03/a/\x1a\x03/a0"


# -- values -----------------------------------------------------------------------------------------


def test_permission_values() -> None:
    assert Permission.prefix("readwrite", b"/app/") == Permission("readwrite", b"/app/", b"/app0")
    assert Permission("read", b"k").range_end == b""
    with pytest.raises(ValueError, match="read, write, readwrite"):
        Permission("admin", b"k")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Permission.prefix("read", b"")


# -- requests and answers, through a real gRPC server -----------------------------------------------

Reply = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _abort(code: grpc.StatusCode, text: str) -> Reply:
    async def reply(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, text)

    return reply


class FakeAuth(auth_pb2_grpc.AuthServicer):  # type: ignore[misc]
    """Records each request by method name; answers with ``replies[method]`` (a response, or a coroutine
    function of request and context) or else an empty response."""

    def __init__(self, replies: dict[str, Any] | None = None) -> None:
        self.replies = replies or {}
        self.calls: list[tuple[str, Any]] = []
        for method in AUTH.methods_by_name:
            setattr(self, method, self._handler(method))

    def _handler(self, method: str) -> Reply:
        output = AUTH.methods_by_name[method].output_type.name

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls.append((method, request))
            reply = self.replies.get(method)
            if callable(reply):
                return await reply(request, context)
            return reply if reply is not None else getattr(auth_pb2, output)()

        return handle


@asynccontextmanager
async def serving(servicer: FakeAuth) -> AsyncIterator[str]:
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop(None)


def run(servicer: FakeAuth, call: Callable[[EtcdClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with serving(servicer) as endpoint, EtcdClient([endpoint], None, timeout=5.0) as client:
            return await call(client)

    return asyncio.run(main())


def test_user_requests_and_answers() -> None:
    fake = FakeAuth(
        {
            "UserGet": auth_pb2.AuthUserGetResponse(roles=["app", "root"]),
            "UserList": auth_pb2.AuthUserListResponse(users=["admin", "app", "root"]),
        }
    )

    async def calls(c: EtcdClient) -> tuple[Any, ...]:
        await c.user_add("app")
        roles = await c.user_get("app")
        users = await c.user_list()
        await c.user_grant_role("app", "reader")
        await c.user_revoke_role("app", "reader")
        await c.user_delete("app")
        return roles, users

    assert run(fake, calls) == (("app", "root"), ("admin", "app", "root"))
    sent = dict(fake.calls)
    assert [m for m, _ in fake.calls] == [
        "UserAdd",
        "UserGet",
        "UserList",
        "UserGrantRole",
        "UserRevokeRole",
        "UserDelete",
    ]
    # Always a certificate-only user: no password, no_password set.
    assert sent["UserAdd"] == auth_pb2.AuthUserAddRequest(
        name="app", options=auth_pb2.UserAddOptions(no_password=True)
    )
    assert sent["UserGet"].name == "app" and sent["UserDelete"].name == "app"
    assert (sent["UserGrantRole"].user, sent["UserGrantRole"].role) == ("app", "reader")
    assert (sent["UserRevokeRole"].name, sent["UserRevokeRole"].role) == ("app", "reader")


def test_role_requests_and_answers() -> None:
    P = auth_pb2.Permission
    fake = FakeAuth(
        {
            "RoleGet": auth_pb2.AuthRoleGetResponse(
                perm=[
                    P(permType=P.READ, key=b"/a", range_end=b""),
                    P(permType=P.WRITE, key=b"/b/", range_end=b"/b0"),
                    P(permType=P.READWRITE, key=b"\x00", range_end=b"\x00"),
                ]
            ),
            "RoleList": auth_pb2.AuthRoleListResponse(roles=["app", "root"]),
        }
    )

    async def calls(c: EtcdClient) -> tuple[Any, ...]:
        await c.role_add("app")
        perms = await c.role_get("app")
        roles = await c.role_list()
        await c.role_grant_permission("app", Permission.prefix("readwrite", b"/app/"))
        await c.role_grant_permission("app", Permission("read", b"/cfg"))
        await c.role_revoke_permission("app", "/app/", "/app0")
        await c.role_delete("app")
        return perms, roles

    perms, roles = run(fake, calls)
    assert perms == (
        Permission("read", b"/a", b""),
        Permission("write", b"/b/", b"/b0"),
        Permission("readwrite", b"\x00", b"\x00"),
    )
    assert roles == ("app", "root")
    sent = fake.calls
    assert sent[0] == ("RoleAdd", auth_pb2.AuthRoleAddRequest(name="app"))
    assert sent[1] == ("RoleGet", auth_pb2.AuthRoleGetRequest(role="app"))
    assert sent[3] == (
        "RoleGrantPermission",
        auth_pb2.AuthRoleGrantPermissionRequest(
            name="app", perm=P(permType=P.READWRITE, key=b"/app/", range_end=b"/app0")
        ),
    )
    assert sent[4][1].perm == P(permType=P.READ, key=b"/cfg", range_end=b"")
    assert sent[5] == (
        "RoleRevokePermission",
        auth_pb2.AuthRoleRevokePermissionRequest(role="app", key=b"/app/", range_end=b"/app0"),
    )
    assert sent[6] == ("RoleDelete", auth_pb2.AuthRoleDeleteRequest(role="app"))


def test_an_unknown_permission_type_is_refused_not_guessed() -> None:
    newer = auth_pb2.Permission(permType=7, key=b"k")  # a type some later etcd might add
    fake = FakeAuth({"RoleGet": auth_pb2.AuthRoleGetResponse(perm=[newer])})
    with pytest.raises(EtcdRequestError, match="unknown permission type 7"):
        run(fake, lambda c: c.role_get("app"))


def test_auth_switch() -> None:
    fake = FakeAuth({})

    async def calls(c: EtcdClient) -> None:
        await c.auth_enable()
        await c.auth_disable()

    run(fake, calls)
    assert [m for m, _ in fake.calls] == ["AuthEnable", "AuthDisable"]


@pytest.mark.parametrize(
    ("code", "text", "enabled"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled", False),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password",
            True,
        ),
    ],
)
def test_status_asks_authenticate_never_the_raft_applied_auth_status(
    code: grpc.StatusCode, text: str, enabled: bool
) -> None:
    """An empty-name login is refused before raft in a way that tells whether auth is on (AuthStatus
    would go through raft on 3.5, where a 3.4 member of a mixed cluster panics applying it)."""
    fake = FakeAuth({"Authenticate": _abort(code, text)})
    assert run(fake, lambda c: c.auth_status()) == AuthStatus(enabled=enabled)
    assert [m for m, _ in fake.calls] == ["Authenticate"]
    assert fake.calls[0][1] == auth_pb2.AuthenticateRequest(name="", password="")


def test_status_never_guesses_from_an_accepted_login() -> None:
    fake = FakeAuth({})  # Authenticate answers OK: not what etcd does
    with pytest.raises(EtcdRequestError, match="accepted a login without a user name"):
        run(fake, lambda c: c.auth_status())


def test_status_passes_other_refusals_on() -> None:
    fake = FakeAuth(
        {"Authenticate": _abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests")}
    )
    with pytest.raises(EtcdServerError) as info:
        run(fake, lambda c: c.auth_status())
    assert info.value.reason == "too_many_requests"


def test_server_refusals_arrive_as_typed_errors() -> None:
    fake = FakeAuth(
        {
            "UserGet": _abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: user name not found"),
            "AuthEnable": _abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: root user does not exist"),
        }
    )
    with pytest.raises(EtcdServerError) as info:
        run(fake, lambda c: c.user_get("ghost"))
    assert info.value.reason == "user_not_found" and info.value.code == "FAILED_PRECONDITION"
    assert info.value.message.endswith(": etcdserver: user name not found")
    with pytest.raises(EtcdServerError) as info:
        run(fake, lambda c: c.auth_enable())
    assert info.value.reason == "root_user_not_exist" and "user 'root'" in str(info.value.hint)


# -- fail-over: repeatable calls move on, the others are sent once ----------------------------------

TIMED_OUT = _abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")
REPEATABLE = {
    "auth_enable": ("AuthEnable", lambda c: c.auth_enable()),
    "auth_disable": ("AuthDisable", lambda c: c.auth_disable()),
    "user_get": ("UserGet", lambda c: c.user_get("u")),
    "user_list": ("UserList", lambda c: c.user_list()),
    "user_grant_role": ("UserGrantRole", lambda c: c.user_grant_role("u", "r")),
    "role_get": ("RoleGet", lambda c: c.role_get("r")),
    "role_list": ("RoleList", lambda c: c.role_list()),
    "role_grant_permission": (
        "RoleGrantPermission",
        lambda c: c.role_grant_permission("r", Permission("read", b"k")),
    ),
}
ONCE = {
    "user_add": ("UserAdd", lambda c: c.user_add("u")),
    "user_delete": ("UserDelete", lambda c: c.user_delete("u")),
    "user_revoke_role": ("UserRevokeRole", lambda c: c.user_revoke_role("u", "r")),
    "role_add": ("RoleAdd", lambda c: c.role_add("r")),
    "role_delete": ("RoleDelete", lambda c: c.role_delete("r")),
    "role_revoke_permission": ("RoleRevokePermission", lambda c: c.role_revoke_permission("r", b"k")),
}


def _two_members(method: str, call: Callable[[EtcdClient], Awaitable[Any]]) -> tuple[FakeAuth, FakeAuth, Any]:
    slow, good = FakeAuth({method: TIMED_OUT}), FakeAuth()

    async def main() -> Any:
        async with serving(slow) as a, serving(good) as b, EtcdClient([a, b], None, timeout=5.0) as client:
            try:
                return await call(client)
            except EtcdUnavailable as exc:
                return exc

    return slow, good, asyncio.run(main())


@pytest.mark.parametrize("name", sorted(REPEATABLE))
def test_repeatable_calls_fail_over(name: str) -> None:
    method, call = REPEATABLE[name]
    slow, good, result = _two_members(method, call)
    assert not isinstance(result, Exception)
    assert [m for m, _ in slow.calls] == [method] and [m for m, _ in good.calls] == [method]


@pytest.mark.parametrize("name", sorted(ONCE))
def test_other_calls_are_never_resent(name: str) -> None:
    method, call = ONCE[name]
    slow, good, result = _two_members(method, call)
    assert isinstance(result, EtcdServerUnavailable) and result.reason == "request_timed_out"
    assert [m for m, _ in slow.calls] == [method] and good.calls == []


# -- reasons of etcd's auth answers (texts and codes of etcd's api/v3rpc/rpctypes) -----------------


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        ("FAILED_PRECONDITION", "etcdserver: user name not found", "user_not_found"),
        ("FAILED_PRECONDITION", "etcdserver: role name not found", "role_not_found"),
        ("FAILED_PRECONDITION", "etcdserver: user name already exists", "user_already_exists"),
        ("FAILED_PRECONDITION", "etcdserver: role name already exists", "role_already_exists"),
        ("INVALID_ARGUMENT", "etcdserver: user name is empty", "user_empty"),
        ("INVALID_ARGUMENT", "etcdserver: role name is empty", "role_empty"),
        ("PERMISSION_DENIED", "etcdserver: permission denied", "permission_denied"),
        ("FAILED_PRECONDITION", "etcdserver: root user does not exist", "root_user_not_exist"),
        ("FAILED_PRECONDITION", "etcdserver: root user does not have root role", "root_role_not_granted"),
        ("FAILED_PRECONDITION", "etcdserver: authentication is not enabled", "auth_not_enabled"),
        ("FAILED_PRECONDITION", "etcdserver: role is not granted to the user", "role_not_granted"),
        (
            "FAILED_PRECONDITION",
            "etcdserver: permission is not granted to the role",
            "permission_not_granted",
        ),
        ("INVALID_ARGUMENT", "etcdserver: invalid auth management", "invalid_auth_mgmt"),
        ("INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or password", "auth_failed"),
        ("INVALID_ARGUMENT", "etcdserver: revision of auth store is old", "auth_old_revision"),
        ("UNAUTHENTICATED", "etcdserver: invalid auth token", "invalid_auth_token"),
    ],
)
def test_auth_answers_have_stable_reasons(code: str, text: str, reason: str) -> None:
    err = map_status(code, text, endpoint=EP)
    assert type(err) is EtcdServerError
    assert err.reason == reason and err.code == code and err.message == f"{EP}: {text}"
    assert not is_failover_error(err)  # another member gives the same answer


def test_a_refused_kv_or_cluster_call_is_one_actionable_line() -> None:
    err = map_status("PERMISSION_DENIED", "etcdserver: permission denied", endpoint=EP)
    assert isinstance(err, EtcdServerError) and err.reason == "permission_denied"
    assert "\n" not in str(err) and "CN" in str(err.hint)
