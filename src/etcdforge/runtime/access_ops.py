"""etcd users, roles and the auth switch, through the admin client. Each action re-reads what etcd
holds and changes only the difference, so a re-run after a kill converges."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from etcdforge.access import ROOT, permission_order
from etcdforge.errors import PlanError
from etcdforge.etcd import EtcdServerError
from etcdforge.observe.auth import AuthPort
from etcdforge.plan import DeleteRole, DeleteUser, EnsureRole, EnsureUser, SetAuth, permission_text

AccessAction = EnsureRole | EnsureUser | DeleteUser | DeleteRole | SetAuth
ACCESS_ACTIONS = (EnsureRole, EnsureUser, DeleteUser, DeleteRole, SetAuth)


async def perform(client: AuthPort, action: AccessAction) -> str:
    if isinstance(action, EnsureRole):
        return await _ensure_role(client, action)
    if isinstance(action, EnsureUser):
        return await _ensure_user(client, action)
    if isinstance(action, DeleteUser):
        return await _delete(client.user_delete, action.name, "user_not_found")
    if isinstance(action, DeleteRole):
        return await _delete(client.role_delete, action.name, "role_not_found")
    return await _set_auth(client, action)


async def _ensure_role(client: AuthPort, action: EnsureRole) -> str:
    try:
        have = set(await client.role_get(action.name))
        created = False
    except EtcdServerError as exc:
        if exc.reason != "role_not_found":
            raise
        await client.role_add(action.name)
        have, created = set(), True
    want = set(action.permissions)
    # a key range holds one permission kind in etcd: granting a new kind replaces the old one, so
    # revoke only ranges that are not wanted at all
    wanted_ranges = {(p.key, p.range_end) for p in want}
    revoked = [p for p in have if (p.key, p.range_end) not in wanted_ranges]
    for p in revoked:
        try:
            await client.role_revoke_permission(action.name, p.key, p.range_end)
        except EtcdServerError as exc:
            if exc.reason != "permission_not_granted":
                raise
    granted = [p for p in want if p not in have]
    for p in granted:
        await client.role_grant_permission(action.name, p)
    if created:
        return "created: " + ", ".join(map(permission_text, sorted(want, key=permission_order)))
    if not granted and not revoked:
        return "already as wanted"
    changes = [f"+{permission_text(p)}" for p in granted] + [f"-{permission_text(p)}" for p in revoked]
    return "repaired: " + ", ".join(changes)


async def _ensure_user(client: AuthPort, action: EnsureUser) -> str:
    try:
        have = set(await client.user_get(action.name))
        created = False
    except EtcdServerError as exc:
        if exc.reason != "user_not_found":
            raise
        await client.user_add(action.name)
        have, created = set(), True
    want = set(action.roles)
    for role in sorted(want - have):
        await client.user_grant_role(action.name, role)
    for role in sorted(have - want):
        try:
            await client.user_revoke_role(action.name, role)
        except EtcdServerError as exc:
            if exc.reason != "role_not_granted":
                raise
    if created:
        return f"created (no password: certificate CN), role {', '.join(sorted(want))}"
    if want == have:
        return "already as wanted"
    return f"roles {', '.join(sorted(have)) or '(none)'} → {', '.join(sorted(want))}"


async def _delete(call: Callable[[str], Awaitable[object]], name: str, missing: str) -> str:
    try:
        await call(name)
    except EtcdServerError as exc:
        if exc.reason == missing:
            return "already gone"
        raise
    return "deleted"


async def _set_auth(client: AuthPort, action: SetAuth) -> str:
    status = await client.auth_status()
    if status.enabled == action.enabled:
        return f"already {'on' if action.enabled else 'off'}"
    if not action.enabled:
        await client.auth_disable()
        return "off"
    # never lock etcdforge out: its own certificates' users must hold root before auth goes on
    for user in (ROOT, *action.admins):
        try:
            roles = await client.user_get(user)
        except EtcdServerError as exc:
            if exc.reason != "user_not_found":
                raise
            roles = ()
        if ROOT not in roles:
            raise PlanError(
                f"etcd user {user} does not hold the root role: turning auth on would lock etcdforge out",
                hint="re-run the command: the plan creates the user first",
            )
    await client.auth_enable()
    await client.member_list()  # the admin certificate still works (as root, through its CN)
    return "on: each certificate is its CN's user"
