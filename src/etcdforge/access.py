"""Pure mapping from a spec to etcd's users and roles, and the steps that make a cluster match it.

With ``--client-cert-auth`` and auth on, etcd takes a client certificate's CN as the user name
(etcd-facts §1). So every client certificate the spec issues gets an etcd user of the same name and no
password: ``admin`` (etcdforge's own) and the members' backup client hold etcd's ``root`` role, an
application listed under ``clients:`` holds a role of its own name with its key ranges (or ``root``).
The spec is the truth: a role edited by hand is repaired, a user or role the spec does not name is
deleted (never ``root``), and auth is turned on or off as ``auth.enabled`` says — on last, once every
user that must keep working is in place; off first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from etcdforge import topology
from etcdforge.certs import BACKUP_CLIENT, client_names
from etcdforge.errors import PlanError
from etcdforge.etcd import Permission
from etcdforge.plan import (
    DeleteRole,
    DeleteUser,
    EnsureRole,
    EnsureUser,
    SetAuth,
    Step,
    permission_text,
)
from etcdforge.spec import ClientSpec, ClusterSpec

#: the workspace's record of revoked client certificates (pki/revoked.json)
REVOKED_FILE = "revoked.json"


@dataclass(frozen=True)
class Revoked:
    name: str
    serial: str  # hex, as openssl and cfssl print it
    not_after: str
    revoked_at: str

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "serial": self.serial,
            "not_after": self.not_after,
            "revoked_at": self.revoked_at,
        }


def parse_revoked(text: str | None) -> list[Revoked]:
    if not text:
        return []
    try:
        data = json.loads(text)
        return [Revoked(e["name"], e["serial"], e["not_after"], e["revoked_at"]) for e in data["revoked"]]
    except (ValueError, KeyError, TypeError):
        raise PlanError("pki/revoked.json is not etcdforge's record of revoked certificates") from None


def dump_revoked(entries: Sequence[Revoked]) -> bytes:
    return (json.dumps({"revoked": [e.to_json() for e in entries]}, indent=2) + "\n").encode()


def revoked_names(entries: Sequence[Revoked], now: datetime) -> frozenset[str]:
    """Names whose revoked certificate is still within its validity: an etcd user of that name would
    make it work again (etcd checks the CN, not the serial)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frozenset(r.name for r in entries if not r.not_after or r.not_after > stamp)


#: etcd's administrator user and role (the role is built in; the user must exist before auth is on)
ROOT = "root"
HOST = "cluster"


@dataclass(frozen=True)
class AuthView:
    """What etcd holds: whether auth is on, each user's roles, each role's permissions (root's are
    implicit: etcd lists none)."""

    enabled: bool
    users: Mapping[str, tuple[str, ...]]
    roles: Mapping[str, tuple[Permission, ...]]


EMPTY = AuthView(enabled=False, users={}, roles={})


@dataclass(frozen=True)
class Wanted:
    users: dict[str, tuple[str, ...]]
    roles: dict[str, tuple[Permission, ...]]


def manages_auth(spec: ClusterSpec) -> bool:
    """Whether etcdforge manages users and roles for this spec (auth on, or clients with rules): a spec
    with neither leaves etcd's auth alone, and its verbs never read it."""
    return spec.auth.enabled is not None or bool(spec.clients)


def permissions(client: ClientSpec) -> tuple[Permission, ...]:
    out = {Permission.prefix(a.mode, a.prefix.encode()) for a in client.access}
    return tuple(sorted(out, key=permission_order))


def permission_order(p: Permission) -> tuple[bytes, bytes, str]:
    return (p.key, p.range_end, p.kind)


def admins(spec: ClusterSpec) -> tuple[str, ...]:
    """etcdforge's own certificates, which must hold root for every verb to keep working with auth on."""
    own = [topology.ADMIN_CLIENT]
    if BACKUP_CLIENT in client_names(spec):
        own.append(BACKUP_CLIENT)
    return tuple(own)


def wanted(spec: ClusterSpec) -> Wanted:
    users: dict[str, tuple[str, ...]] = {ROOT: (ROOT,)}
    users.update({name: (ROOT,) for name in admins(spec)})
    roles: dict[str, tuple[Permission, ...]] = {}
    for client in spec.clients:
        if client.root:
            users[client.name] = (ROOT,)
        else:
            users[client.name] = (client.name,)
            roles[client.name] = permissions(client)
    return Wanted(users=users, roles=roles)


