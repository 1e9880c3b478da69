"""etcd's users, roles and auth switch as the admin certificate reads them (the observation the access
steps are planned from)."""

from __future__ import annotations

from typing import Protocol

from etcdforge.access import REVOKED_FILE, ROOT, AuthView, Revoked, parse_revoked
from etcdforge.errors import EtcdError
from etcdforge.etcd import AuthStatus, EtcdServerError, Member, Permission
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, admin_client


class AuthPort(Protocol):
    """What these actions ask of etcd (the admin client; a fake in unit tests)."""

    async def auth_status(self) -> AuthStatus: ...
    async def auth_enable(self) -> None: ...
    async def auth_disable(self) -> None: ...
    async def user_add(self, name: str) -> None: ...
    async def user_get(self, name: str) -> tuple[str, ...]: ...
    async def user_list(self) -> tuple[str, ...]: ...
    async def user_delete(self, name: str) -> None: ...
    async def user_grant_role(self, user: str, role: str) -> None: ...
    async def user_revoke_role(self, user: str, role: str) -> None: ...
    async def role_add(self, name: str) -> None: ...
    async def role_get(self, name: str) -> tuple[Permission, ...]: ...
    async def role_list(self) -> tuple[str, ...]: ...
    async def role_delete(self, name: str) -> None: ...
    async def role_grant_permission(self, role: str, permission: Permission) -> None: ...
    async def role_revoke_permission(self, role: str, key: bytes, range_end: bytes) -> None: ...
    async def member_list(
        self, linearizable: bool = True, *, endpoint: str | None = None
    ) -> tuple[Member, ...]: ...


async def observe_auth(client: AuthPort) -> AuthView:
    """Whether auth is on, every user's roles and every role's permissions (root's are implicit)."""
    status = await client.auth_status()
    users = {name: tuple(sorted(await _roles_of(client, name))) for name in await client.user_list()}
    roles = {
        name: tuple(await _permissions_of(client, name)) for name in await client.role_list() if name != ROOT
    }
    return AuthView(enabled=status.enabled, users=users, roles=roles)


async def read_auth(spec: ClusterSpec, ws: Workspace, *, timeout: float = 3.0) -> AuthView | None:
    """The cluster's auth state, or None when it does not answer (it is started later by the plan)."""
    from pathlib import Path

    if not Path(ws.client_paths().cert).is_file():
        return None
    try:
        async with admin_client(spec, ws, timeout=timeout) as client:
            return await observe_auth(client)
    except EtcdError:
        return None


async def _roles_of(client: AuthPort, user: str) -> tuple[str, ...]:
    try:
        return await client.user_get(user)
    except EtcdServerError as exc:
        if exc.reason == "user_not_found":  # deleted between the list and the read
            return ()
        raise


async def _permissions_of(client: AuthPort, role: str) -> tuple[Permission, ...]:
    try:
        return await client.role_get(role)
    except EtcdServerError as exc:
        if exc.reason == "role_not_found":
            return ()
        raise


def read_revoked(ws: Workspace) -> list[Revoked]:
    """The workspace's record of revoked client certificates (``pki/revoked.json``; none: empty)."""
    path = ws.pki_dir / REVOKED_FILE
    return parse_revoked(path.read_text() if path.is_file() else None)