def without_access(spec: ClusterSpec) -> tuple[str, ...]:
    """Client certificates the spec issues that get no etcd user: refused everything once auth is on."""
    users = wanted(spec).users
    return tuple(name for name in client_names(spec) if name not in users)


def refuse_revoked(spec: ClusterSpec, revoked: frozenset[str]) -> None:
    """A client named like a revoked certificate still valid: its user would let that certificate in."""
    again = [c.name for c in spec.clients if c.name in revoked]
    if again:
        raise PlanError(
            f"client(s) {', '.join(again)} were revoked and their old certificates are still valid: an "
            "etcd user of that name would let them in again; nothing was changed",
            hint="give the client another name (or rotate the CA, which makes the old certificates void)",
        )


def access_steps(
    spec: ClusterSpec, view: AuthView | None, revoked: frozenset[str] = frozenset()
) -> tuple[list[Step], list[str]]:
    """Steps that make etcd's users, roles and auth switch match ``spec``, and warnings for the plan.

    ``view`` None: the cluster could not be read when planning (it is started by the same plan): every
    user and role gets an ensure step (each is a no-op at run time when etcd already matches).
    """
    if not manages_auth(spec):  # e.g. an adopted cluster with its own users: left alone
        return [], []
    refuse_revoked(spec, revoked)
    want = wanted(spec)
    steps: list[Step] = []
    warnings: list[str] = []
    enabled = view.enabled if view is not None else None
    if enabled is not False and not spec.auth.on:  # unread (None): make sure, a no-op when off
        why = (
            "ensure: auth is off in the spec"
            if enabled is None
            else "auth is off in the spec: every certificate the CA signed gets full access again"
        )
        steps.append(Step("auth/disable", HOST, SetAuth(enabled=False), why))
        if enabled:
            warnings.append("turning auth off: every client certificate signed by the CA gets full access")
    have_roles = view.roles if view is not None else {}
    have_users = view.users if view is not None else {}
    for role, perms in want.roles.items():
        if view is not None and role in have_roles and set(have_roles[role]) == set(perms):
            continue
        if view is None:
            why = "ensure: " + ", ".join(map(permission_text, perms))
        elif role not in have_roles:
            why = "new: " + ", ".join(map(permission_text, perms))
        else:
            why = "edited outside the spec: " + _change(have_roles[role], perms)
        steps.append(Step(f"auth/role:{role}", HOST, EnsureRole(role, perms), why))
    for user, roles in want.users.items():
        if view is not None and user in have_users and set(have_users[user]) == set(roles):
            continue
        if view is None:
            why = f"ensure: role {', '.join(roles)}"
        elif user not in have_users:
            why = f"new user (certificate CN {user}), role {', '.join(roles)}"
        else:
            why = f"roles {', '.join(have_users[user]) or '(none)'} → {', '.join(roles)}"
        steps.append(Step(f"auth/user:{user}", HOST, EnsureUser(user, roles), why))
    for user in sorted(set(have_users) - set(want.users)):
        steps.append(
            Step(
                f"auth/delete-user:{user}",
                HOST,
                DeleteUser(user),
                "not in the spec: its certificate loses access",
            )
        )
    for role in sorted(set(have_roles) - set(want.roles) - {ROOT}):
        steps.append(Step(f"auth/delete-role:{role}", HOST, DeleteRole(role), "not in the spec"))
    if spec.auth.on and not enabled:
        lost = without_access(spec)
        steps.append(
            Step(
                "auth/enable",
                HOST,
                SetAuth(enabled=True, admins=admins(spec)),
                "auth.enabled: each certificate may use only what its user's roles allow",
            )
        )
        if lost:
            warnings.append(
                f"with auth on, certificate(s) {', '.join(lost)} (pki.clients, no access rules) are refused "
                "everything: give them clients: entries"
            )
        warnings.append(
            "with auth on, any other certificate signed by this CA (a member's certificate used with "
            "etcdctl, an imported cfssl client) is refused unless an etcd user has its CN"
        )
    return steps, warnings


def _change(have: tuple[Permission, ...], want: tuple[Permission, ...]) -> str:
    added = [permission_text(p) for p in want if p not in have]
    dropped = [permission_text(p) for p in have if p not in want]
    parts = [f"+{a}" for a in added] + [f"-{d}" for d in dropped]
    return ", ".join(parts)
